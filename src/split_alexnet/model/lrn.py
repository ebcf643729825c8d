"""Local response normalisation across channels (Sec. 3.3), with a hand-derived backward.

    d_c = k + alpha * sum_{j in W(c)} a_j^2,    b_c = a_c * d_c^(-beta)

W(c) runs from c - size//2 to c + (size-1)//2, zero-padded at the ends of the
channel range (for odd sizes the paper's c-n/2 .. c+n/2; for even sizes the
same window as torch.nn.LocalResponseNorm). Since W is symmetric for odd sizes
(and mirrored for even ones), the backward is

    dL/da_j = g_j d_j^(-beta) - 2 alpha beta a_j * sum_{c: j in W(c)} g_c b_c / d_c

which is one more window sum. With `rectify` the ReLU in front of LRN (the
paper applies LRN after it, Sec. 3.3) is folded in: the input is the
pre-activation y, a = max(y, 0), and the backward is the one above masked
where y <= 0. The compiled kernels then spend no pass of their own on the
ReLU, forward or backward. torch's own F.local_response_norm builds the
window with avg_pool3d on a padded 5-d copy and lets autograd differentiate
pow, div and the pooling: about ten full-size intermediates and the slowest
part of the paper's step. Here the window sum is a few shifted in-place adds,
the forward keeps one tensor for the backward (d) beyond the input and output
that ReLU and max-pooling keep anyway, and the backward makes two
temporaries.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from split_alexnet.compiled import OptInKernels


def _window_sum(x: torch.Tensor, dim: int, before: int, after: int) -> torch.Tensor:
    """sum_{j = c - before}^{c + after} x_j along `dim`, zero outside the range; a new tensor."""
    out = x.clone(memory_format=torch.preserve_format)
    channels = x.shape[dim]
    for shift in range(1, before + 1):
        if shift < channels:
            out.narrow(dim, shift, channels - shift).add_(x.narrow(dim, 0, channels - shift))
    for shift in range(1, after + 1):
        if shift < channels:
            out.narrow(dim, 0, channels - shift).add_(x.narrow(dim, shift, channels - shift))
    return out


def _window(size: int) -> tuple[int, int]:
    # torch.nn.LocalResponseNorm pads size//2 in front and (size-1)//2 behind.
    return size // 2, (size - 1) // 2


def _scale(d: torch.Tensor, beta: float, scratch: torch.Tensor) -> torch.Tensor:
    """d^(-beta) as a new tensor, overwriting `scratch` (same shape as d).

    beta = 0.75 (the paper's) as 1 / (sqrt(d) * sqrt(sqrt(d))): correctly rounded
    steps, several times faster than pow on CPU. (rsqrt is not used: on CPU
    its result depends on the thread count, enough to move conv1's bias
    gradient by 1e-3 relative in float32.)
    """
    if beta == 0.75:
        s = torch.sqrt(d)
        return s.mul_(torch.sqrt(s, out=scratch)).reciprocal_()
    return d.pow(-beta)


# Each forward kernel returns (b, d, the tensor the backward reads as a): the
# eager one keeps a = max(y, 0), which it has built anyway; the fused one keeps
# y and rectifies it again in the backward, in registers. The backward is right
# for either: where the ReLU passes, a = y, and elsewhere it writes zero.


def _eager_forward(x, dim, before, after, alpha, beta, k, rectify: bool):
    a = x.clamp_min(0) if rectify else x
    squares = a * a
    d = _window_sum(squares, dim, before, after).mul_(alpha).add_(k)
    return _scale(d, beta, scratch=squares).mul_(a), d, a


def _eager_backward(grad, x, out, d, dim, before, after, alpha, beta, rectify: bool):
    ratio = torch.mul(grad, out).div_(d)
    # The window seen from a_j is W mirrored: j - after .. j + before.
    t = _window_sum(ratio, dim, after, before)
    # g d^-beta = g b / a is unsafe at a = 0: use d^-beta directly.
    grad_x = _scale(d, beta, scratch=ratio).mul_(grad)
    grad_x.addcmul_(t, x, value=-2 * alpha * beta)
    # ReLU's own backward kernel: masked_fill_ and where with a bool mask are ~5x slower.
    return torch.ops.aten.threshold_backward(grad_x, x, 0) if rectify else grad_x


def _shifted_sum(x, dim: int, before: int, after: int):
    """The window sum written out of place, for torch.compile to fuse into one loop."""
    channels = x.shape[dim]
    pad = [0, 0] * (x.dim() - 1 - dim) + [before, after]
    padded = torch.nn.functional.pad(x, pad)
    total = padded.narrow(dim, 0, channels)
    for shift in range(1, before + after + 1):
        total = total + padded.narrow(dim, shift, channels)
    return total


def _power(d, beta: float):
    if beta == 0.75:
        s = torch.sqrt(d)
        return 1 / (s * torch.sqrt(s))
    return d.pow(-beta)


def _fused_forward(x, dim, before, after, alpha, beta, k, rectify: bool):
    a = x.clamp_min(0) if rectify else x
    d = _shifted_sum(a * a, dim, before, after) * alpha + k
    return a * _power(d, beta), d, x


def _fused_backward(grad, x, out, d, dim, before, after, alpha, beta, rectify: bool):
    t = _shifted_sum(grad * out / d, dim, after, before)
    grad_x = grad * _power(d, beta) - (2 * alpha * beta) * x * t
    return torch.where(x > 0, grad_x, 0.0) if rectify else grad_x


KERNELS = OptInKernels("LRN", "SPLIT_ALEXNET_COMPILE_LRN")


def compile_lrn(enabled: bool = True) -> None:
    """Run LRN's forward and backward as torch.compile'd fused kernels (off by default).

    On this project's 2-core CPU the fused kernels are about 4x faster than the
    eager ones at batch 128, after a one-off compile of 10-30 s per input shape
    and dtype (cached on disk across runs). If compiling fails (no C++
    compiler, no Triton on a GPU), or a kernel's first result is far from the
    eager one's (split_alexnet/compiled), LRN warns once and stays eager. Also set by
    the environment variable SPLIT_ALEXNET_COMPILE_LRN=1.
    """
    KERNELS.enabled = enabled


def _agree(compiled, eager) -> bool:
    """Within 1e-4 of the eager result, normwise: the fused kernels round differently
    (tests/test_lrn.py), so this catches gross errors only. The forward's b and d, or the
    backward's gradient."""
    pairs = (
        [(compiled, eager)] if torch.is_tensor(eager) else zip(compiled[:2], eager[:2], strict=True)
    )
    return all(
        bool(torch.linalg.vector_norm(c - e) <= 1e-4 * torch.linalg.vector_norm(e))
        for c, e in pairs
    )


def _run(name: str, eager, fused, *args):
    batched = [a for a in args if torch.is_tensor(a)]
    return KERNELS(name, eager, fused, *args, batched=batched, agree=_agree)


class _LocalResponseNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim: int, size: int, alpha: float, beta: float, k: float, rectify: bool):
        before, after = _window(size)
        out, d, a = _run(
            "forward",
            _eager_forward,
            _fused_forward,
            x,
            dim,
            before,
            after,
            alpha,
            beta,
            k,
            rectify,
        )
        ctx.save_for_backward(a, out, d)
        ctx.lrn = dim, before, after, alpha, beta, rectify
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, out, d = ctx.saved_tensors
        if grad.stride() != x.stride():
            grad = torch.empty_like(x).copy_(grad)
        grad_x = _run("backward", _eager_backward, _fused_backward, grad, x, out, d, *ctx.lrn)
        return grad_x, None, None, None, None, None, None


def in_float32_under_autocast(x: torch.Tensor) -> torch.Tensor:
    """`x` in float32 if autocast made it half precision, as it is, otherwise.

    A window sum of squares in float32 on every device: bf16's 8-bit mantissa
    would round away the small neighbours next to a large one.
    """
    if torch.is_autocast_enabled(x.device.type) and x.dtype in (torch.bfloat16, torch.float16):
        return x.float()
    return x


def local_response_norm(
    x: torch.Tensor,
    size: int,
    alpha: float,
    beta: float,
    k: float,
    *,
    groups: int = 1,
    rectify: bool = False,
) -> torch.Tensor:
    """b_c = a_c / (k + alpha * sum_{|j-c| <= size//2} a_j^2) ** beta, zero-padded at the ends.

    `alpha` multiplies the window sum as it stands: pass alpha/size for the
    network as trained (layer.py `scale /= size`), alpha for the printed formula.
    `groups` normalises each of that many equal runs of channels on its own
    (the halves of the monolithic reference), never across their boundaries.
    `rectify` takes pre-activations and normalises a = max(x, 0): ReLU and LRN
    in one pass (the result equals LRN after F.relu, value and gradient).
    Works on (N, C, ...) tensors of any memory layout, on any device.
    """
    if x.dim() < 2:
        raise ValueError(f"LRN needs (N, C, ...) input, got shape {tuple(x.shape)}")
    channels = x.shape[1]
    if channels % groups:
        raise ValueError(f"{channels} channels do not split into {groups} groups")
    x = in_float32_under_autocast(x)
    if groups == 1:
        return _LocalResponseNorm.apply(x, 1, size, alpha, beta, k, rectify)
    # A view in any layout (NCHW or channels_last); the window runs along dim 2.
    grouped = x.unflatten(1, (groups, channels // groups))
    return _LocalResponseNorm.apply(grouped, 2, size, alpha, beta, k, rectify).flatten(1, 2)


class LocalResponseNorm(nn.Module):
    """LRN over the channels of the tensor it is given, or within each of `groups` runs.

    With `rectify`, ReLU then LRN: the module takes pre-activations.
    """

    def __init__(
        self,
        size: int,
        alpha: float,
        beta: float,
        k: float,
        groups: int = 1,
        rectify: bool = False,
    ) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k
        self.groups, self.rectify = groups, rectify

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return local_response_norm(
            x, self.size, self.alpha, self.beta, self.k, groups=self.groups, rectify=self.rectify
        )

    def extra_repr(self) -> str:
        return (
            f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, "
            f"groups={self.groups}, rectify={self.rectify}"
        )
