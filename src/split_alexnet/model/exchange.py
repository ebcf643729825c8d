"""Where the halves meet: the paper's inter-GPU communication as two-sided operations.

Three operations, each joining the halves' outputs with the backward that
the use of the joined tensor calls for:

- `gather`:        forward all-gather, backward reduce-scatter (sum).
  Each half feeds the gathered maps into its own half of the next layer, so
  each produces only part of the gradient with respect to them.
- `gather_logits`: forward all-gather, backward keeps the local slice.
  Every rank turns the same gathered logits into the same loss, so each
  already holds the whole gradient; summing would double it.
- `sum_logits`:    forward all-reduce (sum), backward identity.
  The 2012 code's fc1000 (layers-145.cfg, layers-150.cfg) has one weight
  matrix per input, hs2a and hs2b; here each half holds the one for its own
  fc7 and the halves' partial logits are summed. Every rank turns the same
  sum into the same loss, so each already holds the whole gradient of its
  partial logits, which is the gradient of the sum; summing would double it.

`LocalExchange` does this in one process that holds both halves (emulation);
`split_alexnet.parallel.collectives.ProcessGroupExchange` between two processes, one
half each. The model is given one of them and never learns which.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch


class Exchange(Protocol):
    """The halves held by this process and how their outputs are joined."""

    halves: tuple[int, ...]
    bytes_received: int  # from the other process, forward and backward (the paper's PCIe)

    def gather(self, parts: Sequence[torch.Tensor], dim: int) -> torch.Tensor:
        """forward: all-gather along `dim`; backward: reduce-scatter (sum)."""
        ...

    def gather_logits(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        """forward: all-gather along dim 1; backward: keep the local slice."""
        ...

    def sum_logits(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        """forward: all-reduce (sum); backward: identity."""
        ...


class LocalExchange:
    """Both halves in this process: joining them is a concatenation.

    Autograd sums the gradients that both halves send back through the
    concatenation, which is the reduce-scatter of the two-process run; the
    logits' gradient reaches each half's slice once, as in `gather_logits`,
    and each half's partial logits once through a sum, as in `sum_logits`.
    """

    def __init__(self, halves: int = 2) -> None:
        self.halves = tuple(range(halves))
        self.bytes_received = 0  # both halves are here: nothing crosses a link

    def gather(self, parts: Sequence[torch.Tensor], dim: int) -> torch.Tensor:
        return torch.cat(list(parts), dim)

    def gather_logits(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(parts), 1)

    def sum_logits(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        return sum(parts[1:], parts[0])
