"""The plots of the colour statistics and the kernels' luminance/chromatic parts (Agg).

The kernel grid itself is the training run's (training/plots.py). Every plot
shows S of random 48/48 splits beside the S it reports (issue 16): an S means
nothing without the range chance gives it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from split_alexnet.analysis.colour import HalfComparison, luminance_chromatic
from split_alexnet.training.plots import unit_rgb

HALF_COLOURS = ("tab:grey", "tab:orange")
NULL_QUANTILES = (0.5, 0.95, 0.99)


def null_note(null: np.ndarray) -> str:
    """One line: the median, 95th and 99th percentiles of S over random 48/48 splits."""
    median, q95, q99 = np.quantile(null, NULL_QUANTILES)
    return f"random 48/48 splits: S median {median:.3f}, 95 % {q95:.3f}, 99 % {q99:.3f}"


def shade_null(ax: plt.Axes, null: np.ndarray) -> None:
    """Grey bands from 0 to the null's 95th and 99th percentiles of S, on the y axis."""
    _, q95, q99 = np.quantile(null, NULL_QUANTILES)
    shade_quantiles(ax, q95, q99)


def shade_quantiles(ax: plt.Axes, q95: float, q99: float) -> None:
    """`shade_null`'s bands from the percentiles alone (figure3.json keeps only those)."""
    ax.axhspan(0, q99, color="lightgrey", alpha=0.4, lw=0, label="random splits, 99 %")
    ax.axhspan(0, q95, color="grey", alpha=0.3, lw=0, label="random splits, 95 %")


def scaled_parts(kernels: np.ndarray, per_kernel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Luminance-only and chromatic-only parts, both on one symmetric scale (0 → mid-grey).

    The scale is shared by the two parts (globally, or per kernel), so their
    brightness compares and a grey kernel's chromatic part is flat mid-grey.
    """
    luminance, chroma = luminance_chromatic(kernels)
    axes = (1, 2, 3) if per_kernel else None
    m = np.maximum(
        np.abs(luminance).max(axis=axes, keepdims=per_kernel),
        np.abs(chroma).max(axis=axes, keepdims=per_kernel),
    )
    return unit_rgb(luminance, -m, m), unit_rgb(chroma, -m, m)


def save_ci_by_half(
    ci: np.ndarray, stats: HalfComparison, null: np.ndarray, title: str, path: Path
) -> None:
    halves = np.split(ci, 2)
    fig, ax = plt.subplots(figsize=(5, 4.5), constrained_layout=True)
    parts = ax.violinplot(halves, positions=[0, 1], showmedians=True, widths=0.8)
    for body, colour in zip(parts["bodies"], HALF_COLOURS, strict=True):
        body.set_facecolor(colour)
        body.set_alpha(0.3)
    jitter = np.random.default_rng(0)
    for h, values in enumerate(halves):
        x = h + jitter.uniform(-0.12, 0.12, len(values))
        ax.scatter(
            x, values, s=12, color=HALF_COLOURS[h], edgecolor="black", linewidth=0.3, zorder=3
        )
    ax.set_xticks(
        [0, 1], [f"half 0\nmean {stats.mean[0]:.3f}", f"half 1\nmean {stats.mean[1]:.3f}"]
    )
    ax.set_ylabel("chromatic index ‖C‖²/‖W̃‖²")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(
        f"{title}\nAUC {stats.auc:.3f}, S {stats.separation:.3f}, p {stats.p_value:.2g} "
        f"({stats.permutations} permutations)\n{null_note(null)}",
        fontsize=9,
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_ci_vs_frequency(
    ci: np.ndarray,
    freq: np.ndarray,
    stats: HalfComparison,
    null: np.ndarray,
    title: str,
    path: Path,
) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 4.5), constrained_layout=True)
    for h, (c, f) in enumerate(zip(np.split(ci, 2), np.split(freq, 2), strict=True)):
        ax.scatter(
            f, c, s=14, color=HALF_COLOURS[h], edgecolor="black", linewidth=0.3, label=f"half {h}"
        )
    ax.set_xlabel("spatial-frequency centroid (cycles / pixel)")
    ax.set_ylabel("chromatic index")
    ax.set_ylim(-0.03, 1.03)
    ax.legend()
    ax.set_title(f"{title}, S {stats.separation:.3f}\n{null_note(null)}", fontsize=9)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_separation_by_seed(
    groups: dict[str, Sequence[float]], null: np.ndarray, path: Path
) -> None:
    """S per checkpoint for each group (grouped model, control), with mean ± sd."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5), constrained_layout=True)
    shade_null(ax, null)
    for x, values in enumerate(groups.values()):
        v = np.asarray(values, dtype=np.float64)
        ax.scatter(np.full(len(v), x), v, s=25, color=f"C{x}", zorder=3)
        if len(v):
            ax.errorbar(
                x + 0.15, v.mean(), yerr=v.std(ddof=1) if len(v) > 1 else 0, fmt="_k", capsize=4
            )
    ax.set_xticks(range(len(groups)), [f"{k}\n(n={len(v)})" for k, v in groups.items()])
    ax.set_xlim(-0.5, len(groups) - 0.5)
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("separation S = |2·AUC − 1| of the two halves")
    ax.legend(fontsize=7, loc="upper right")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_split_null(observed: dict[str, float], null: np.ndarray, path: Path) -> None:
    """S of the first-48 / last-48 split of each checkpoint against S of random splits."""
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    ax.hist(
        null,
        bins=50,
        range=(0, 1),
        color="lightgrey",
        edgecolor="grey",
        label="random 48/48 splits",
    )
    for i, (name, s) in enumerate(observed.items()):
        ax.axvline(s, color=f"C{i % 10}", label=f"{name}: {s:.3f}")
    ax.set_xlabel("separation S = |2·AUC − 1|")
    ax.set_ylabel("random splits")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_epochs(
    labels: Sequence[str],
    stats: Sequence[HalfComparison],
    delta: Sequence[HalfComparison] | None,
    null: np.ndarray,
    path: Path,
) -> None:
    """Mean CI per half and S against epoch, on W and (when W₀ is known) on ΔW = W − W₀."""
    x = np.arange(len(stats))
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    shade_null(ax, null)
    for h in (0, 1):
        ax.plot(
            x, [s.mean[h] for s in stats], "o-", color=HALF_COLOURS[h], label=f"mean CI, half {h}"
        )
    ax.plot(x, [s.separation for s in stats], "s--", color="tab:blue", label="S on W")
    if delta is not None:
        ax.plot(x, [s.separation for s in delta], "^:", color="tab:red", label="S on ΔW = W − W₀")
    ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=7)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("checkpoint (epoch order)")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=100)
    plt.close(fig)
