"""ILSVRC-2012 as downloaded: the train and validation tarballs, read where they lie.

ILSVRC2012_img_train.tar holds one tar per class (n01440764.tar, …) of that
class's JPEGs; ILSVRC2012_img_val.tar holds the 50,000 validation JPEGs, flat,
which the devkit labels. Nothing is extracted (150 GB): the index records where
each image's bytes lie inside the uncompressed tarball, and whichever process
decodes an image reads just those bytes. Files are named as torchvision's
extraction would place them (<wnid>/<file>) and sorted the same way, so the
cache of the tarballs is the cache of their extracted class folders, byte for byte.
"""

from __future__ import annotations

import os
import re
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import imagenet
from tqdm import tqdm

from split_alexnet.data.devkit import Devkit
from split_alexnet.data.folder import (
    CORRUPT,
    IMAGE_SUFFIXES,
    NOT_IMAGE_NAME,
    DataError,
    SplitIndex,
    UnreadableImage,
    decode_bytes,
    report_skip,
    rescale_256,
)

TARBALLS = {split: imagenet.ARCHIVE_META[split][0] for split in ("train", "val")}
# What the papers' tables call these sets: Table 2 reports ILSVRC-2012's validation set.
SET_NAMES = {"train": "ILSVRC-2012 train", "val": "ILSVRC-2012 validation"}
_CLASS_TAR = re.compile(r"(n\d{8})\.tar")


@dataclass(frozen=True, kw_only=True)
class TarIndex(SplitIndex):
    """A split inside a tarball (split_dir is the tar): file i's bytes are sizes[i] bytes
    at offsets[i]. stamp: the tarball and devkit it was listed from."""

    offsets: np.ndarray  # int64
    sizes: np.ndarray  # int64
    stamp: dict

    def image(self, row: int) -> torch.Tensor:
        name = self.split_dir / self.files[row]
        size = int(self.sizes[row])
        with open(self.split_dir, "rb") as tar:
            data = bytearray(os.pread(tar.fileno(), size, int(self.offsets[row])))
        if len(data) != size:
            raise UnreadableImage(name, CORRUPT, f"{len(data)} of {size} bytes: tar cut short")
        return rescale_256(decode_bytes(data, name))

    def manifest(self) -> dict:
        return {
            **super().manifest(),
            "tarball": self.stamp,
            "offsets": self.offsets.tolist(),
            "sizes": self.sizes.tolist(),
        }

    @classmethod
    def from_manifest(cls, tar: Path, manifest: dict) -> TarIndex:
        return cls(
            split_dir=tar,
            classes=tuple(manifest["classes"]),
            files=tuple(manifest["files"]),
            labels=np.asarray(manifest["labels"], dtype=np.int64),
            empty_classes=tuple(manifest["empty_classes"]),
            skipped=tuple(tuple(skip) for skip in manifest["skipped"]),
            names=tuple(manifest["names"]),
            set_name=manifest["set"],
            offsets=np.asarray(manifest["offsets"], dtype=np.int64),
            sizes=np.asarray(manifest["sizes"], dtype=np.int64),
            stamp=manifest["tarball"],
        )


def tarballs(root: Path) -> dict[str, Path]:
    """split → its tarball, for the ILSVRC-2012 tarballs that lie in root."""
    return {split: root / name for split, name in TARBALLS.items() if (root / name).is_file()}


def stamp(*paths: Path) -> dict:
    """What tells that a file is the one an index was listed from: path, size, mtime."""
    stats = {str(p.resolve()): os.stat(p) for p in paths}
    return {path: [st.st_size, st.st_mtime_ns] for path, st in stats.items()}


@contextmanager
def _reading(name: str) -> Iterator[None]:
    """tarfile's errors as one line naming the tar: a truncated download, or no tar at all."""
    try:
        yield
    except (tarfile.TarError, EOFError) as error:
        raise DataError(f"{name} is truncated or not a tar ({error})") from None
    except OSError as error:
        raise DataError(f"{name} cannot be read ({error.strerror or error})") from None


def _train_members(tar: Path, devkit: Devkit) -> tuple[list, list[tuple[str, str, str]]]:
    """(file, offset, size) of every image in the class tars, and the non-image members."""
    images, skipped, found = [], [], set()
    with _reading(str(tar)), tarfile.open(tar, "r:") as outer:
        for member in tqdm(outer, desc=f"index {tar.name}", unit="class", leave=False):
            match = _CLASS_TAR.fullmatch(member.name)
            if not (member.isfile() and match):
                raise DataError(
                    f"{tar} holds {member.name!r}, not a class tar such as n01440764.tar: "
                    f"it is not {TARBALLS['train']}"
                )
            wnid = match[1]
            if wnid not in devkit.names:
                raise DataError(f"{tar} holds {member.name}, a class that the devkit lacks")
            found.add(wnid)
            inner_tar = outer.extractfile(member)
            with (
                _reading(f"{tar}/{member.name}"),
                tarfile.open(fileobj=inner_tar, mode="r:") as inner,
            ):
                for image in inner:
                    file = f"{wnid}/{image.name}"
                    if not image.isfile():
                        continue
                    if os.path.splitext(image.name)[1].lower() not in IMAGE_SUFFIXES:
                        skipped.append((file, NOT_IMAGE_NAME, "no image extension"))
                        continue
                    images.append((file, member.offset_data + image.offset_data, image.size))
    missing = sorted(set(devkit.classes) - found)
    if missing:
        raise DataError(
            f"{tar} holds {len(found)} class tars, the devkit lists {len(devkit.classes)} "
            f"(no {', '.join(missing[:3])}{', …' if len(missing) > 3 else ''}): "
            "it is truncated (an unfinished download?) or not the whole training set"
        )
    return images, skipped


def _val_members(tar: Path, devkit: Devkit) -> list:
    """(file, offset, size) of every validation image, under the class the devkit gives it."""
    with _reading(str(tar)), tarfile.open(tar, "r:") as archive:
        members = sorted(
            (m for m in tqdm(archive, desc=f"index {tar.name}", unit="img", leave=False)
             if m.isfile()),
            key=lambda m: m.name,
        )  # fmt: skip
    if len(members) != len(devkit.val_wnids):
        raise DataError(
            f"{tar} holds {len(members)} files, the devkit's ground truth labels "
            f"{len(devkit.val_wnids)}: it is truncated or not {TARBALLS['val']}"
        )
    # torchvision pairs the ground truth's lines with the sorted file names, as do we.
    return [
        (f"{wnid}/{m.name}", m.offset_data, m.size)
        for wnid, m in zip(devkit.val_wnids, members, strict=True)
    ]


def index_tarball(
    tar: Path, split: str, devkit: Devkit, devkit_path: Path, previous: dict | None = None
) -> TarIndex:
    """The images of `split`'s tarball, sorted by class then name, labelled by sorted wnid.

    `previous`: a cache manifest; when it was listed from this very tarball and devkit
    its index is taken as it is (listing the train tar's 1.28 M headers takes minutes).
    """
    now = stamp(tar, devkit_path)
    if previous is not None and previous.get("tarball") == now:
        return TarIndex.from_manifest(tar, previous)
    if split == "train":
        images, skipped = _train_members(tar, devkit)
    else:
        images, skipped = _val_members(tar, devkit), []
    for file, reason, detail in skipped:
        report_skip(tar / file, f"{reason} ({detail})")
    images.sort()
    label = {wnid: k for k, wnid in enumerate(devkit.classes)}
    labels = np.array([label[file.split("/")[0]] for file, _, _ in images], dtype=np.int64)
    counts = np.bincount(labels, minlength=len(devkit.classes))
    return TarIndex(
        split_dir=tar,
        classes=devkit.classes,
        files=tuple(file for file, _, _ in images),
        labels=labels,
        empty_classes=tuple(c for c, n in zip(devkit.classes, counts, strict=True) if n == 0),
        skipped=tuple(sorted(skipped)),
        names=tuple(devkit.names[wnid] for wnid in devkit.classes),
        set_name=SET_NAMES[split],
        offsets=np.array([offset for _, offset, _ in images], dtype=np.int64),
        sizes=np.array([size for _, _, size in images], dtype=np.int64),
        stamp=now,
    )
