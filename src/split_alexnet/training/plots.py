"""A run's pictures: its loss and error curves, and its conv1 kernels after each epoch.

The kernel grid is Figure 3's: 96 kernels in two blocks, one per half. The
Figure 3 command (analysis/) draws its pictures with the same functions.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from split_alexnet.model.split import SplitAlexNet
from split_alexnet.training.metrics import read_metrics

ROWS, GAP, UPSCALE = 3, 1, 6


def unit_rgb(kernels: np.ndarray, lo: np.ndarray | float, hi: np.ndarray | float) -> np.ndarray:
    """(K, 3, H, W) → (K, H, W, 3), lo → 0 and hi → 1 on all three channels alike."""
    span = np.where(np.asarray(hi - lo) > 0, hi - lo, 1.0)
    return np.clip((kernels - lo) / span, 0.0, 1.0).transpose(0, 2, 3, 1)


def scaled(kernels: np.ndarray, per_kernel: bool) -> np.ndarray:
    """(K, H, W, 3) in [0, 1]: one min–max over all kernels and channels, never per channel.

    per_kernel: each kernel symmetric about zero (0 → mid-grey, ±max|w| → 0, 1).
    """
    if per_kernel:
        m = np.abs(kernels).max(axis=(1, 2, 3), keepdims=True)
        return unit_rgb(kernels, -m, m)
    return unit_rgb(kernels, kernels.min(), kernels.max())


def kernel_grid(rgb: np.ndarray, rows: int = ROWS) -> np.ndarray:
    """(K, H, W, 3) tiled as two blocks, one per half, of `rows` rows: (2, h, w, 3)."""
    blocks = []
    for half in np.split(rgb, 2):
        cols = -(-len(half) // rows)
        k, h, w, _ = half.shape
        block = np.ones((rows * (h + GAP) + GAP, cols * (w + GAP) + GAP, 3))
        for i in range(k):
            r, c = divmod(i, cols)
            y, x = GAP + r * (h + GAP), GAP + c * (w + GAP)
            block[y : y + h, x : x + w] = half[i]
        blocks.append(block)
    return np.stack(blocks)


def save_kernel_figure(grid: np.ndarray, title: str, path: Path) -> None:
    n = (grid.shape[2] - GAP) // (11 + GAP) * ROWS
    fig, axes = plt.subplots(2, 1, figsize=(10, 4.6), constrained_layout=True)
    for h, ax in enumerate(axes):
        ax.imshow(grid[h].repeat(UPSCALE, 0).repeat(UPSCALE, 1), interpolation="nearest")
        ax.set_title(
            f"half {h} (GPU {h + 1} in the paper): kernels {h * n}–{(h + 1) * n - 1}", fontsize=10
        )
        ax.set_axis_off()
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(metrics_path: Path, out: Path) -> None:
    """Training loss per step and validation top-1/top-5 error per epoch, as one PNG."""
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


def conv1_kernels(model: SplitAlexNet) -> torch.Tensor:
    """All 96 conv1 kernels, half 0's first, in every process (a collective in a pair)."""
    parts = [half.layer("conv1").weight.detach() for half in model.halves.values()]
    with torch.no_grad():
        return model.exchange.gather(parts, dim=0).cpu()


def save_filters(model: SplitAlexNet, path: Path, epoch: int, is_main: bool) -> None:
    """The Figure 3 picture of this epoch's conv1 kernels: one min–max for all channels.

    Every process of a pair calls it (the gather is a collective); `is_main` draws.
    """
    kernels = conv1_kernels(model)
    if not is_main:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = kernel_grid(scaled(kernels.double().numpy(), per_kernel=False))
    save_kernel_figure(grid, f"conv1 after epoch {epoch}", path)
