"""Both ranks of a real gloo pair get byte-identical batches, each decoding half (issue item 5),
equal to the image-by-image reference of tests/test_data_views.py (issue 15)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from split_alexnet.data import PairLoader, PairMismatchError, dataset_stats
from split_alexnet.data.source import FolderSource
from tests.pair import run_processes
from tests.test_data_helpers import make_folder
from tests.test_data_views import expected_batches


def _pair_batches(rank: int, root: str, seeds: tuple[int, int], views: str):
    stats = dataset_stats(Path(root))
    loader = PairLoader(
        Path(root), "train", 7, train=True, views=views, stats=stats, seed=seeds[rank],
        group=dist.group.WORLD, num_workers=0, checksum_every=1,
    )  # fmt: skip
    loader.set_epoch(1)
    try:
        batches = [(x, y) for x, y in loader]
        loader.check_pair()
        return batches, dict(loader.skipped)
    except PairMismatchError as error:
        return str(error), {}


def broken(root: Path) -> Path:
    good = (root / "train" / "bee" / "bee_0.JPEG").read_bytes()
    (root / "train" / "bee" / "bee_1.JPEG").write_bytes(good[: len(good) // 2])  # truncated
    return root


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return broken(make_folder(tmp_path_factory.mktemp("pair"), per_class=(5, 1)))


@pytest.mark.parametrize("views", ["random", "ten"])
def test_both_ranks_get_the_emulated_batches_and_skip_the_same_file(root, views):
    dataset_stats(root)  # cached before the ranks start, so they do not race to write it
    ranks = run_pair(root, (3, 3), views)
    stats = dataset_stats(root)
    single = PairLoader(root, "train", 7, train=True, views=views, stats=stats, seed=3)
    single.set_epoch(1)
    emulated = list(single)
    reference = expected_batches(FolderSource(root, "train"), single, 1, stats, "paper")
    for batches, skipped in ranks:
        assert skipped == {"bee/bee_1.JPEG": 1}
        assert len(batches) == len(emulated) == len(reference) == 2
        for (x, y), (x1, y1), (x2, y2) in zip(batches, emulated, reference, strict=True):
            assert torch.equal(y, y1) and torch.equal(x, x1)
            assert torch.equal(y, y2) and torch.equal(x, x2)
    assert sum(len(y) for _, y in ranks[0][0]) == 13  # 14 drawn, 1 unreadable


def test_the_checksum_guard_stops_a_pair_that_disagrees(root):
    dataset_stats(root)
    (message0, _), (message1, _) = run_pair(root, (3, 4), "random")
    assert message0 == message1
    assert message0.startswith(
        "the two halves of the pair got different batches at epoch 1, batch 0"
    )


def run_pair(root, seeds, views):
    return run_processes(_pair_batches, str(root), seeds, views)
