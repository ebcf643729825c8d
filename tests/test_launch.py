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


def test_the_cpu_launcher_hides_the_gpus(tmp_path: Path) -> None:
    """What cpu_pair.sh hands torchrun: its environment and arguments (torchrun itself is
    replaced by a script that prints them, so no GPU is needed to see the GPUs hidden)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "torchrun"
    fake.write_text('#!/bin/sh\necho "CUDA_VISIBLE_DEVICES=[$CUDA_VISIBLE_DEVICES] $*"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{bin_dir}:{VENV}:{os.environ['PATH']}",
           "RUN_DIR": str(tmp_path / "r"), "CUDA_VISIBLE_DEVICES": "0,1"}  # fmt: skip
    result = subprocess.run(
        ["bash", str(LAUNCH / "cpu_pair.sh"), "seed=3"], capture_output=True, text=True, env=env,
        check=True,
    )  # fmt: skip
    assert result.stdout.startswith("CUDA_VISIBLE_DEVICES=[] --standalone --nproc_per_node=2")
    assert result.stdout.rstrip().endswith(f"mode=distributed run_dir={tmp_path / 'r'} seed=3")


def test_a_deterministic_error_is_said_once_and_torch_run_never_starts(tmp_path: Path) -> None:
    """The launcher checks before torchrun, whose --max-restarts would retry a bad root."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "torchrun"
    fake.write_text("#!/bin/sh\necho torchrun started\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{bin_dir}:{VENV}:{os.environ['PATH']}",
           "RUN_DIR": str(tmp_path / "r")}  # fmt: skip
    result = subprocess.run(
        ["bash", str(LAUNCH / "cpu_pair.sh"), "data=folder", "data.root=/no/such/folder"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert result.returncode == 2
    assert "torchrun started" not in result.stdout
    assert "error: data root /no/such/folder does not exist or is not a directory" in result.stderr
