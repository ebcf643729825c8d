"""The exchange between two processes: all-gather or all-reduce forward, and their backwards.

The two-process counterpart of `split_alexnet.model.exchange.LocalExchange`, on
public torch.distributed collectives (gloo on CPU, NCCL on GPU). Buffers are
allocated on the input's device, never on a hard-coded one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

# torch 2.14 renamed the single-tensor collectives and deprecated the old names;
# the old names are all that torch 2.4–2.13 have.
_all_gather = getattr(dist, "all_gather_single", dist.all_gather_into_tensor)
_reduce_scatter = getattr(dist, "reduce_scatter_single", dist.reduce_scatter_tensor)


def gather_pair(x: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
    """Both ranks' `x` concatenated along dim 0 (rank 0's first), on `x`'s device.

    No autograd: the exchange wraps it, and the data loader gathers uint8 views with it.
    """
    x = x.contiguous()
    # Concatenated along dim 0: the form gloo accepts.
    joined = x.new_empty((dist.get_world_size(group) * x.shape[0], *x.shape[1:]))
    _all_gather(joined, x, group=group)
    return joined


class ProcessGroupExchange:
    """One half in this process; the other half is the other rank of `group`.

    Counts the bytes this rank receives, forward and backward, in
    `bytes_received` (the figure the paper's PCIe link carried).
    """

    def __init__(self, group: dist.ProcessGroup | None = None) -> None:
        size = dist.get_world_size(group)
        if size != 2:
            raise ValueError(
                f"a split AlexNet pair needs a model-parallel group of 2 ranks, got {size}"
            )
        self.group = group
        self.rank = dist.get_rank(group)
        self.halves = (self.rank,)
        self.bytes_received = 0

    def gather(self, parts: Sequence[torch.Tensor], dim: int) -> torch.Tensor:
        (part,) = parts
        return _GatherScatterBack.apply(part, dim, self)

    def gather_logits(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        (part,) = parts
        return _GatherKeepSlice.apply(part, 1, self)

    def sum_logits(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        (part,) = parts
        return _AllReduceKeepGrad.apply(part, self)

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Both ranks' `x` summed, on every rank (a new tensor)."""
        total = x.clone()
        dist.all_reduce(total, group=self.group)
        self.bytes_received += x.numel() * x.element_size()
        return total

    def all_gather(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """The two halves' `x` concatenated along `dim`, rank 0's first, in `x`'s memory layout."""
        order = _physical_order(x)
        at = order.index(dim)
        joined = gather_pair(x.permute(order), self.group)
        self.bytes_received += x.numel() * x.element_size()
        joined = joined.unflatten(0, (2, -1)).movedim(0, at).flatten(at, at + 1)
        return joined.permute(_inverse(order))

    def reduce_scatter(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """Sum both ranks' `x` and keep this rank's slice along `dim`, in `x`'s memory layout."""
        order = _physical_order(x)
        at = order.index(dim)
        stacked = x.permute(order).unflatten(at, (2, -1)).movedim(at, 0).contiguous()
        out = stacked.new_empty(stacked.shape[1:])
        _reduce_scatter(out, stacked.flatten(0, 1), group=self.group)
        self.bytes_received += out.numel() * out.element_size()
        return out.permute(_inverse(order))

    def keep_slice(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        return x.chunk(2, dim)[self.rank].contiguous()


def _physical_order(x: torch.Tensor) -> list[int]:
    """x's dims from outermost to innermost in memory: (0, 2, 3, 1) for channels_last.

    The collectives run on x.permute(order), which is contiguous without a copy,
    so a channels_last activation is exchanged and handed on as channels_last.
    The batch stays outermost, where the all-gather concatenates.
    """
    if (
        x.dim() == 4
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
    ):
        return [0, 2, 3, 1]
    return list(range(x.dim()))


def _inverse(order: list[int]) -> list[int]:
    return sorted(range(len(order)), key=order.__getitem__)


class _AllGather(torch.autograd.Function):
    """forward: all-gather along `dim`; the backward is the subclass's."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, dim: int, link: ProcessGroupExchange) -> torch.Tensor:
        ctx.dim, ctx.link = dim, link
        return link.all_gather(x, dim)


class _GatherScatterBack(_AllGather):
    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return ctx.link.reduce_scatter(grad, ctx.dim), None, None


class _GatherKeepSlice(_AllGather):
    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return ctx.link.keep_slice(grad, ctx.dim), None, None


class _AllReduceKeepGrad(torch.autograd.Function):
    """forward: all-reduce (sum); backward: identity (every rank holds the whole gradient)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, link: ProcessGroupExchange) -> torch.Tensor:
        return link.all_reduce(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None
