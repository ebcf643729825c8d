"""What a run records: top-1/top-5 errors, JSONL, TensorBoard scalars, the curves as a PNG."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch


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


def read_metrics(path: Path) -> list[dict[str, Any]]:
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]
