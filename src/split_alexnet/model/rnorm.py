"""The 2012 code's same-map response normalisation ("rnorm"; cnorm2a in layers-145.cfg).

Each map is normalised by the squares of its own values in a size×size
spatial window, not by its neighbouring maps as LRN is (Sec. 3.3):

    d_{c,y,x} = 1 + (scale / size²) · Σ_{y' ∈ W(y), x' ∈ W(x)} a_{c,y',x'}²,
    b_{c,y,x} = a_{c,y,x} · d_{c,y,x}^(-power)

W(y) runs from y - size//2 to y - size//2 + size - 1 and stops at the map's
edges; the division by size² is the full window's area at the edges too.
Where each piece comes from:
- scale / size²: layer.py (NormLayerParser.add_params) divides `scale` by
  `size**2` for rnorm, by `size` for cmrnorm.
- the constant 1 (no minDiv): src/layer.cu's ResponseNormLayer::fpropActs calls
  convResponseNorm without one; cuda-convnet's conv_util.cu computes
  `1 + addScale * Σ` (kCNorm_manyfilter, and kCNorm2 for size ≥ 6).
- the window and its edges: conv_util.cu starts it at `-sizeX/2 + px` and
  clips the loop to [0, imgSize).
- the backward: convResponseNormUndo is the exact derivative; autograd's here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from split_alexnet.model.lrn import in_float32_under_autocast


def same_map_response_norm(x: torch.Tensor, size: int, scale: float, power: float) -> torch.Tensor:
    """b = a · (1 + scale · mean of a² over the size×size window)^(-power), on (N, C, H, W).

    The window's mean over its full area, zeros past the edges counted, is the
    code's sum times scale / size².
    """
    if x.dim() != 4:
        raise ValueError(f"rnorm needs (N, C, H, W) input, got shape {tuple(x.shape)}")
    x = in_float32_under_autocast(x)
    before, after = size // 2, (size - 1) // 2
    squares = F.pad(x * x, (before, after, before, after))
    denominator = F.avg_pool2d(squares, size, stride=1) * scale + 1
    return x * denominator.pow(-power)


class SameMapResponseNorm(nn.Module):
    """The 2012 code's rnorm layer: each map normalised within a size×size window of itself."""

    def __init__(self, size: int, scale: float, power: float) -> None:
        super().__init__()
        self.size, self.scale, self.power = size, scale, power

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return same_map_response_norm(x, self.size, self.scale, self.power)

    def extra_repr(self) -> str:
        return f"size={self.size}, scale={self.scale}, power={self.power}"
