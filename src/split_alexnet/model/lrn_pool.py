"""ReLU, LRN and max-pooling as one stage: conv1's and conv2's tail (Sec. 3.3-3.4).

Apart, the three are full passes over the network's largest maps, and autograd
keeps LRN's input, output and denominator and max-pool's 64-bit indices for
the backward. On the CPU they can run as one hand-written kernel
(compiled/lrn_pool.cpp): one pass reads the convolution's output and writes
the pooled maps and a byte per pooled value saying where its maximum was; the
backward recomputes LRN image by image from the convolution's output, the one
full-size tensor it keeps. The kernel computes each value with the same operations
in the same order as the eager path (model/lrn.py, then F.max_pool2d), each
correctly rounded; it differs from the eager path only where torch's own
vectorised sqrt is off by an ulp (tests/test_lrn_pool.py bounds the difference).

On in training (`fuse_lrn_pool=true`, the TrainConfig default); for the
library off by default, like compile_lrn: `fuse_lrn_pool(True)` or
SPLIT_ALEXNET_FUSE_LRN_POOL=1. The first use builds the kernel
(about 10 s, cached on disk); where it cannot be built, on a GPU, or for a
window other than the paper's (n = 5, beta = 0.75), the stages run apart.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from split_alexnet.compiled import native
from split_alexnet.model.lrn import LocalResponseNorm, in_float32_under_autocast

_enabled = os.environ.get("SPLIT_ALEXNET_FUSE_LRN_POOL", "0") == "1"


def fuse_lrn_pool(enabled: bool = True) -> None:
    """Run LRN and the max-pool after it as one C++ kernel on the CPU (off by default)."""
    global _enabled
    _enabled = enabled


def lrn_pool(x: torch.Tensor, lrn: LocalResponseNorm, pool: tuple[int, int]) -> torch.Tensor:
    """F.max_pool2d(lrn(x), *pool): LRN (with its ReLU where `lrn.rectify`), then max-pool."""
    x = in_float32_under_autocast(x)
    if not _fusable(x, lrn):
        return F.max_pool2d(lrn(x), *pool)
    kernel, stride = pool
    return _LRNPool.apply(
        x, lrn.groups, lrn.size, lrn.alpha, lrn.beta, lrn.k, kernel, stride, lrn.rectify
    )


def _fusable(x: torch.Tensor, lrn: LocalResponseNorm) -> bool:
    return (
        _enabled
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and x.dim() == 4
        and (lrn.size, lrn.beta) == (5, 0.75)
        and native.load("lrn_pool")
    )


class _LRNPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, *lrn_and_pool):
        pooled, where = torch.ops.split_alexnet.lrn_pool(x, *lrn_and_pool)
        # All the backward reads: the convolution's output and a byte per pooled value
        # (apart, LRN keeps a, b and d, and max-pool b and 64-bit indices).
        ctx.save_for_backward(x, where)
        ctx.lrn_and_pool = lrn_and_pool
        return pooled

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, where = ctx.saved_tensors
        grad_x = torch.ops.split_alexnet.lrn_pool_backward(grad, x, where, *ctx.lrn_and_pool)
        return grad_x, *[None] * len(ctx.lrn_and_pool)
