"""How coloured each conv1 kernel is, and how well that tells the two halves apart (Figure 3).

Kernels are float arrays (K, 3, H, W) in any channel order. The chromatic
index (../shared/PAPER.md, "Figure 3") is CI = ‖C‖²/‖W̃‖²: W̃ is the kernel
minus its mean over all entries, L its projection onto (1,1,1)/√3 at each
pixel, C = W̃ − L. It is 0 for a grey kernel, 1 for an isoluminant one, about
242/362 ≈ 0.67 for noise (the dimensions of the chromatic and the mean-free
subspaces), and invariant to a channel permutation and to any affine change
a·W + b of the weights, which is why it can be read off a rendered picture.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

HALF = 48


def luminance_chromatic(kernels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(L, C) of every kernel: W̃ = L + C, L grey at each pixel, C summing to 0 over channels."""
    w = np.asarray(kernels, dtype=np.float64)
    centred = w - w.mean(axis=(1, 2, 3), keepdims=True)
    luminance = np.broadcast_to(centred.mean(axis=1, keepdims=True), centred.shape).copy()
    return luminance, centred - luminance


def chromatic_index(kernels: np.ndarray) -> np.ndarray:
    """CI = ‖C‖²/‖W̃‖² per kernel, shape (K,); 0 for a constant kernel (nothing to measure)."""
    luminance, chroma = luminance_chromatic(kernels)
    total = (luminance**2).sum(axis=(1, 2, 3)) + (chroma**2).sum(axis=(1, 2, 3))
    c = (chroma**2).sum(axis=(1, 2, 3))
    return np.divide(c, total, out=np.zeros_like(c), where=total > 0)


def frequency_centroid(kernels: np.ndarray, pad: int = 64) -> np.ndarray:
    """Power-weighted mean radial spatial frequency of W̃, cycles per pixel (0 … 0.71), shape (K,).

    The spectrum is summed over channels and taken on a `pad`×`pad` grid, so
    an 11×11 kernel's frequencies are not rounded to multiples of 1/11.
    """
    luminance, chroma = luminance_chromatic(kernels)
    power = (np.abs(np.fft.fft2(luminance + chroma, s=(pad, pad))) ** 2).sum(axis=1)
    f = np.fft.fftfreq(pad)
    radius = np.hypot(f[:, None], f[None, :])
    total = power.sum(axis=(1, 2))
    weighted = (power * radius).sum(axis=(1, 2))
    return np.divide(weighted, total, out=np.zeros_like(weighted), where=total > 0)


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their average rank (as the Mann–Whitney U needs)."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    return (upper - (counts - 1) / 2.0)[inverse.reshape(-1)]


def _auc_from_ranks(ranks: np.ndarray, second: np.ndarray) -> np.ndarray:
    """P(a value in the second group > one in the first) + ½P(tie), for each row of `second`."""
    n2 = second.sum(axis=-1)
    n1 = second.shape[-1] - n2
    u = (ranks * second).sum(axis=-1) - n2 * (n2 + 1) / 2.0
    return u / (n1 * n2)


def auc(first: np.ndarray, second: np.ndarray) -> float:
    """Mann–Whitney AUC: how often a value of `second` exceeds one of `first` (ties count ½)."""
    values = np.concatenate([first, second])
    labels = np.r_[np.zeros(len(first), bool), np.ones(len(second), bool)]
    return float(_auc_from_ranks(_ranks(values), labels))


def separation_null(
    values: np.ndarray, second: np.ndarray, permutations: int, seed: int
) -> tuple[float, np.ndarray]:
    """S = |2·AUC − 1| of the split `second`, and S of `permutations` seeded random relabellings.

    The relabellings keep the group sizes, so for 48/48 they are the random
    splits of the 96 kernels that the control (issue item 2) compares against.
    """
    ranks = _ranks(np.asarray(values, dtype=np.float64))
    second = np.asarray(second, dtype=bool)
    observed = abs(2.0 * float(_auc_from_ranks(ranks, second)) - 1.0)
    rng = np.random.default_rng(seed)
    shuffled = np.argsort(rng.random((permutations, len(values))), axis=1)
    null = np.abs(2.0 * _auc_from_ranks(ranks, second[shuffled]) - 1.0)
    return observed, null


def permutation_p(observed: float, null: np.ndarray) -> float:
    """(1 + #{null ≥ observed}) / (1 + #null): never 0, exact under the null."""
    return float((1 + np.count_nonzero(null >= observed - 1e-12)) / (1 + len(null)))


@dataclass(frozen=True)
class HalfComparison:
    """The colour statistics of one set of 96 kernels, half 0 = kernels 0–47, half 1 = 48–95."""

    mean: tuple[float, float]
    median: tuple[float, float]
    below_0_2: tuple[float, float]
    above_0_5: tuple[float, float]
    auc: float
    separation: float
    p_value: float
    colour_half: int
    permutations: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def compare_halves(ci: np.ndarray, permutations: int = 10_000, seed: int = 0) -> HalfComparison:
    """Per-half summaries of `ci` (K,), and how well CI separates the first K/2 from the rest.

    AUC is P(CI of half 1 > CI of half 0); the colour half is the one with
    the larger CI by that measure; p is the permutation test of S.
    """
    ci = np.asarray(ci, dtype=np.float64)
    half = len(ci) // 2
    if len(ci) != 2 * half or half == 0:
        raise ValueError(f"need an even number of kernels (two halves), got {len(ci)}")
    halves = (ci[:half], ci[half:])
    second = np.arange(len(ci)) >= half
    s, null = separation_null(ci, second, permutations, seed)
    a = auc(*halves)
    return HalfComparison(
        mean=tuple(float(h.mean()) for h in halves),
        median=tuple(float(np.median(h)) for h in halves),
        below_0_2=tuple(float((h < 0.2).mean()) for h in halves),
        above_0_5=tuple(float((h > 0.5).mean()) for h in halves),
        auc=a,
        separation=s,
        p_value=permutation_p(s, null),
        colour_half=int(a > 0.5),
        permutations=permutations,
    )
