"""Small ImageNet-layout folders of real JPEG files for the data tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZES = ((300, 400), (375, 500), (256, 320), (400, 300), (260, 260))  # (height, width)


def photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """uint8 (H, W, 3): smooth colour gradients plus noise, so JPEG and resizing matter."""
    y, x = np.mgrid[0:height, 0:width]
    base = rng.uniform(0, 255, 3)
    slope = rng.uniform(-0.4, 0.4, (3, 2))
    image = base[:, None, None] + slope[:, 0, None, None] * y + slope[:, 1, None, None] * x
    image = image.transpose(1, 2, 0) + rng.normal(0, 20, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def make_folder(root: Path, classes=("ant", "bee", "cat"), per_class=(7, 3), seed=0) -> Path:
    """root/train/<class>/*.JPEG (per_class[0] each) and root/val/<class>/*.JPEG (per_class[1])."""
    rng = np.random.Generator(np.random.PCG64(seed))
    for split, count in zip(("train", "val"), per_class, strict=True):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(count):
                height, width = SIZES[(k + len(name)) % len(SIZES)]
                Image.fromarray(photo(rng, height, width)).save(
                    folder / f"{name}_{k}.JPEG", quality=92
                )
    return root
