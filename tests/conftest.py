"""Shared fixtures: a tiny ImageNet-layout data set of real JPEG files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.io import write_jpeg

TINY_CLASSES = ("red", "green", "blue", "grey")


def write_tiny_dataset(root: Path, train_per_class: int = 6, val_per_class: int = 3) -> Path:
    """Four classes of 80×64 JPEGs, each a noisy field of its colour: learnable in a few steps."""
    generator = torch.Generator().manual_seed(0)
    colours = {
        "red": (200, 40, 40),
        "green": (40, 200, 40),
        "blue": (40, 40, 200),
        "grey": (128, 128, 128),
    }
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for name in TINY_CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            base = torch.tensor(colours[name], dtype=torch.float32)[:, None, None]
            for i in range(count):
                noise = torch.randn(3, 64, 80, generator=generator) * 30
                image = (base + noise).clamp(0, 255).to(torch.uint8)
                write_jpeg(image, str(folder / f"{name}_{i}.JPEG"), quality=90)
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny"))
