"""The paper's views of a 256×256 image (Sec. 4.1) and their randomness.

Training: a random 224×224 patch (offsets 0..32 inclusive, as the code's
`randint(0, border*2 + 1)`), reflected with probability ½, then PCA colour noise.
Test: the central patch, or ten patches.

Every random number is a counter-based hash of (seed, epoch, sample index,
draw), so a sample's augmentation does not depend on which worker, rank or
batch produced it. The draws are made on the host (`augmentation`, `corners`);
the pixels are cut, reflected and shifted by batched tensor ops on the device
that holds the whole images (`cut`, `finish`), so a GPU run and a CPU run of
one seed see the same bytes.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from split_alexnet.compiled import OptInKernels, native
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


def corners(views: Views, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners, int64 (N, V), of each sample's patches: the drawn (rows, cols) (N,)
    for "random"; the centre (V = 1) or TEN_VIEW_OFFSETS (V = 5) for the test views."""
    if views == "random":
        return rows[:, None], cols[:, None]
    offsets = np.array([(CENTRE, CENTRE)] if views == "center" else TEN_VIEW_OFFSETS)
    return tuple(np.repeat(offsets[None, :, k], len(rows), axis=0) for k in (0, 1))


def patches(images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """uint8 (N, V, 3, 224, 224): the patches of images (N, 3, 256, 256) whose top-left
    corners are (rows, cols), int64 (N, V) on images' device, cut by one index_select.

    A patch row is 224 consecutive bytes of the batch, so the batch is viewed as
    its overlapping 224-byte windows and the index picks one window per patch
    row: a block copy per row, where indexing each pixel (advanced indexing, or
    gather) is 5-30× slower on the CPU (bench/bench_data.py --cuts).
    """
    n, v = rows.shape
    if n == 0:
        return images.new_empty((0, v, 3, CROP, CROP))
    flat = images.contiguous().view(-1)
    windows = flat.unfold(0, CROP, 1)  # windows[s] = flat[s : s + 224]
    device = images.device
    image = torch.arange(n, device=device).view(n, 1, 1, 1) * images[0].numel()
    channel = torch.arange(3, device=device).view(1, 1, 3, 1) * SIZE * SIZE
    line = (rows.view(n, v, 1, 1) + torch.arange(CROP, device=device)) * SIZE
    starts = image + channel + line + cols.view(n, v, 1, 1)
    return windows.index_select(0, starts.view(-1)).view(n, v, 3, CROP, CROP)


def reflect(views: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """uint8 views (N, 3, 224, 224), each reflected left to right where flips (N,) bool is set."""
    mirrored = views.flip(-1)
    # Chosen 8 pixels at a time (224 = 28 × 8): a uint8 `where` is ~3× slower on the CPU.
    wide = torch.where(flips.view(-1, 1, 1, 1), mirrored.view(torch.int64), views.view(torch.int64))
    return wide.view(torch.uint8)


def cut(
    images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, flips: torch.Tensor, views: Views
) -> torch.Tensor:
    """uint8 views (N, [10,] 3, 224, 224) of images (N, 3, 256, 256): the patches at `corners`,
    reflected where flips (N,) says for "random", or followed by their reflections for "ten"."""
    cuts = patches(images, rows, cols)
    if views == "ten":
        return torch.cat([cuts, cuts.flip(-1)], dim=1)
    return reflect(cuts[:, 0], flips) if views == "random" else cuts[:, 0]


def crop(image, row: int, col: int, flip: bool) -> torch.Tensor:
    """uint8 (3, 224, 224) patch of one (3, 256, 256) array or tensor at (row, col)."""
    corner = torch.tensor([[row]]), torch.tensor([[col]])
    patch = patches(torch.as_tensor(image)[None], *corner)[0, 0]
    return patch.flip(-1) if flip else patch


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
    mean = mean_crop.to(views.device)
    if shift is None or mode == "off":
        return _run(views, mean, None, False)
    shift = shift.to(views.device).view(shift.shape[0], *([1] * (views.dim() - 4)), 3, 1, 1)
    return _run(views, mean, shift, mode == "code")


def _finish(
    views: torch.Tensor, mean: torch.Tensor, shift: torch.Tensor | None, divide: bool
) -> torch.Tensor:
    # A fresh buffer filled by copy_ then in-place ops: uint8 → float promotion inside
    # a binary op is several times slower on CPU than a plain converting copy.
    x = torch.empty(views.shape, dtype=torch.float32, device=views.device).copy_(views)
    x -= mean
    if shift is not None:
        x += shift
        if divide:
            x /= CODE_NOISE_DIVISOR
    return x


KERNELS = OptInKernels("finish", "SPLIT_ALEXNET_COMPILE_DATA")


def compile_finish(enabled: bool = True) -> None:
    """Run `finish` on the CPU as one torch.compile'd loop, and training's random views as
    one C++ pass (`cut_and_finish`, compiled/cut_finish.cpp); off by default.

    Eager, it is three or four passes over the 77 MB float batch of 128
    (convert, mean, shift, divide); compiled, inductor fuses them into one
    loop with each element's operations in the same order, so the values are
    bit-identical (tests/test_data_views.py). After a one-off compile of a few
    seconds per input rank and noise mode (cached on disk across runs) the
    loader runs ~1.3× faster from the cache (docs/data.md). If compiling fails
    (no C++ compiler), or the first batch is not bit-identical to the eager
    passes' (split_alexnet/compiled), it warns once and stays eager. Not on a GPU, where the
    eager ops are cheap and Triton's float division is not eager's. Also set
    by the environment variable SPLIT_ALEXNET_COMPILE_DATA=1.
    """
    KERNELS.enabled = enabled


def cut_and_finish(
    images: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    flips: torch.Tensor,
    views: Views,
    mean_crop: torch.Tensor,
    shift: torch.Tensor | None = None,
    mode: ColourNoise = "off",
) -> torch.Tensor:
    """finish(cut(images, rows, cols, flips, views), mean_crop, shift, mode): the network's
    input. With compile_finish on, training's random views on the CPU are one C++ pass
    (compiled/cut_finish.cpp) that reads each patch row once and writes it once as
    floats, bit-identical to the batched ops; anywhere else, the batched ops."""
    cpu_random = views == "random" and images.device.type == "cpu"
    if cpu_random and KERNELS.enabled and native.load("cut_finish"):
        noisy = shift is not None and mode != "off"
        return torch.ops.split_alexnet.cut_finish(
            images,
            rows.view(-1),
            cols.view(-1),
            flips,
            mean_crop,
            shift if noisy else None,
            CODE_NOISE_DIVISOR if noisy and mode == "code" else None,
        )
    return finish(cut(images, rows, cols, flips, views), mean_crop, shift, mode)


def _run(
    views: torch.Tensor, mean: torch.Tensor, shift: torch.Tensor | None, divide: bool
) -> torch.Tensor:
    if views.device.type != "cpu":
        return _finish(views, mean, shift, divide)
    # One graph for every batch size (an epoch's last batch, validation), as LRN's.
    batched = (views,) if shift is None else (views, shift)
    return KERNELS(
        "finish", _finish, _finish, views, mean, shift, divide, batched=batched, agree=torch.equal
    )
