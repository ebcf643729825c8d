"""Shared fixtures: a tiny ImageNet-layout data set of real JPEG files."""

from __future__ import annotations

from pathlib import Path

import pytest

from split_alexnet.data.synthetic import COLOURS, write_colour_set

TINY_CLASSES = tuple(COLOURS)


def write_tiny_dataset(root: Path, train_per_class: int = 6, val_per_class: int = 3) -> Path:
    """Four classes of 80×64 JPEGs, each a noisy field of its colour: learnable in a few steps."""
    return write_colour_set(root, train_per_class, val_per_class)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny"))
