"""Just enough image reading for Figure 4: an ImageNet-layout folder, centre 224 crops, a mean.

A stand-in for the data package (split_alexnet.data) until it lands: shorter
side to 256, the centre 224×224 crop, raw RGB 0–255 as float32, minus a mean
(per channel if given, else the per-pixel mean image of the gallery, as the
paper subtracts the mean activity over the training set from each pixel).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms.v2 import functional as F

SUFFIXES = {".jpeg", ".jpg", ".png"}
SHORTER, CROP = 256, 224


def image_folder(root: str | Path) -> list[tuple[Path, str]]:
    """(path, class) for every image in root/<class>/, classes and files in sorted order."""
    root = Path(root)
    found = [
        (path, folder.name)
        for folder in sorted(p for p in root.iterdir() if p.is_dir())
        for path in sorted(folder.iterdir())
        if path.suffix.lower() in SUFFIXES
    ]
    if not found:
        raise ValueError(f"{root}: no images in class folders (expected root/<class>/<image>.JPEG)")
    return found


def centre_crop(path: Path) -> torch.Tensor:
    """uint8 (3, 224, 224) RGB: shorter side to 256, then the centre crop."""
    image = decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
    return F.center_crop(F.resize(image, SHORTER, antialias=True), [CROP, CROP])


def batches(paths: Sequence[Path], size: int) -> Iterator[torch.Tensor]:
    """float32 (n, 3, 224, 224) crops of `paths`, `size` at a time, in order."""
    for start in range(0, len(paths), size):
        yield torch.stack([centre_crop(p) for p in paths[start : start + size]]).float()


def mean_image(paths: Sequence[Path], size: int) -> torch.Tensor:
    """The per-pixel mean (3, 224, 224) of the crops of `paths`."""
    total = torch.zeros(3, CROP, CROP, dtype=torch.float64)
    for batch in batches(paths, size):
        total += batch.double().sum(0)
    return (total / len(paths)).float()
