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


def plot_curves(metrics_path: Path, out: Path) -> None:
    """Training loss per step and validation top-1/top-5 error per epoch, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1)
    left.set(xlabel="step", ylabel="training loss (cross-entropy)", title="loss")
    for key in ("top1_error", "top5_error"):
        right.plot([r["epoch"] for r in val], [100 * r[key] for r in val], marker="o", label=key)
    right.set(xlabel="epoch", ylabel="validation error (%)", title="validation", ylim=(0, 100))
    right.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
