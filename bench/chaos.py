"""Chaos: kill, corrupt and starve a training run, and check that nothing is lost or changed.

    .venv/bin/python bench/chaos.py --faults 100          # a gloo pair under torchrun (~20 min)
    .venv/bin/python bench/chaos.py --faults 9 --layout emulate

A reference run trains without interruption. The same command is then run
again in a fresh directory while faults strike it, one at a time, each after
the run has made progress since the last:

  kill_rank_mid_step      SIGKILL one worker at a random moment of a step;
                          torchrun (--max-restarts) restarts the pair
  kill_rank_mid_exchange  SIGSTOP one worker until its peer blocks in a
                          collective waiting for it, then SIGKILL the peer
  kill_rank_mid_save      SIGKILL a worker while a checkpoint temp file exists
  kill_job                SIGKILL the whole job; the command is run again
  sigterm                 SIGTERM to the job: it saves and exits; run again
  truncated_checkpoint    kill the job, cut the newest half file in two; run again
  flipped_checkpoint      kill the job, flip one bit of the newest half file; run again
  disk_full               run with RLIMIT_FSIZE below a half file's size: the
                          first save fails; run again without the limit
  torn_metrics            kill the job, leave half a line in metrics.jsonl; run again

In emulation the rank faults strike the one process and the command is run
again. At the end: every step's loss and the final weights and velocities are
bit-identical to the reference, metrics.jsonl holds each step and each
epoch's validation exactly once, and the run directory holds no temp file.
The report (JSON) counts each fault survived.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from split_alexnet.data.synthetic import write_colour_set
from split_alexnet.training.checkpoint import half_file, latest, load_run
from split_alexnet.training.files import numbered
from split_alexnet.training.metrics import read_metrics

FAULTS = (
    "kill_rank_mid_step", "kill_rank_mid_exchange", "kill_rank_mid_save", "kill_job", "sigterm",
    "truncated_checkpoint", "flipped_checkpoint", "disk_full", "torn_metrics",
)  # fmt: skip
STEPS_PER_EPOCH = 3  # 24 training images, batch 8
WAIT = 300  # seconds the harness waits for a fault's moment before it gives up


class Job:
    """The training command for one run directory, started and stopped as a user would."""

    def __init__(
        self, layout: str, root: Path, run_dir: Path, epochs: int, image_size: int
    ) -> None:
        self.layout, self.run_dir = layout, run_dir
        self.total_steps = epochs * STEPS_PER_EPOCH
        self.options = [
            "data=folder", f"data.root={root}", "data.batch_size=8", f"epochs={epochs}",
            "threads=1", "data.checksum_every=1", "checkpoint_every=1", "keep_checkpoints=2",
            "filters_every_epoch=false", f"model.image_size={image_size}", f"run_dir={run_dir}",
        ]  # fmt: skip
        self.process: subprocess.Popen | None = None
        self.log = (run_dir.parent / f"{run_dir.name}.console.log").open("a")

    def command(self, restarts: int) -> list[str]:
        if self.layout == "emulate":
            return [sys.executable, "-m", "split_alexnet.train", "mode=emulate", *self.options]
        return [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            f"--max-restarts={restarts}", "--monitor-interval=0.2",
            "-m", "split_alexnet.train", "mode=distributed", *self.options,
        ]  # fmt: skip

    def start(self, fsize: int | None = None) -> None:
        """The command; with `fsize`, on a disk that is full past that many bytes per file
        (RLIMIT_FSIZE: a write past it fails with EFBIG), and not restarted by torchrun."""

        def limit() -> None:
            if fsize is not None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

        env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
        self.process = subprocess.Popen(
            self.command(0 if fsize else 1000), env=env, stdout=self.log,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=limit,
        )  # fmt: skip

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self) -> int:
        """The job's exit status, once it ends (a whole run can take many minutes)."""
        assert self.process is not None
        return self.process.wait()

    def kill(self) -> None:
        """SIGKILL the job and every process it started (torchrun's workers have a process
        group of their own: a signal to the job's group alone would leave them running)."""
        if self.running():
            assert self.process is not None
            tree = [self.process.pid, *_descendants(self.process.pid)]
            for pid in tree:
                _kill(pid)
            self.process.wait(timeout=WAIT)

    def workers(self) -> list[int]:
        """The training processes: torchrun's two workers, or the one emulating process."""
        assert self.process is not None
        if self.layout != "pair":
            return [self.process.pid]
        found = subprocess.run(
            ["pgrep", "-f", "-P", str(self.process.pid), "split_alexnet.train"],
            capture_output=True, text=True,
        ).stdout.split()  # fmt: skip
        return [int(pid) for pid in found]

    def checkpointed(self) -> int:
        """The newest step a run file was written for (0: none yet)."""
        checkpoints = self.run_dir / "checkpoints"
        found = numbered(checkpoints, "run-step*.pt") if checkpoints.is_dir() else []
        return found[-1][0] if found else 0

    def complete(self) -> bool:
        """Whether the run has checkpointed its last step (validation done)."""
        found = latest(self.run_dir)
        return found is not None and load_run(found)["epoch"] * STEPS_PER_EPOCH >= self.total_steps


def _until(condition, what: str, job: Job | None = None, poll: float = 0.05) -> bool:
    """Wait for `condition`; False if `job` exits first."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if job is not None and not job.running():
            return False
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(poll)
    return True


def _descendants(pid: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    found = [int(child) for child in children.stdout.split()]
    return found + [d for child in found for d in _descendants(child)]


def _kill(pid: int, sig: int = signal.SIGKILL) -> bool:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:  # it ended between the look and the kill
        return False
    return True


def _newest_half(run_dir: Path) -> Path:
    found = latest(run_dir)
    assert found is not None, "no checkpoint to damage"
    return half_file(found.parent, random.randrange(2), int(load_run(found)["step"]))


def strike(job: Job, fault: str) -> bool:
    """Inflict `fault` on the running job; False if the job ended before it could strike."""
    workers = 2 if job.layout == "pair" else 1
    if fault.startswith("kill_rank") and not _until(
        lambda: len(job.workers()) == workers, "the workers", job
    ):
        return False
    if fault == "kill_rank_mid_step":
        time.sleep(random.uniform(0.0, 0.5))
        return _kill(random.choice(job.workers()))
    if fault == "kill_rank_mid_exchange":
        if job.layout == "emulate":  # no peer to wait for: the one process, mid-step
            return _kill(job.workers()[0])
        stopped, waiting = random.sample(job.workers(), 2)
        _kill(stopped, signal.SIGSTOP)
        time.sleep(1.0)  # long past any step's local work: the peer waits in a collective
        struck = _kill(waiting)
        _kill(stopped, signal.SIGCONT)
        return struck
    if fault == "kill_rank_mid_save":
        checkpoints = job.run_dir / "checkpoints"
        stale = set(checkpoints.glob(".*.tmp"))  # left by an earlier kill, until the restart
        saving = _until(lambda: set(checkpoints.glob(".*.tmp")) - stale, "a save", job, 0.005)
        return saving and _kill(random.choice(job.workers()))
    if fault == "sigterm":  # to every process, as a scheduler ends a job
        assert job.process is not None
        for pid in [job.process.pid, *_descendants(job.process.pid)]:
            _kill(pid, signal.SIGTERM)
        job.wait()
        return True
    job.kill()
    if fault == "truncated_checkpoint":
        path = _newest_half(job.run_dir)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif fault == "flipped_checkpoint":
        path = _newest_half(job.run_dir)
        data = bytearray(path.read_bytes())
        data[random.randrange(len(data))] ^= 1 << random.randrange(8)
        path.write_bytes(bytes(data))
    elif fault == "torn_metrics":
        with (job.run_dir / "metrics.jsonl").open("a") as f:
            f.write('{"kind": "train", "step": 9')
    elif fault == "disk_full":
        job.start(fsize=64 << 20)  # a half file is ~230 MB (~95 MB at 112 px): the save fails
        job.wait()
    return True


def final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    found = latest(run_dir)
    assert found is not None
    step = int(load_run(found)["step"])
    out = {}
    for h in (0, 1):
        saved = torch.load(half_file(found.parent, h, step), weights_only=True)
        out |= saved["params"] | {f"velocity.{k}": v for k, v in saved["velocity"].items()}
    return out


def check(run_dir: Path, reference: dict) -> dict[str, object]:
    """Bit-identical losses, weights and velocities; each step and validation once; no temp."""
    records = read_metrics(run_dir / "metrics.jsonl")
    train = [(r["step"], r["loss"]) for r in records if r["kind"] == "train"]
    val = [(r["epoch"], r["top1_error"]) for r in records if r["kind"] == "val"]
    weights = final_state(run_dir)
    different = [
        k for k in reference["weights"] if not torch.equal(weights[k], reference["weights"][k])
    ]
    temps = [str(p) for p in run_dir.rglob(".*.tmp")]
    return {
        "losses_identical": train == reference["train"],
        "validation_identical": val == reference["val"],
        "steps_each_once": [s for s, _ in train] == list(range(1, len(reference["train"]) + 1)),
        "weights_identical": not different,
        "tensors_compared": len(reference["weights"]),
        "tensors_different": different,
        "temp_files_left": temps,
    }


def run(faults: int, layout: str, work: Path, seed: int, image_size: int) -> dict[str, object]:
    random.seed(seed)
    root = write_colour_set(work / "data", 6, 2, size=(96, 128))
    # Two steps a fault: a step of progress before each, and the steps a kill undoes.
    epochs = max(2, -(-(2 * faults + 3) // STEPS_PER_EPOCH))

    started = time.monotonic()
    reference_job = Job(layout, root, work / "reference", epochs, image_size)
    reference_job.start()
    if reference_job.wait() != 0:
        raise RuntimeError(f"the reference run failed: see {reference_job.log.name}")
    records = read_metrics(reference_job.run_dir / "metrics.jsonl")
    reference = {
        "train": [(r["step"], r["loss"]) for r in records if r["kind"] == "train"],
        "val": [(r["epoch"], r["top1_error"]) for r in records if r["kind"] == "val"],
        "weights": final_state(reference_job.run_dir),
    }
    for path in (reference_job.run_dir / "checkpoints").iterdir():
        path.unlink()  # its numbers are in memory; the disk goes to the chaos run
    reference_seconds = time.monotonic() - started

    job = Job(layout, root, work / "chaos", epochs, image_size)
    plan = [FAULTS[i % len(FAULTS)] for i in range(faults)]
    random.shuffle(plan)
    survived: Counter[str] = Counter()
    done_at = 0
    for fault in plan:
        if not job.running():
            job.start()
        # Progress since the last fault, a step checkpointed, so the run always moves on.
        _until(lambda at=done_at: job.checkpointed() > at or not job.running(), "progress")
        if not job.running():
            break  # the run ended before every fault struck
        if strike(job, fault):
            survived[fault] += 1
        done_at = job.checkpointed()
    for _ in range(10):  # the same command again until the run is complete
        if job.running():
            job.wait()
        if job.complete():
            break
        job.start()
    result = check(job.run_dir, reference)
    ok = all(result[k] for k in ("losses_identical", "validation_identical", "steps_each_once"))
    ok = ok and result["weights_identical"] and not result["temp_files_left"]
    return {
        "layout": layout, "faults": sum(survived.values()), "survived": dict(survived),
        "steps": job.total_steps, "epochs": epochs, "ok": ok, **result,
        "reference_seconds": round(reference_seconds, 1),
        "chaos_seconds": round(time.monotonic() - started - reference_seconds, 1),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faults", type=int, default=100)
    parser.add_argument("--layout", choices=("pair", "emulate"), default="pair")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--report", type=Path, default=None, help="also write the JSON here")
    parser.add_argument(
        "--image-size", type=int, default=224,
        help="112: the scaled network (data/scaled.py), a quarter of the compute and less than "
        "half the checkpoint bytes; the faults and checks are the same",
    )  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        report = run(args.faults, args.layout, work, args.seed, args.image_size)
    text = json.dumps(report, indent=2)
    print(text)
    if args.report:
        args.report.write_text(text + "\n")
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
