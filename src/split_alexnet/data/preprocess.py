"""One-off: write root's 256×256 images to a uint8 cache, then the mean image and PCA.

    split-alexnet-preprocess ROOT [--cache DIR] [--workers N] [--stats-subset N]
    python -m split_alexnet.data.preprocess ROOT

ROOT holds either class folders (train/<class>/*, val/<class>/*) or ILSVRC-2012 as
downloaded: ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar and
ILSVRC2012_devkit_t12.tar.gz, read without extracting them (the tarballs win
where both are there). Images are decoded by --workers processes, by default
one per core this process may use.

Resumable: rows are committed in chunks (image bytes flushed before their
status byte), so an interrupted run continues where it stopped. A file that
cannot be used is skipped with one log line naming it and why; the command
ends with the skipped files counted by reason.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from split_alexnet.data.devkit import DEVKIT, read_devkit
from split_alexnet.data.folder import (
    SIZE,
    DataError,
    SplitIndex,
    UnreadableImage,
    index_split,
    report_skip,
)
from split_alexnet.data.source import (
    CACHE_FORMAT,
    CACHE_VERSION,
    PENDING,
    UNREADABLE,
    WRITTEN,
    CacheSource,
)  # fmt: skip
from split_alexnet.data.stats import DatasetStats, dataset_stats
from split_alexnet.data.tarball import index_tarball, tarballs

log = logging.getLogger(__name__)

CHUNK = 64  # images per commit
# Manifest entries that say which image each row holds: when they change, the rows go.
ROW_KEYS = ("classes", "files", "labels", "offsets", "sizes")


def default_cache(root: Path) -> Path:
    return Path(root) / "cache-256"


def default_workers() -> int:
    """The cores this process may run on (a SLURM job's or taskset's share, not the machine's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class _Rows(Dataset):
    def __init__(self, index: SplitIndex, rows: np.ndarray) -> None:
        self.index, self.rows = index, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k: int):
        row = int(self.rows[k])
        try:
            return row, self.index.image(row), None
        except UnreadableImage as error:
            return row, None, error


def _collate(items):
    return items


def _skip_line(file: str, reason: str, detail: str) -> str:
    return json.dumps({"file": file, "reason": reason, "detail": detail}) + "\n"


def read_manifest(cache: Path, split: str) -> dict | None:
    """cache/<split>.json, or None where there is none yet."""
    try:
        return json.loads((Path(cache) / f"{split}.json").read_text())
    except FileNotFoundError:
        return None


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_split(
    root: Path,
    cache: Path,
    split: str,
    workers: int | None = None,
    index: SplitIndex | None = None,
    rewrite: bool = False,
) -> int:
    """Write root/<split> into cache/<split>.*; returns the number of unreadable files.

    workers: decoding processes (None: one per core; 0: this process decodes).
    """
    index = index_split(root, split) if index is None else index
    manifest = index.manifest()
    manifest_path = cache / f"{split}.json"
    status_path, data_path = cache / f"{split}.status", cache / f"{split}.u8"
    list_path = cache / f"{split}.unreadable"
    n = len(index)
    old = read_manifest(cache, split)
    fresh = rewrite or not (old is not None and status_path.is_file() and data_path.is_file())
    if not fresh and any(old.get(key) != manifest.get(key) for key in ROW_KEYS):
        log.warning("%s: the source changed since the cache was started; rewriting", split)
        fresh = True
    if fresh:
        status_path.unlink(missing_ok=True)
        for stale in cache.glob(f"stats-{split}-*"):
            stale.unlink()
        np.memmap(data_path, dtype=np.uint8, mode="w+", shape=(n, 3, SIZE, SIZE)).flush()
        np.zeros(n, dtype=np.uint8).tofile(status_path)
        list_path.write_text("".join(_skip_line(*skip) for skip in index.skipped))
    if fresh or old != manifest:  # a resumed cache learns the class names and the set too
        _write_atomically(manifest_path, json.dumps(manifest) + "\n")
    data = np.memmap(data_path, dtype=np.uint8, mode="r+", shape=(n, 3, SIZE, SIZE))
    status = np.memmap(status_path, dtype=np.uint8, mode="r+", shape=(n,))
    todo = np.flatnonzero(status == PENDING)
    workers = default_workers() if workers is None else workers
    if min(workers, math.ceil(len(todo) / CHUNK)) <= 1:
        workers = 0  # one worker process would only add its start-up to this one's decoding
    loader = DataLoader(
        _Rows(index, todo), batch_size=CHUNK, num_workers=workers, collate_fn=_collate
    )
    bar = tqdm(total=n, initial=n - len(todo), desc=f"cache {split}", unit="img")
    with bar, open(list_path, "a") as unreadable:
        for chunk in loader:
            for row, image, error in chunk:
                if error is None:
                    data[row] = image.numpy()
            data.flush()  # the image bytes reach the file before their status says so
            for row, _, error in chunk:
                status[row] = WRITTEN if error is None else UNREADABLE
                if error is not None:
                    report_skip(error.path, error.why)
                    unreadable.write(_skip_line(index.files[row], error.reason, error.detail))
            unreadable.flush()
            status.flush()
            bar.update(len(chunk))
    return int((status == UNREADABLE).sum())


def skipped_files(cache: Path, split: str) -> dict[str, tuple[str, str]]:
    """file → (reason, detail) for every file of the split the cache left out."""
    path = Path(cache) / f"{split}.unreadable"
    skipped = {}
    # A run stopped between these lines and its status bytes lists a file twice.
    for line in path.read_text().splitlines() if path.is_file() else ():
        item = json.loads(line)
        skipped[item["file"]] = (item["reason"], item["detail"])
    return skipped


def skip_summary(cache: Path, splits: tuple[str, ...] = ("train", "val")) -> str:
    """The command's closing lines: the skipped files counted by split and reason."""
    rows = []
    for split in splits:
        counts = Counter(reason for reason, _ in skipped_files(cache, split).values())
        rows += [(split, n, why) for why, n in sorted(counts.items(), key=lambda c: (-c[1], c[0]))]
    if not rows:
        return "skipped: no files"
    total = sum(n for _, n, _ in rows)
    files = "file" if total == 1 else "files"
    lines = [f"skipped {total} {files}, by reason (each listed in {cache}/<split>.unreadable):"]
    return "\n".join(lines + [f"  {split:<6}{n:>7}  {why}" for split, n, why in rows])


def index_splits(root: Path, splits: tuple[str, ...], cache: Path) -> dict[str, SplitIndex]:
    """The index of every split of `splits` that root holds, as tarballs or as class folders.

    Every split is indexed before anything is written: a val class that train
    lacks must stop the command before it spends hours on train, not after.
    """
    found = tarballs(root)
    if not found:
        indexes = {"train": index_split(root, "train")}
        for split in splits:
            if split != "train" and (root / split).is_dir():
                indexes[split] = index_split(root, split)
        return indexes
    if "train" not in found:
        raise DataError(f"{root} holds {found['val'].name} but no training set tarball")
    devkit = read_devkit(root / DEVKIT)
    log.info("reading the ILSVRC-2012 tarballs in %s", root)
    return {
        split: index_tarball(tar, split, devkit, root / DEVKIT, read_manifest(cache, split))
        for split, tar in found.items()
        if split in splits
    }


def preprocess(
    root: Path,
    cache: Path | None = None,
    splits: tuple[str, ...] = ("train", "val"),
    workers: int | None = None,
    stats_subset: int | None = None,
    stats_seed: int = 0,
) -> tuple[Path, DatasetStats]:
    """Cache every split present under root (train is required) and the train statistics.

    workers: decoding processes (None: one per core; 0: this process decodes).
    """
    root = Path(root)
    cache = default_cache(root) if cache is None else Path(cache)
    indexes = index_splits(root, splits, cache)
    cache.mkdir(parents=True, exist_ok=True)
    marker_path = cache / "cache.json"
    old = json.loads(marker_path.read_text()).get("version") if marker_path.is_file() else None
    rewrite = old not in (None, CACHE_VERSION)
    if rewrite:
        log.warning("%s holds cache format version %s; rewriting as %s", cache, old, CACHE_VERSION)
    marker = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "root": str(root.resolve())}
    marker_path.write_text(json.dumps(marker, indent=2) + "\n")
    for split in splits:
        if split not in indexes:
            log.warning("no %s split under %s; not cached", split, root)
            continue
        write_split(root, cache, split, workers, indexes[split], rewrite)
        CacheSource(cache, split)  # reports skips and empty classes, checks completeness
    return cache, dataset_stats(cache, subset=stats_subset, seed=stats_seed)


def main(argv: list[str] | None = None) -> int:
    # argparse for now: the project's user commands go under Hydra once conf/ has a data group.
    parser = argparse.ArgumentParser(
        prog="split-alexnet-preprocess", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "root", type=Path,
        help="a folder of train/ and val/ class folders, or of the ILSVRC-2012 tarballs and devkit",
    )  # fmt: skip
    parser.add_argument("--cache", type=Path, default=None, help="default: ROOT/cache-256")
    parser.add_argument(
        "--workers", type=int, default=None,
        help=f"decoding processes (default: one per core, here {default_workers()})",
    )  # fmt: skip
    parser.add_argument(
        "--stats-subset", type=int, default=None, help="images for the mean/PCA (default: all)"
    )
    parser.add_argument("--stats-seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        cache, stats = preprocess(
            args.root,
            args.cache,
            workers=args.workers,
            stats_subset=args.stats_subset,
            stats_seed=args.stats_seed,
        )
    except DataError as error:
        print(f"split-alexnet-preprocess: error: {error}", file=sys.stderr)
        return 2
    print(f"cache: {cache}  (mean/PCA over {stats.how.get('images')} train images)")
    print(skip_summary(cache))
    return 0


if __name__ == "__main__":
    sys.exit(main())
