"""The launch scripts as a user runs them: on the right devices, or one line saying why not."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

LAUNCH = Path(__file__).parents[1] / "launch"
VENV = Path(sys.executable).parent  # python3 and torchrun of this environment


@pytest.mark.parametrize(
    "script",
    ["cpu_pair.sh", "gpu_pair.sh", "multinode.sh", "slurm.sbatch", "common.sh",
     "../bench/gpu_check.sh"],
)  # fmt: skip
def test_launch_scripts_parse(script: str) -> None:
    subprocess.run(["bash", "-n", str(LAUNCH / script)], check=True)


def test_the_gpu_check_refuses_a_machine_without_a_gpu(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{VENV}:{os.environ['PATH']}", "OUT": str(tmp_path),
           "CUDA_VISIBLE_DEVICES": ""}  # fmt: skip
    script = LAUNCH.parent / "bench" / "gpu_check.sh"
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert "gpu_check.sh: no CUDA device here" in result.stderr


def test_the_gpu_launcher_refuses_too_few_gpus_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{VENV}:{os.environ['PATH']}",
           "RUN_DIR": str(tmp_path / "run"), "PAIRS": "2", "CUDA_VISIBLE_DEVICES": ""}  # fmt: skip
    result = subprocess.run(
        ["bash", str(LAUNCH / "gpu_pair.sh")], capture_output=True, text=True, env=env
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("gpu_pair.sh")]
    assert lines == [
        "gpu_pair.sh: 4 GPUs needed (PAIRS=2, two per pair), 0 visible; "
        "on CPUs use launch/cpu_pair.sh"
    ]


def _cpu_pair_with_torchrun_printing(tmp_path: Path, *overrides: str, **env: str):
    """cpu_pair.sh with torchrun replaced by a script that prints its environment and
    arguments: what the launcher hands torchrun, seen without a GPU or a training run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "torchrun"
    fake.write_text('#!/bin/sh\necho "CUDA_VISIBLE_DEVICES=[$CUDA_VISIBLE_DEVICES] $*"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    path = f"{bin_dir}:{VENV}:{os.environ['PATH']}"
    return subprocess.run(
        ["bash", str(LAUNCH / "cpu_pair.sh"), *overrides], capture_output=True, text=True,
        env={**os.environ, "PATH": path, "RUN_DIR": str(tmp_path / "r"), **env},
    )  # fmt: skip


def test_the_cpu_launcher_hides_the_gpus(tmp_path: Path) -> None:
    result = _cpu_pair_with_torchrun_printing(tmp_path, "seed=3", CUDA_VISIBLE_DEVICES="0,1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("CUDA_VISIBLE_DEVICES=[] --standalone --nproc_per_node=2")
    assert result.stdout.rstrip().endswith(f"mode=distributed run_dir={tmp_path / 'r'} seed=3")


def test_a_deterministic_error_is_said_once_and_torch_run_never_starts(tmp_path: Path) -> None:
    """The launcher checks before torchrun, whose --max-restarts would retry a bad root."""
    result = _cpu_pair_with_torchrun_printing(tmp_path, "data=folder", "data.root=/no/such")
    assert result.returncode == 2
    assert result.stdout == ""  # torchrun never ran
    assert "error: data root /no/such does not exist or is not a directory" in result.stderr
