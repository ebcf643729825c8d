"""Figure 4's images: an ImageNet-layout folder, the test-time centre crop, a mean.

Decoding and the crop are the data pipeline's (split_alexnet.data: shorter side
to 256, centre 256×256, then the centre 224×224 patch); raw RGB 0–255 as
float32, minus a mean (per channel if given, else the per-pixel mean image of
the gallery, as the paper subtracts the mean over the training set).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from split_alexnet.data.folder import CROP, load_256
from split_alexnet.data.views import CENTRE, crop

SUFFIXES = {".jpeg", ".jpg", ".png"}


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
    """uint8 (3, 224, 224) RGB: the centre test view of the stored 256×256 image."""
    return crop(load_256(path), CENTRE, CENTRE, False)


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
