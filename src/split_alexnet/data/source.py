"""Where 256×256 images come from: the raw ImageNet-layout folder, or the uint8 cache.

Both answer the same questions (classes, labels, the image of sample i), so the
loader and the statistics never ask which one they read.

The cache (written by `split_alexnet.data.preprocess`) is one directory:

    cache.json            format marker and the raw root it came from
    <split>.json          classes, files (relative to root/<split>), labels, the files
                          the index skipped (not images by name, folder loops), the
                          classes' human names (from the ILSVRC devkit; [] for class
                          folders) and which set it is ("ILSVRC-2012 validation", or
                          "folder"); from tarballs also where each file lies in them
    <split>.u8            uint8 (N, 3, 256, 256), C-contiguous, read as a numpy memmap
    <split>.status        uint8 (N,): 0 not yet written, 1 written, 2 unreadable source file
    <split>.unreadable    every skipped file of the split, one JSON object a line:
                          {"file": relative path, "reason": ..., "detail": ...}

Version 2: EXIF orientation applied, 16-bit and animated images made 8-bit stills,
the index's skips recorded; the preprocessing command rewrites a version 1 cache.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from split_alexnet.data.folder import (
    FOLDER_SET,
    SIZE,
    DataError,
    SplitIndex,
    index_split,
    shown,
    warn_once,
)

log = logging.getLogger(__name__)

CACHE_FORMAT = "split_alexnet uint8 (N,3,256,256) memmap"
CACHE_VERSION = 2
PENDING, WRITTEN, UNREADABLE = 0, 1, 2
IMAGE_BYTES = 3 * SIZE * SIZE


def is_cache(path: Path) -> bool:
    return (Path(path) / "cache.json").is_file()


class FolderSource:
    """Decodes root/<split>/<class>/<file> on every read (the on-the-fly path)."""

    may_fail = True  # a file is found unreadable only when it is read

    def __init__(self, root: Path, split: str) -> None:
        self.root, self.split = Path(root), split
        self.index: SplitIndex = index_split(self.root, split)
        self.classes = self.index.classes
        self.labels = self.index.labels
        self.files = self.index.files
        self.empty_classes = self.index.empty_classes
        self.names, self.set_name = self.index.names, self.index.set_name
        self.unreadable: tuple[str, ...] = ()  # found while reading, by the loader

    def __len__(self) -> int:
        return len(self.files)

    def image(self, i: int):
        """uint8 (3, 256, 256); raises `UnreadableImage`."""
        return self.index.image(i)

    def stats_dir(self) -> Path:
        return self.root


class CacheSource:
    """Reads the preprocessed cache; unreadable source files were dropped when it was written."""

    may_fail = False

    def __init__(self, cache: Path, split: str) -> None:
        self.cache, self.split = Path(cache), split
        manifest_path = self.cache / f"{split}.json"
        if not manifest_path.is_file():
            raise DataError(f"cache {self.cache} has no split {split!r} ({manifest_path} missing)")
        manifest = json.loads(manifest_path.read_text())
        status = np.fromfile(self.cache / f"{split}.status", dtype=np.uint8)
        pending = int((status == PENDING).sum())
        if pending:
            raise DataError(
                f"cache {self.cache}/{split} is incomplete ({pending} of {len(status)} images "
                "not written): run split-alexnet-preprocess again to finish it"
            )
        self.classes = tuple(manifest["classes"])
        self.empty_classes = tuple(manifest["empty_classes"])
        self.names = tuple(manifest.get("names", ()))  # caches before the tarballs lack both
        self.set_name = manifest.get("set", FOLDER_SET)
        self.rows = np.flatnonzero(status == WRITTEN)
        all_files = manifest["files"]
        self.files = tuple(all_files[r] for r in self.rows)
        self.labels = np.asarray(manifest["labels"], dtype=np.int64)[self.rows]
        self.unreadable = tuple(all_files[r] for r in np.flatnonzero(status == UNREADABLE))
        skipped = len(self.unreadable) + len(manifest.get("skipped", ()))
        if skipped:  # each was named in a log line of the run that wrote the cache
            warn_once(
                log, ("cache skipped", str(self.cache), split),
                "%s/%s: %d source files were skipped when the cache was written (listed in %s)",
                self.cache, split, skipped, self.cache / f"{split}.unreadable",
            )  # fmt: skip
        if self.empty_classes:
            warn_once(
                log, ("cache empty", str(self.cache), split),
                "%s/%s: class folders with no images: %s",
                self.cache, split, ", ".join(map(shown, self.empty_classes)),
            )  # fmt: skip
        if len(self.rows) == 0:
            raise DataError(f"cache {self.cache}/{split} holds no readable images")
        self._count = len(status)
        self._array: np.memmap | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def array(self) -> np.memmap:
        if self._array is None:  # opened lazily so the source pickles into loader workers
            self._array = np.memmap(
                self.cache / f"{self.split}.u8",
                dtype=np.uint8,
                mode="r",
                shape=(self._count, 3, SIZE, SIZE),
            )
        return self._array

    def __getstate__(self):
        return {**self.__dict__, "_array": None}

    def image(self, i: int) -> np.ndarray:
        """uint8 (3, 256, 256), a view into the memmap (no copy)."""
        return self.array[self.rows[i]]

    def stats_dir(self) -> Path:
        return self.cache


def open_source(source: Path, split: str) -> FolderSource | CacheSource:
    """A cache directory (it holds cache.json) or a raw ImageNet-layout root."""
    source = Path(source)
    if is_cache(source):
        return CacheSource(source, split)
    return FolderSource(source, split)
