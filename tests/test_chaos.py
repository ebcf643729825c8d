"""Chaos, short: every fault kind once against a gloo pair under torchrun (bench/chaos.py).

Each fault strikes the real command (SIGKILL of a worker mid-step, mid-exchange
and mid-save, SIGKILL of the job, SIGTERM, a truncated and a bit-flipped newest
checkpoint, a disk full during the save, a torn metrics line); the run must end
with every loss, weight and velocity bit-identical to an uninterrupted run. The
network is the 112-pixel one (data/scaled.py): the faults do not depend on its
size, and it costs a quarter of the paper's steps and half its checkpoint bytes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.test_training import environment

CHAOS = Path(__file__).parents[1] / "bench" / "chaos.py"


def test_every_fault_kind_leaves_the_numbers_of_an_uninterrupted_run(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, str(CHAOS), "--faults", "9", "--work", str(tmp_path / "work"),
         "--report", str(report_path), "--image-size", "112"],
        capture_output=True, text=True, env=environment(), timeout=900,
    )  # fmt: skip
    assert report_path.exists(), result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    kinds = (
        "kill_rank_mid_step", "kill_rank_mid_exchange", "kill_rank_mid_save", "kill_job",
        "sigterm", "truncated_checkpoint", "flipped_checkpoint", "disk_full", "torn_metrics",
    )  # fmt: skip
    assert report["survived"] == dict.fromkeys(kinds, 1), report
    assert report["losses_identical"] and report["validation_identical"], report
    assert report["steps_each_once"] and report["weights_identical"], report
    assert report["tensors_compared"] == 2 * 2 * 16  # params and velocities of both halves
    assert report["temp_files_left"] == []
    assert report["ok"] and result.returncode == 0
