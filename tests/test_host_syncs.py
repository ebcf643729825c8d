"""The training loop waits for the device once per log_every steps, not every step (issue 12).

On a GPU, reading a tensor's value on the host (`.item()`, `.tolist()`,
`bool(t)`, ...) waits for every kernel queued before it, serialising the step
with the host. On the CPU those reads cost nothing, but they can be counted:
a TorchFunctionMode sees each one. Two runs that differ only by one window of
log_every steps must differ by exactly one read.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

from tests.pair import free_port, run_processes

# The Tensor methods and functions that hand a value to the host.
READS = {
    "item", "tolist", "numpy", "cpu", "equal",
    "__bool__", "__int__", "__float__", "__index__", "__format__", "__array__",
}  # fmt: skip
LOG_EVERY = 4


class HostReads(TorchFunctionMode):
    """Counts the reads of tensor values on the host (decoding runs in loader workers)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += getattr(func, "__name__", "") in READS
        return func(*args, **(kwargs or {}))


def reads_of_a_run(root: Path, run_dir: Path, steps: int, mode: str) -> int:
    """Host reads of a whole training run of `steps` steps (set-up and final save included)
    on `root`, whose cache an earlier run built."""
    from hydra import compose, initialize_config_module

    from split_alexnet.train import train

    overrides = [
        f"mode={mode}", "data=folder", f"data.root={root}",
        "data.batch_size=2", "data.num_workers=1", "data.checksum_every=1", "threads=1",
        f"log_every={LOG_EVERY}", f"max_steps={steps}", "resume=false", "keep_checkpoints=1",
        "filters_every_epoch=false", "model.image_size=112", f"run_dir={run_dir / str(steps)}",
    ]  # fmt: skip
    with initialize_config_module("split_alexnet.conf", version_base=None):
        cfg = compose("train", overrides=overrides)
    with HostReads() as reads:
        train(cfg)
    return reads.count


def _counts(rank: int, root: Path, run_dir: Path, mode: str, ports: list[int]) -> list[int]:
    """Reads of runs one and two windows long, after a first run has built the cache.

    The tiny set holds 12 training batches of 2: no epoch ends within 8 steps.
    A pair's training run closes its process group; each run starts its own.
    """
    counts = []
    for name, steps, port in zip(("warm", "one", "two"), (1, 1, 2), ports, strict=True):
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        counts.append(reads_of_a_run(root, run_dir / name, steps * LOG_EVERY, mode))
    return counts[1:]


def test_one_host_read_per_log_window_in_emulation(tiny_dataset: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    one, two = _counts(0, copy(tiny_dataset, tmp_path), tmp_path, "emulate", [0, 0, 0])
    assert two - one == 1


def test_one_host_read_per_log_window_in_a_gloo_pair(tiny_dataset: Path, tmp_path: Path) -> None:
    root = copy(tiny_dataset, tmp_path)
    ports = [free_port() for _ in range(3)]
    for one, two in run_processes(_counts, root, tmp_path, "distributed", ports):
        assert two - one == 1


def copy(tiny_dataset: Path, tmp_path: Path) -> Path:
    """The tiny set's images in a folder of this test's own (its cache is built there)."""
    data = tmp_path / "data"
    for split in ("train", "val"):
        shutil.copytree(tiny_dataset / split, data / split)
    return data
