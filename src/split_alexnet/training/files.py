"""Checkpoint files: written atomically, read as data only, the newest K kept.

A checkpoint is plain data (tensors, numbers, strings, lists, dicts) and is
read with `torch.load(weights_only=True)`, so opening one never runs code
(issue "Training and evaluation as users run them", item 6). What goes into a
checkpoint is the training loop's business; this module only makes sure a
file is either the complete old one or the complete new one, and that a bad
file is a one-line error naming it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file."""


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk (POSIX).
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _replacing(path: Path, mode: str) -> Iterator[IO[Any]]:
    """A file that replaces `path` when the block ends, or leaves it intact if anything fails.

    Written to a hidden temp file in the same directory (same file system, so
    the rename is atomic), fsynced, renamed over `path`, and the directory
    fsynced. On an exception the temp file is removed; a process killed
    mid-write leaves a `.<name>.*.tmp` file that `prune` patterns never match
    and `discard_partial` removes at the next start.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """`torch.save(obj)` to `path` so that a crash at any point leaves the old file intact."""
    with _replacing(Path(path), "wb") as f:
        torch.save(obj, f)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Replace `path`'s text as `atomic_save` replaces a checkpoint: all or nothing."""
    with _replacing(Path(path), "w") as f:
        f.write(text)


def _reason(error: BaseException) -> str:
    if isinstance(error, FileNotFoundError):
        return "no such file"
    if isinstance(error, IsADirectoryError):
        return "is a directory"
    text = str(error).strip()
    if "Weights only load failed" in text:
        return "it holds objects other than plain data (refused by weights_only loading)"
    detail = f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
    return f"truncated, damaged or not a torch checkpoint ({detail})"


def load_checkpoint(path: str | os.PathLike[str], *, what: str) -> Any:
    """The data in `path`, loaded on the CPU with weights_only=True.

    `what` names the file's role in the message ("half 0 checkpoint", "run
    state"). Any failure raises CheckpointError: "cannot load <what> <path>: <reason>".
    """
    try:
        with warnings.catch_warnings():
            # A foreign pickle makes torch warn about its protocol before failing.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"cannot load {what} {path}: {_reason(error)}") from error


def check_compatible(
    meta: dict[str, Any], expected: dict[str, Any], path: str | os.PathLike[str]
) -> None:
    """Raise CheckpointError unless `meta` agrees with `expected` on every key of `expected`."""
    for key, want in expected.items():
        if key not in meta:
            raise CheckpointError(f"checkpoint {path} does not record {key!r} (expected {want!r})")
        if meta[key] != want:
            raise CheckpointError(
                f"checkpoint {path} was written with {key}={meta[key]!r}, "
                f"this run has {key}={want!r}"
            )


def numbered(directory: str | os.PathLike[str], pattern: str) -> list[tuple[int, Path]]:
    """(number, path) of the files in `directory` matching `pattern`, oldest first.

    `pattern` is a file name with one "*" standing for the step or epoch
    number, e.g. "half0-epoch*.pt"; names whose "*" part is not a number are
    ignored. Order is by that number, never by mtime (a copied run keeps its order).
    """
    if pattern.count("*") != 1:
        raise ValueError(f"pattern {pattern!r} must hold exactly one '*' for the number")
    head, tail = (re.escape(part) for part in pattern.split("*"))
    regex = re.compile(f"{head}([0-9]+){tail}")
    found = []
    for entry in Path(directory).iterdir():
        match = regex.fullmatch(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def prune(directory: str | os.PathLike[str], pattern: str, keep: int) -> list[Path]:
    """Delete all but the `keep` highest-numbered files matching `pattern`; return the deleted."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1 (never delete the last checkpoint), got {keep}")
    doomed = [path for _, path in numbered(directory, pattern)[:-keep]]
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed


def digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes: what the run file records of each half it completes."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            sha.update(chunk)
    return sha.hexdigest()


def discard_partial(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete the temp files of writes a killed process never finished; return them.

    Only call it while no process of the run is saving (at start-up): the
    temp file of a write in progress looks the same.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    partial = [p for p in directory.glob(".*.tmp") if p.is_file()]
    for path in partial:
        path.unlink(missing_ok=True)
    return partial
