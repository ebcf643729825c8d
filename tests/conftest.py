"""Shared fixtures: a tiny ImageNet-layout data set of real JPEG files."""

from __future__ import annotations

import os

# Huge pages for torch's large CPU allocations, as the launch scripts ask for them
# (launch/common.sh); torch reads this at its first large allocation, and the training
# processes the tests start inherit it. The float64 networks of tests/test_equivalence.py
# copy 150 MB tensors, each of which would otherwise fault in 37,000 pages: the module took
# 123 s with them against 168 s without.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from pathlib import Path

import pytest
import torch

from split_alexnet.data.synthetic import COLOURS, write_colour_set

TINY_CLASSES = tuple(COLOURS)
# Each takes minutes (the rest seconds): under `-n 2 --dist loadscope` (pyproject) a
# module runs whole on one worker, in collection order, so these go first, and neither
# worker is left alone with one of them at the end.
LONGEST_FIRST = ("test_training.py", "test_chaos.py", "test_equivalence.py", "test_scale.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each module's own order is kept


@pytest.fixture(autouse=True)
def seeded_torch() -> None:
    """torch's global generator from the same state in every test: a test that draws its
    inputs from it sees the same numbers whichever tests ran before it on its worker (an
    element of tests/test_lrn.py once cancelled past float64's 1e-12 that way, in CI)."""
    torch.manual_seed(0)


def write_tiny_dataset(root: Path, train_per_class: int = 6, val_per_class: int = 3) -> Path:
    """Four classes of 80×64 JPEGs, each a noisy field of its colour: learnable in a few steps."""
    return write_colour_set(root, train_per_class, val_per_class)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny"))
