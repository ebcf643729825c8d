"""A tiny learnable data set of real JPEG files, for smoke tests, CI and the chaos bench."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.io import write_jpeg

COLOURS = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200), "grey": (128,) * 3}


def write_colour_set(
    root: Path, train_per_class: int = 6, val_per_class: int = 3, size: tuple[int, int] = (64, 80)
) -> Path:
    """root/{train,val}/<colour>/*.JPEG: four classes, each a noisy field of its colour.

    Learnable in a few steps, yet every pixel is noise, so no two images are alike.
    """
    generator = torch.Generator().manual_seed(0)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for name, rgb in COLOURS.items():
            folder = Path(root) / split / name
            folder.mkdir(parents=True, exist_ok=True)
            base = torch.tensor(rgb, dtype=torch.float32)[:, None, None]
            for i in range(count):
                noise = torch.randn(3, *size, generator=generator) * 30
                image = (base + noise).clamp(0, 255).to(torch.uint8)
                write_jpeg(image, str(folder / f"{name}_{i}.JPEG"), quality=90)
    return Path(root)
