"""How far conv1 has moved from its initialisation, per half, and whether the move is split.

The figure is W, but W stays close to W₀ for a long time (issue 16: 1.44× its
initial norm after 1,840 steps) and W₀'s noise has CI ≈ 0.67 in both halves,
so a grey/colour split shows earlier in ΔW = W − W₀ than in W. These numbers
are cheap (96 kernels, no permutations) so training can log them every few
steps; the Figure 3 command adds the permutation p to them.

Halves are given as separate arrays, half 0's 48 kernels then half 1's, in
the layout the model holds them (`SplitAlexNet.halves[h].conv1.weight`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from split_alexnet.analysis.colour import auc, chromatic_index

Kernels = torch.Tensor | np.ndarray


def _float64(kernels: Kernels) -> np.ndarray:
    if isinstance(kernels, torch.Tensor):
        return kernels.detach().to("cpu", torch.float64).numpy()
    return np.asarray(kernels, dtype=np.float64)


def separation(ci: np.ndarray) -> float:
    """S = |2·AUC − 1| of the first half of `ci` against the second; 0 when every CI ties."""
    half = len(ci) // 2
    return abs(2.0 * auc(ci[:half], ci[half:]) - 1.0)


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    # a plain sum, not BLAS: on 17k numbers BLAS's threads cost more than they save
    return float((a * b).sum())


def conv1_diagnostics(
    weight_halves: Sequence[Kernels], initial_halves: Sequence[Kernels]
) -> dict[str, float]:
    """S and mean CI on W and on ΔW = W − W₀, ‖W‖/‖W₀‖ and cos(W, W₀) of each half.

    Keys: "S/W", "S/dW", and per half h "mean_CI/W/half{h}", "mean_CI/dW/half{h}",
    "norm_growth/half{h}", "cos_W_W0/half{h}". A kernel whose ΔW is 0 (or
    constant) has CI 0 (colour.chromatic_index: nothing to measure), so at W = W₀
    every CI(ΔW) ties at 0 and S(ΔW) = 0: no split, not an error.
    """
    if len(weight_halves) != len(initial_halves):
        raise ValueError(f"{len(weight_halves)} halves of W but {len(initial_halves)} of W₀")
    w = [_float64(h) for h in weight_halves]
    w0 = [_float64(h) for h in initial_halves]
    for h, (a, b) in enumerate(zip(w, w0, strict=True)):
        if a.shape != b.shape:
            raise ValueError(f"half {h}: W is {a.shape} but W₀ is {b.shape}")
    ci_w = [chromatic_index(a) for a in w]
    ci_dw = [chromatic_index(a - b) for a, b in zip(w, w0, strict=True)]
    out = {"S/W": separation(np.concatenate(ci_w)), "S/dW": separation(np.concatenate(ci_dw))}
    for h, (a, b) in enumerate(zip(w, w0, strict=True)):
        out[f"mean_CI/W/half{h}"] = float(ci_w[h].mean())
        out[f"mean_CI/dW/half{h}"] = float(ci_dw[h].mean())
        norm, initial_norm = _dot(a, a) ** 0.5, _dot(b, b) ** 0.5
        out[f"norm_growth/half{h}"] = norm / initial_norm if initial_norm > 0 else float("nan")
        out[f"cos_W_W0/half{h}"] = (
            _dot(a, b) / (norm * initial_norm) if norm * initial_norm > 0 else 0.0
        )
    return out
