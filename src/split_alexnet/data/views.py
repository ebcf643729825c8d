"""The paper's views of a 256×256 image (Sec. 4.1) and their randomness.

Training: a random 224×224 patch (offsets 0..32 inclusive, as the code's
`randint(0, border*2 + 1)`), reflected with probability ½, then PCA colour noise.
Test: the central patch, or ten patches.

Every random number is a counter-based hash of (seed, epoch, sample index,
draw), so a sample's augmentation does not depend on which worker, rank or
batch produced it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from split_alexnet.data.folder import CROP, SIZE

BORDER = SIZE - CROP  # 32: offsets run 0..BORDER inclusive
CENTRE = BORDER // 2
NOISE_STD = 0.1  # Sec. 4.1: α_i ~ N(0, 0.1)
CODE_NOISE_DIVISOR = 1.1  # convdata.py: `cropped /= 1.0 + self.color_noise_coeff`

# The code's order (convdata.py, CroppedImageNetDP.__trim_borders): top-left,
# top-right, centre, bottom-left, bottom-right as (row, column) offsets; views
# 5..9 are views 0..4 reflected left-right.
TEN_VIEW_OFFSETS = ((0, 0), (0, BORDER), (CENTRE, CENTRE), (BORDER, 0), (BORDER, BORDER))

Views = Literal["random", "center", "ten"]
ColourNoise = Literal["paper", "code", "off"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijection of uint64 with good avalanche."""
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def uniforms(seed: int, epoch: int, indices: np.ndarray, draws: int) -> np.ndarray:
    """(len(indices), draws) floats in [0, 1), a pure function of their arguments."""
    with np.errstate(over="ignore"):
        key = _mix(_mix(np.array([seed], dtype=np.uint64)) ^ np.uint64(epoch))
        base = _mix(key ^ np.asarray(indices, dtype=np.uint64))
        h = _mix(base[:, None] ^ (np.arange(draws, dtype=np.uint64) * _GOLDEN)[None, :])
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def augmentation(seed: int, epoch: int, indices: np.ndarray):
    """Per sample: crop row offset, column offset (0..32), flip (bool), α (3,) ~ N(0, 0.1)."""
    u = uniforms(seed, epoch, indices, 9)
    rows = np.minimum((u[:, 0] * (BORDER + 1)).astype(np.int64), BORDER)
    cols = np.minimum((u[:, 1] * (BORDER + 1)).astype(np.int64), BORDER)
    flips = u[:, 2] < 0.5
    # Box–Muller on three pairs of uniforms; 1 - u keeps log away from 0.
    radius = np.sqrt(-2.0 * np.log1p(-u[:, 3:6]))
    alpha = NOISE_STD * radius * np.cos(2.0 * np.pi * u[:, 6:9])
    return rows, cols, flips, alpha.astype(np.float32)


def crop_into(dest: np.ndarray, image, row: int, col: int, flip: bool) -> None:
    """Write the 224×224 patch of a (3, 256, 256) image at (row, col) into dest (3, 224, 224)."""
    patch = np.asarray(image)[:, row : row + CROP, col : col + CROP]
    dest[...] = patch[..., ::-1] if flip else patch


def ten_views_into(dest: np.ndarray, image) -> None:
    """dest (10, 3, 224, 224): the five patches of TEN_VIEW_OFFSETS, then their reflections."""
    for k, (row, col) in enumerate(TEN_VIEW_OFFSETS):
        crop_into(dest[k], image, row, col, False)
        crop_into(dest[k + 5], image, row, col, True)


def crop(image, row: int, col: int, flip: bool) -> torch.Tensor:
    """uint8 (3, 224, 224) patch of a (3, 256, 256) array or tensor at (row, col)."""
    out = np.empty((3, CROP, CROP), dtype=np.uint8)
    crop_into(out, image, row, col, flip)
    return torch.from_numpy(out)


def ten_views(image) -> torch.Tensor:
    """uint8 (10, 3, 224, 224), in the order of `ten_views_into`."""
    out = np.empty((10, 3, CROP, CROP), dtype=np.uint8)
    ten_views_into(out, image)
    return torch.from_numpy(out)


def colour_shift(
    alpha: torch.Tensor, eigenvalues: torch.Tensor, eigenvectors: torch.Tensor, mode: ColourNoise
) -> torch.Tensor:
    """(N, 3) RGB shift in 0–255 units for draws α (N, 3); eigen* from 0–255 pixel values.

    "paper": Σ_i p_i α_i λ_i with pixels in [0, 1], the reading under which the
    widely quoted ImageNet λ = (0.2175, 0.0188, 0.0045) are used; the formula is
    not unit-free, and with 0–255 pixels it would shift by ~10³. In 0–255 units:
    255 · Σ p_i α_i (λ_i / 255²).
    "code": Σ_i p_i α_i √λ_i (convdata.py scales randn by `color_pca[0]`, named
    stdevs, times color_noise = 0.1); the caller then divides by 1.1.
    """
    if mode == "paper":
        scale = eigenvalues / 255.0
    elif mode == "code":
        scale = eigenvalues.clamp_min(0).sqrt()
    else:
        raise ValueError(f"colour noise {mode!r} has no shift")
    return (alpha * scale) @ eigenvectors.T


def finish(
    views: torch.Tensor,
    mean_crop: torch.Tensor,
    shift: torch.Tensor | None = None,
    mode: ColourNoise = "off",
) -> torch.Tensor:
    """uint8 views (N, [10,] 3, 224, 224) → float32 network input in 0–255 units.

    Subtracts the mean image's central crop (convdata.py `data_mean_crop`); adds
    the colour shift (N, 3) to every pixel; the code variant then divides by 1.1.
    """
    # A fresh buffer filled by copy_ then in-place ops: uint8 → float promotion inside
    # a binary op is several times slower on CPU than a plain converting copy.
    x = torch.empty(views.shape, dtype=torch.float32, device=views.device).copy_(views)
    x -= mean_crop.to(views.device)
    if shift is not None and mode != "off":
        x += shift.to(x.device).view(shift.shape[0], *([1] * (x.dim() - 4)), 3, 1, 1)
        if mode == "code":
            x /= CODE_NOISE_DIVISOR
    return x
