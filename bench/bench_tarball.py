"""Caching ILSVRC-2012-shaped tarballs against their extracted class folders.

    .venv/bin/python bench/bench_tarball.py [--work DIR] [--images 512]

Writes --images 500×375 JPEGs (bench_data's) as class folders and as a train
tar of class tars, then times listing the tar and caching the split from each,
in this process (--workers 0) and on every core, and checks that all four
caches are byte-identical. The devkit is stood in by its parsed form.
"""

from __future__ import annotations

import argparse
import shutil
import tarfile
import time
from pathlib import Path

import numpy as np

from bench_data import raw_jpegs
from split_alexnet.data import build_embedded_dataset, index_split
from split_alexnet.data.devkit import Devkit
from split_alexnet.data.preprocess import default_workers, write_split
from split_alexnet.data.tarball import TARBALLS, index_tarball


def as_tarball(folders: Path, tar: Path) -> dict[str, str]:
    """folders/train/<class>/* as ImageNet's train tar, classes renamed to wnids."""
    wnids = {}
    with tarfile.open(tar, "w") as outer:
        for k, folder in enumerate(sorted((folders / "train").iterdir())):
            wnids[folder.name] = wnid = f"n{k:08d}"
            inner = tar.with_name(f"{wnid}.tar")
            with tarfile.open(inner, "w") as archive:
                for image in sorted(folder.iterdir()):
                    archive.add(image, arcname=image.name)
            outer.add(inner, arcname=inner.name)
            inner.unlink()
    return wnids


def timed(what: str, count: int, work, *args, **kwargs) -> object:
    start = time.perf_counter()
    result = work(*args, **kwargs)
    seconds = time.perf_counter() - start
    print(f"{what:<44} {seconds:7.2f} s  {count / seconds:8.0f} images/s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/split_alexnet_bench"))
    parser.add_argument("--images", type=int, default=512)
    args = parser.parse_args()
    embedded = build_embedded_dataset(args.work / "photos")
    folders = raw_jpegs(embedded, args.work / f"raw500x375-{args.images}", args.images)
    tar = args.work / "tarballs" / TARBALLS["train"]
    tar.parent.mkdir(parents=True, exist_ok=True)
    wnids = as_tarball(folders, tar)
    classes = tuple(sorted(wnids.values()))
    devkit = Devkit(classes, {wnid: wnid for wnid in classes}, ())
    n = sum(1 for _ in (folders / "train").rglob("*.JPEG"))
    print(f"{n} JPEGs of 500x375, {len(classes)} classes; {default_workers()} cores here")
    by_tar = timed("list the train tar", n, index_tarball, tar, "train", devkit, tar)
    by_folder = index_split(folders, "train")
    caches = []
    for source, index in (("tar", by_tar), ("folders", by_folder)):
        for workers in (0, default_workers()):
            cache = args.work / f"cache-{source}-{workers}"
            cache.mkdir(exist_ok=True)
            what = f"cache from the {source}, {workers or 'no'} worker processes"
            timed(what, n, write_split, folders, cache, "train", workers, index, rewrite=True)
            caches.append(cache)
    first = np.fromfile(caches[0] / "train.u8", dtype=np.uint8)
    same = all(np.array_equal(first, np.fromfile(c / "train.u8", dtype=np.uint8)) for c in caches)
    print(f"all four caches byte-identical: {same}")
    for cache in caches:
        shutil.rmtree(cache)


if __name__ == "__main__":
    main()
