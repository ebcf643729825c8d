"""Data-parallel replicas of model-parallel pairs: real gloo processes give one pair's numbers.

The runs call the real training function in spawned processes, started as
torchrun starts them (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT in the
environment). dp = 2 and dp = 3 (4 and 6 processes) must reach the weights,
velocities, losses and validation counts of one emulated pair holding the
whole global batch, dropout on: each replica keeps its rows of the global
batch's dropout masks (PaperDropout's replica/replicas). The network reads 112
pixels (data/scaled.py; every kernel count and exchange kept, fc6 smaller): how
the replicas and pairs share the work does not depend on the input's size, and
tests/test_equivalence.py holds the paper's 224-pixel net to the reference.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from split_alexnet.config import OptimConfig
from split_alexnet.parallel.layout import Layout, LayoutError, setup_layout
from split_alexnet.training.checkpoint import half_file, run_file
from split_alexnet.training.metrics import read_metrics
from tests.conftest import write_tiny_dataset
from tests.pair import free_port, run_processes

GLOBAL_BATCH = 6  # splits over 1, 2 and 3 pairs
STEPS = 4  # one epoch of 24 training images
VAL_IMAGES = 16  # batches 6, 6, 4: the pairs see 8/8 images at dp=2, 6/5/5 at dp=3


@dataclass
class Job:
    """One training run: `pairs` data-parallel pairs (2·pairs processes), or emulation (0)."""

    pairs: int
    run_dir: Path
    extra: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)

    @property
    def world(self) -> int:
        return 2 * self.pairs if self.pairs else 1

    def overrides(self, root: Path) -> list[str]:
        return [
            "data=folder", f"data.root={root}", f"data.batch_size={GLOBAL_BATCH}", "epochs=1",
            "threads=1", "filters_every_epoch=false", "precision=fp64", "model.image_size=112",
            "data.checksum_every=1", f"run_dir={self.run_dir}",
            "mode=distributed" if self.pairs else "mode=emulate", *self.extra,
        ]  # fmt: skip


def _move_step2(source: Path, run_dir: Path) -> None:
    (run_dir / "checkpoints").mkdir(parents=True)
    for name in (*(half_file(Path(), h, 2) for h in (0, 1)), run_file(Path(), 2)):
        (source / "checkpoints" / name).rename(run_dir / "checkpoints" / name)


def _worker(rank: int, root: Path, job: Job) -> None:
    """One rank of `job`, started as torchrun would start it."""
    from hydra import compose, initialize_config_module

    from split_alexnet.train import train

    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(job.world), LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(job.world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(job.port),
    )  # fmt: skip
    with initialize_config_module("split_alexnet.conf", version_base=None):
        cfg = compose("train", overrides=job.overrides(root))
    train(cfg)


@dataclass
class Finished:
    """What the tests read of a finished run; its checkpoint files are gone once read."""

    halves: dict[str, torch.Tensor]  # parameters and velocities of both halves at STEPS
    checkpoints: list[str]  # the file names checkpoints/ held at the end
    records: list[dict]
    logs: dict[str, str]  # rank<N>.log → its text

    @classmethod
    def read(cls, run_dir: Path) -> Finished:
        return cls(
            halves=halves(run_dir),
            checkpoints=sorted(p.name for p in (run_dir / "checkpoints").iterdir()),
            records=read_metrics(run_dir / "metrics.jsonl"),
            logs={p.name: p.read_text() for p in (run_dir / "logs").iterdir()},
        )

    def of(self, kind: str) -> list[dict]:
        return [r for r in self.records if r["kind"] == kind]


def halves(run_dir: Path, step: int = STEPS) -> dict[str, torch.Tensor]:
    """Parameters and velocities of both half files of checkpoint `step`."""
    out = {}
    for h in (0, 1):
        saved = torch.load(half_file(run_dir / "checkpoints", h, step), weights_only=True)
        out |= saved["params"] | {f"velocity.{k}": v for k, v in saved["velocity"].items()}
    return out


def assert_same_run(got: Finished, expected: Finished, first_step: int = 1) -> None:
    """Same weights, velocities, losses and validation counts, in float64.

    The runs train in float64 (precision=fp64): a 2-image and a 6-image batch
    round differently, and in float32 that flips near-ties in max-pool windows
    (one gradient sent to a neighbouring pixel: 2 % of conv1's velocity on an
    AMD CPU, issue 14). In float64 no such tie is near, so any CPU agrees to
    1e-9, while a wrong average or a lost shard is off by O(1).
    """
    a, b = got.halves, expected.halves
    assert a.keys() == b.keys()
    for name in b:
        assert b[name].dtype == torch.float64, name
        error = ((a[name] - b[name]).norm() / b[name].norm()).item()
        assert error <= 1e-9, (name, error)
    losses = {r["step"]: r["loss"] for r in got.of("train")}
    for r in expected.of("train"):
        if r["step"] >= first_step:
            assert losses[r["step"]] == pytest.approx(r["loss"], rel=1e-12), r["step"]
    (val,), (reference,) = got.of("val"), expected.of("val")
    assert val["images"] == VAL_IMAGES
    for key in ("images", "top1_error", "top5_error"):
        assert val[key] == reference[key], key


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Finished]:
    """Every run of this file, one after another, each read and its checkpoints deleted.

    A float64 checkpoint of the 112-pixel network is 0.36 GB. Each run's is read and
    deleted before the next run starts, and the resumed runs keep one, so no
    more than two checkpoints (the two-pair run's steps 2 and 4) are ever on disk.
    """
    tmp = tmp_path_factory.mktemp("scale")
    root = write_tiny_dataset(tmp / "data", train_per_class=6, val_per_class=4)
    resumed = tmp / "resumed"
    jobs = {
        "emulated": Job(0, tmp / "emulated"),
        "dp3": Job(3, tmp / "dp3"),
        "dp2": Job(2, tmp / "dp2", ("checkpoint_every=2",)),
        # Step 2 of the two-pair run, step 3 as one pair, then step 4 and validation emulated.
        "one_pair": Job(1, resumed, ("max_steps=3", "keep_checkpoints=1")),
        "resumed": Job(0, resumed, ("keep_checkpoints=1",)),
    }
    # A fork server that has imported the training code starts each run's processes at once.
    multiprocessing.get_context("forkserver").set_forkserver_preload(["split_alexnet.train"])
    finished = {}
    for name, job in jobs.items():
        mp.start_processes(_worker, (root, job), job.world, start_method="forkserver")
        if name == "one_pair":
            continue
        finished[name] = Finished.read(job.run_dir)
        if name == "dp2":
            _move_step2(job.run_dir, resumed)
        shutil.rmtree(job.run_dir / "checkpoints")
    shutil.rmtree(root)
    return finished


def test_two_pairs_reach_the_weights_of_one_emulated_pair(runs: dict[str, Finished]) -> None:
    assert_same_run(runs["dp2"], runs["emulated"])
    # Only the pair of dp rank 0 writes halves: one file per half, as a single pair would.
    assert runs["dp2"].checkpoints == [
        f"{kind}-step{step:08d}.pt" for kind in ("half0", "half1", "run") for step in (2, 4)
    ]
    assert sorted(runs["dp2"].logs) == [f"rank{r}.log" for r in range(4)]
    assert "4 process(es), 2 pair(s)" in runs["dp2"].logs["rank3.log"]


def test_three_pairs_reach_the_weights_of_one_emulated_pair(runs: dict[str, Finished]) -> None:
    assert_same_run(runs["dp3"], runs["emulated"])


def test_a_two_pair_checkpoint_resumes_as_one_pair_then_in_emulation(
    runs: dict[str, Finished],
) -> None:
    assert [r["step"] for r in runs["resumed"].of("train")] == [3, 4]
    assert "resuming from" in runs["resumed"].logs["rank1.log"]
    assert_same_run(runs["resumed"], runs["emulated"], first_step=3)


def test_a_global_batch_that_does_not_split_over_the_pairs_is_refused() -> None:
    layout = Layout("distributed", torch.device("cpu"), world=4, dp_size=2)
    assert layout.pair_batch(128) == 64
    with pytest.raises(LayoutError, match="global batch 7 does not split evenly over 2"):
        layout.pair_batch(7)


def test_the_linear_scaling_rule_is_opt_in() -> None:
    from omegaconf import OmegaConf

    from split_alexnet.training.run import scaled_lr

    cfg = OmegaConf.structured(OptimConfig)
    assert scaled_lr(cfg, 1024).lr == 0.01
    cfg.scale_lr_with_batch = True
    assert scaled_lr(cfg, 1024).lr == pytest.approx(0.08)
    assert scaled_lr(cfg, 128).lr == pytest.approx(0.01)


def _late_main(rank: int, port: int, out: Path) -> None:
    """Rank 0 prepares for 4 s; collectives time out after 2 s; each rank says what it saw."""
    import time

    os.environ.update(
        RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )  # fmt: skip
    layout = setup_layout("distributed", timeout_s=2)
    seen = {}
    for wait in ("wait_for_main", "barrier"):
        if rank == 0:
            time.sleep(4)
        try:
            getattr(layout, wait)()
            seen[wait] = "ok"
        except RuntimeError as error:
            seen[wait] = type(error).__name__
        if wait == "barrier" and rank == 1:
            break  # the timed-out barrier leaves the default group unusable: stop here
    (out / f"rank{rank}.json").write_text(json.dumps(seen))
    os._exit(0)  # no teardown handshake with a peer whose barrier failed


def test_the_ranks_wait_for_the_main_process_longer_than_the_collective_timeout(
    tmp_path: Path,
) -> None:
    """Issue 12: a plain barrier gives up at the timeout while process 0 builds the cache."""
    mp.start_processes(_late_main, (free_port(), tmp_path), 2, start_method="spawn")
    rank1 = json.loads((tmp_path / "rank1.json").read_text())
    assert rank1["wait_for_main"] == "ok"
    assert rank1["barrier"] != "ok"  # what open_data's barrier did before


def _open_data_on_its_node(rank: int, root: Path, caches: list[Path]) -> str:
    """open_data with the cache on a disk of this rank's own, as on two nodes."""
    from split_alexnet.config import DataConfig
    from split_alexnet.training.run import open_data

    layout = setup_layout("distributed")
    try:
        open_data(DataConfig(root=str(root), cache_dir=str(caches[rank])), layout, seed=0)
    except ValueError as error:
        return str(error)
    return "ok"


def test_a_rank_that_does_not_see_the_prepared_cache_stops_every_rank(tmp_path: Path) -> None:
    """Issue 12: with the cache on node-local disks only rank 0's node has it."""
    root = write_tiny_dataset(tmp_path / "data")
    caches = [tmp_path / "node0" / "cache", tmp_path / "node1" / "cache"]
    said = run_processes(_open_data_on_its_node, root, caches)
    assert said[0] == said[1]
    assert said[0].startswith("rank 1 on ")
    assert said[0].endswith(
        f"do not see the data that rank 0 prepared in {caches[0]}: put data.cache_dir on "
        "storage every node shares, or run split-alexnet-preprocess with the same arguments "
        "on every node before training"
    )
    # The same cache on both disks (prepared on each node) is the same data.
    shutil.copytree(caches[0], caches[1])
    assert run_processes(_open_data_on_its_node, root, caches) == ["ok", "ok"]
