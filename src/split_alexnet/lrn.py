"""Local response normalisation across channels (Sec. 3.3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def local_response_norm(
    x: torch.Tensor, size: int, alpha: float, beta: float, k: float
) -> torch.Tensor:
    """b_c = a_c / (k + alpha * sum_{|j-c| <= size//2} a_j^2) ** beta, zero-padded at the ends.

    `alpha` multiplies the window sum as it stands: pass alpha/size for the
    network as trained (layer.py `scale /= size`), alpha for the printed formula.
    """
    # F.local_response_norm divides its alpha by size; undo that.
    return F.local_response_norm(x, size, alpha * size, beta, k)


class LocalResponseNorm(nn.Module):
    """LRN over the channels of the tensor it is given: one half's own maps."""

    def __init__(self, size: int, alpha: float, beta: float, k: float) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
