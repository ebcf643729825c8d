"""Checkpoint files: atomic writes under a real SIGKILL, data-only loading, pruning, RNG state."""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from split_alexnet.training.checkpoint import (
    HALF_FORMAT,
    RUN_FORMAT,
    half_file,
    latest,
    run_file,
    save_run,
    variant_of,
)
from split_alexnet.training.files import (
    CheckpointError,
    atomic_save,
    check_compatible,
    discard_partial,
    load_checkpoint,
    numbered,
    prune,
)
from split_alexnet.training.metrics import MetricsLog, read_metrics

# Saves ever-new complete checkpoints over one file until killed: {"marker": i, "data": all i}.
_WRITER = """
import sys, torch
from split_alexnet.training.files import atomic_save
i = 0
while True:
    i += 1
    atomic_save({"marker": i, "data": torch.full((4_000_000,), float(i))}, sys.argv[1])
"""


def _temps(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_sigkill_mid_save_leaves_a_complete_checkpoint(tmp_path):
    target = tmp_path / "half0-epoch7.pt"
    atomic_save({"marker": 0, "data": torch.zeros(3)}, target)
    child = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)])
    try:
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline, "the writer never started a save"
            assert child.poll() is None, "the writer died on its own"
            if any(p.stat().st_size > 0 for p in _temps(tmp_path) if p.exists()):
                child.send_signal(signal.SIGSTOP)  # freeze it, then check it is mid-save
                if _temps(tmp_path):
                    break
                child.send_signal(signal.SIGCONT)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert len(_temps(tmp_path)) == 1  # the interrupted write, never renamed
    loaded = load_checkpoint(target, what="half 0 checkpoint")
    marker = loaded["marker"]
    assert torch.equal(loaded["data"], torch.full_like(loaded["data"], float(marker)))
    assert marker == 0 or loaded["data"].numel() == 4_000_000
    assert numbered(tmp_path, "half0-epoch*.pt") == [(7, target)]  # the temp is not a checkpoint
    # The next start of the run removes the dead writer's temp and nothing else.
    (interrupted,) = _temps(tmp_path)
    assert discard_partial(tmp_path) == [interrupted]
    assert sorted(tmp_path.iterdir()) == [target]


def test_exception_mid_save_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    target = tmp_path / "run.pt"
    atomic_save({"epoch": 1}, target)

    def fail(*args):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk gone"):
        atomic_save({"epoch": 2}, target)
    monkeypatch.undo()
    assert load_checkpoint(target, what="run state") == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]


def test_truncated_file_is_a_one_line_error_naming_it(tmp_path):
    path = tmp_path / "half1-epoch3.pt"
    atomic_save({"w": torch.arange(1000.0)}, path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, what="half 1 checkpoint")
    message = str(info.value)
    assert message.startswith(f"cannot load half 1 checkpoint {path}: truncated")
    assert "\n" not in message


class Payload:
    """Not data: unpickling it would run this module's code."""


def test_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": Payload()}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, what="run state")
    assert str(info.value) == (
        f"cannot load run state {path}: "
        "it holds objects other than plain data (refused by weights_only loading)"
    )


@pytest.mark.parametrize("content", [None, b"", b"hello, not a checkpoint"])
def test_missing_empty_or_foreign_file_is_an_error(tmp_path, content):
    path = tmp_path / "x.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"^cannot load run state .*x\.pt: ") as info:
        load_checkpoint(path, what="run state")
    assert "\n" not in str(info.value)
    reason = str(info.value).split(": ", 1)[1]
    if content is None:
        assert reason == "no such file"
    else:
        assert reason.startswith("truncated, damaged or not a torch checkpoint (")


def test_plain_pickle_is_also_refused(tmp_path):
    path = tmp_path / "p.pt"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="refused by weights_only loading"):
        load_checkpoint(path, what="run state")


def test_directory_is_an_error(tmp_path):
    with pytest.raises(CheckpointError, match=r": is a directory$"):
        load_checkpoint(tmp_path, what="run state")


def test_check_compatible_names_file_and_key(tmp_path):
    path = tmp_path / "half0.pt"
    meta = {"connectivity": "paper", "halves": 2, "extra": 1}
    check_compatible(meta, {"connectivity": "paper", "halves": 2}, path)
    with pytest.raises(CheckpointError) as info:
        check_compatible(meta, {"connectivity": "never", "halves": 2}, path)
    assert str(info.value) == (
        f"checkpoint {path} was written with connectivity='paper', "
        "this run has connectivity='never'"
    )
    with pytest.raises(CheckpointError, match="does not record 'lrn'"):
        check_compatible(meta, {"lrn": True}, path)


def test_prune_keeps_the_newest_by_number_not_mtime(tmp_path):
    for n in (1, 2, 9, 10, 100):
        (tmp_path / f"half0-step{n}.pt").write_bytes(b"x")
    (tmp_path / "half0-stepbest.pt").write_bytes(b"x")  # not numbered: left alone
    (tmp_path / "half1-step1.pt").write_bytes(b"x")  # another pattern: left alone
    (tmp_path / ".half0-step200.pt.abc.tmp").write_bytes(b"x")  # a killed save
    os.utime(tmp_path / "half0-step1.pt", (2e9, 2e9))  # newest mtime, oldest number
    deleted = prune(tmp_path, "half0-step*.pt", keep=2)
    assert sorted(p.name for p in deleted) == ["half0-step1.pt", "half0-step2.pt", "half0-step9.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".half0-step200.pt.abc.tmp",
        "half0-step10.pt",
        "half0-step100.pt",
        "half0-stepbest.pt",
        "half1-step1.pt",
    ]
    assert prune(tmp_path, "half0-step*.pt", keep=2) == []
    with pytest.raises(ValueError, match="keep must be at least 1"):
        prune(tmp_path, "half0-step*.pt", keep=0)


def _draws() -> tuple[list[float], list[float], list[float]]:
    return (
        torch.rand(5).tolist(),
        [*np.random.rand(5).tolist(), np.random.randn()],
        [*(random.random() for _ in range(5)), random.gauss(0, 1)],
    )


def _fake_checkpoints(directory: Path, steps: tuple[int, ...]) -> None:
    """Half files of plain data and the run files that complete them, as a run writes them."""
    directory.mkdir(exist_ok=True)
    for step in steps:
        for h in (0, 1):
            atomic_save({"params": torch.full((1000,), float(step))}, half_file(directory, h, step))
        save_run(directory, step, {"epoch": 0, "batch": step}, keep=3, halves=2)


def _flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage,reason",
    [
        (lambda d: _flip_a_bit(half_file(d, 1, 2)), "half1-step00000002.pt does not match"),
        (lambda d: half_file(d, 0, 2).unlink(), "half0-step00000002.pt is missing"),
        (lambda d: run_file(d, 2).write_bytes(run_file(d, 2).read_bytes()[:100]), "truncated"),
    ],
    ids=["bit-flipped half", "missing half", "truncated run file"],
)
def test_a_damaged_newest_checkpoint_is_said_and_the_one_before_resumes(
    tmp_path, caplog, damage, reason
):
    _fake_checkpoints(tmp_path, (1, 2))
    assert latest(tmp_path) == run_file(tmp_path, 2)
    damage(tmp_path)
    with caplog.at_level(logging.WARNING, logger="split_alexnet"):
        assert latest(tmp_path) == run_file(tmp_path, 1)
    (message,) = caplog.messages
    assert message.startswith("checkpoint step 2 is not usable (") and reason in message


def test_metrics_rewind_to_a_checkpoint_moves_later_and_torn_lines_aside(tmp_path):
    metrics = MetricsLog(tmp_path, enabled=True)
    for step in (1, 2, 3):
        metrics.write("train", step, epoch=0, loss=1.0 / step)
    metrics.write("val", 3, epoch=0, top1_error=0.5)
    metrics.write("train", 4, epoch=1, loss=0.2)
    metrics.close()
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"kind": "train", "st')  # a kill mid-write
    # The checkpoint at step 3 resumes epoch 0 at its last batch: validation comes again.
    assert MetricsLog(tmp_path, enabled=False).rewind(0, 3) == 0  # only the main process writes
    assert MetricsLog(tmp_path, enabled=True).rewind(0, 3) == 3
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [(r["kind"], r["step"]) for r in records] == [("train", 1), ("train", 2), ("train", 3)]
    moved = (tmp_path / "metrics.rewound.jsonl").read_text().splitlines()
    assert [json.loads(line)["kind"] for line in moved[:2]] == ["val", "train"]
    assert moved[2] == '{"kind": "train", "st'


def test_a_checkpoint_of_the_retired_never_network_is_one_line(tmp_path: Path) -> None:
    """Its halves decided 500 classes each; today's never_talk is layers-150.cfg's net."""
    torch.save({"format": RUN_FORMAT, "step": 4}, run_file(tmp_path, 4))
    old = {"connectivity": "never", "one_gpu": False, "lrn": True, "num_classes": 1000}
    torch.save({"format": HALF_FORMAT, "half": 0, "variant": old}, half_file(tmp_path, 0, 4))
    with pytest.raises(CheckpointError, match="retired connectivity=never") as error:
        variant_of(run_file(tmp_path, 4))
    assert "\n" not in str(error.value) and "half0-step00000004.pt" in str(error.value)
