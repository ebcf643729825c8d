"""What a run records: top-1/top-5 errors, JSONL, TensorBoard scalars, the curves as a PNG."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from split_alexnet.training.files import atomic_write_text


def topk_wrong(
    scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)
) -> torch.Tensor:
    """How many samples miss the top-k, for each k (the paper reports errors, Sec. 6)."""
    top = scores.topk(max(ks), dim=1).indices
    hit = top == labels[:, None]
    return torch.stack([(~hit[:, :k].any(1)).sum() for k in ks])


class MetricsLog:
    """metrics.jsonl and TensorBoard scalars for one run; written by the main process only."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.enabled = enabled
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def rewind(self, epoch: int, step: int) -> int:
        """Keep only what happened before a checkpoint at (epoch, step); return lines moved.

        A run stopped between two checkpoints logged steps (or an epoch's
        validation) that its resumed self runs again, and a kill mid-write can
        tear the last line; without this, those steps would appear twice. The
        lines are moved to metrics.rewound.jsonl, not deleted: a run whose every
        checkpoint is damaged starts over from step 0, and its record must
        survive that (issue 16 lost an 8,567-step run's curves to it).
        """
        if not self.enabled or not self.path.exists():
            return 0
        kept: list[str] = []
        moved: list[str] = []
        for line in self.path.read_text().splitlines():
            (kept if _before(line, epoch, step) else moved).append(line)
        if moved:
            with self.rewound.open("a") as f:  # before the rewrite: a kill loses nothing
                f.write("".join(f"{line}\n" for line in moved))
            atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))
        return len(moved)

    @property
    def rewound(self) -> Path:
        return self.path.with_name("metrics.rewound.jsonl")

    def write(self, kind: str, step: int, **values: Any) -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, "time": round(time.time(), 3), **values}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        assert self.writer is not None
        for key, value in values.items():
            if isinstance(value, int | float):
                self.writer.add_scalar(f"{kind}/{key}", value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _before(line: str, epoch: int, step: int) -> bool:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return False  # torn by a kill mid-write
    if record["kind"] == "val":
        return record["epoch"] < epoch  # the checkpoint's epoch is validated after it
    return record["step"] <= step


def read_metrics(path: Path) -> list[dict[str, Any]]:
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]
