"""Data-parallel replicas of model-parallel pairs: real gloo processes give one pair's numbers.

Each run calls the real training function in spawned processes, as torchrun
starts them (RANK, WORLD_SIZE, MASTER_ADDR in the environment). dp = 2 and
dp = 3 (4 and 6 processes) must reach the weights, losses and validation
counts of one emulated pair holding the whole global batch. Dropout is off:
PaperDropout draws every replica's masks from the same generator state, so
with dropout on the replicas' masks are not the rows of the global batch's
(docs/scaling.md, "Dropout masks").
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from split_alexnet.config import OptimConfig
from split_alexnet.layout import Layout, LayoutError
from split_alexnet.metrics import read_metrics
from split_alexnet.resume import half_file, run_file
from tests.conftest import write_tiny_dataset

GLOBAL_BATCH = 6  # splits over 1, 2 and 3 pairs
STEPS = 4  # one epoch of 24 training images
VAL_IMAGES = 20  # batches 6, 6, 6, 2: the last one splits 1/1 over dp=2 and 1/1/0 over dp=3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, overrides: list[str]) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
    )  # fmt: skip
    from hydra import compose, initialize_config_module

    from split_alexnet.train import train

    with initialize_config_module("split_alexnet.conf", version_base=None):
        cfg = compose("train", overrides=overrides)
    train(cfg)


def run(root: Path, run_dir: Path, pairs: int, *extra: str) -> Path:
    """One training run: `pairs` data-parallel pairs (2·pairs processes), or emulation (0)."""
    overrides = [
        "data=folder", f"data.root={root}", f"data.batch_size={GLOBAL_BATCH}", "epochs=1",
        "model=no_dropout", "threads=1", "filters_every_epoch=false", "checkpoint_every=2",
        "data.checksum_every=1", f"run_dir={run_dir}",
        "mode=distributed" if pairs else "mode=emulate", *extra,
    ]  # fmt: skip
    world = 2 * pairs if pairs else 1
    mp.start_processes(
        _worker, args=(world, _free_port(), overrides), nprocs=world, start_method="spawn"
    )
    return run_dir


def halves(run_dir: Path, step: int = STEPS) -> dict[str, torch.Tensor]:
    """Parameters and velocities of both half files of checkpoint `step`."""
    out = {}
    for h in (0, 1):
        saved = torch.load(half_file(run_dir / "checkpoints", h, step), weights_only=True)
        out |= saved["params"] | {f"velocity.{k}": v for k, v in saved["velocity"].items()}
    return out


def records(run_dir: Path, kind: str) -> list[dict]:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == kind]


def assert_same_run(got: Path, expected: Path, first_step: int = 1) -> None:
    """Same weights and velocities after STEPS steps, same losses, same validation counts."""
    a, b = halves(got), halves(expected)
    assert a.keys() == b.keys()
    for name in b:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-6, msg=name)
    losses = {r["step"]: r["loss"] for r in records(got, "train")}
    for r in records(expected, "train"):
        if r["step"] >= first_step:
            assert losses[r["step"]] == pytest.approx(r["loss"], rel=1e-5), r["step"]
    (val,), (reference,) = records(got, "val"), records(expected, "val")
    assert val["images"] == VAL_IMAGES
    for key in ("images", "top1_error", "top5_error"):
        assert val[key] == reference[key], key


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("scale"), train_per_class=6, val_per_class=5)


@pytest.fixture(scope="module")
def emulated(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run(data, tmp_path_factory.mktemp("emulated") / "run", 0)


@pytest.fixture(scope="module")
def dp2(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run(data, tmp_path_factory.mktemp("dp2") / "run", 2)


def test_two_pairs_reach_the_weights_of_one_emulated_pair(dp2: Path, emulated: Path) -> None:
    assert_same_run(dp2, emulated)
    # Only the pair of dp rank 0 writes halves, one file per half, as a single pair would.
    names = sorted(p.name for p in (dp2 / "checkpoints").iterdir())
    assert names == sorted(p.name for p in (emulated / "checkpoints").iterdir())
    assert [r["images_per_s"] > 0 for r in records(dp2, "train")] == [True] * STEPS
    assert sorted(p.name for p in (dp2 / "logs").iterdir()) == [f"rank{r}.log" for r in range(4)]


def test_three_pairs_reach_the_weights_of_one_emulated_pair(
    data: Path, emulated: Path, tmp_path: Path
) -> None:
    assert_same_run(run(data, tmp_path / "run", 3), emulated)


@pytest.mark.parametrize("pairs", [1, 0], ids=["one-pair", "emulation"])
def test_a_two_pair_checkpoint_resumes_with_one_pair_and_in_emulation(
    data: Path, dp2: Path, emulated: Path, tmp_path: Path, pairs: int
) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    for path in (*(half_file(Path(), h, 2) for h in (0, 1)), run_file(Path(), 2)):
        shutil.copy(dp2 / "checkpoints" / path, run_dir / "checkpoints" / path)
    assert_same_run(run(data, run_dir, pairs), emulated, first_step=3)


def test_a_global_batch_that_does_not_split_over_the_pairs_is_refused() -> None:
    layout = Layout("distributed", torch.device("cpu"), world=4, dp_size=2)
    assert layout.pair_batch(128) == 64
    with pytest.raises(LayoutError, match="global batch 7 does not split evenly over 2"):
        layout.pair_batch(7)


def test_the_linear_scaling_rule_is_opt_in() -> None:
    from omegaconf import OmegaConf

    from split_alexnet.train import scaled_lr

    cfg = OmegaConf.structured(OptimConfig)
    assert scaled_lr(cfg, 1024).lr == 0.01
    cfg.scale_lr_with_batch = True
    assert scaled_lr(cfg, 1024).lr == pytest.approx(0.08)
    assert scaled_lr(cfg, 128).lr == pytest.approx(0.01)


@pytest.mark.parametrize(
    "script", ["cpu_pair.sh", "gpu_pair.sh", "multinode.sh", "slurm.sbatch", "common.sh"]
)
def test_launch_scripts_parse(script: str) -> None:
    launch = Path(__file__).parents[1] / "launch"
    subprocess.run(["bash", "-n", str(launch / script)], check=True)
