"""One layer as a module: conv → activation → LRN → pool, or fc → activation → dropout.

The same block serves one half (groups = 1, the half's own kernels) and the
monolithic reference (all kernels, `groups` = 2 where the halves do not talk),
so the split and the reference cannot drift apart.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from split_alexnet.model.dropout import PaperDropout
from split_alexnet.model.lrn import LocalResponseNorm
from split_alexnet.model.seeds import dropout_seed, init_seed
from split_alexnet.model.table import (
    DROPOUT_P,
    INIT_STD,
    LRN_BETA,
    LRN_K,
    LRN_SIZE,
    Layer,
    Variant,
)

# In place: conv and linear keep their inputs for the backward, not their outputs.
_IN_PLACE = {"relu": F.relu_, "tanh": torch.tanh_}


class Block(nn.Module):
    """`layer` for the halves `first_half` .. `first_half + halves - 1`, side by side.

    With halves = 1 this is one half's share of the layer; with halves = 2 it is
    the whole layer, grouped wherever the halves do not exchange maps.
    """

    def __init__(
        self,
        layer: Layer,
        index: int,
        variant: Variant,
        seed: int,
        first_half: int = 0,
        halves: int = 1,
    ) -> None:
        super().__init__()
        self.layer, self.halves = layer, halves
        self.groups = 1 if layer.reads_both or layer.reads_image else halves
        shape = layer.weight_shape
        self.weight = nn.Parameter(torch.empty(halves * shape[0], *shape[1:]))
        self.bias = nn.Parameter(torch.empty(halves * shape[0]))
        # LRN follows the ReLU (Sec. 3.3); it takes the ReLU in, saving it a pass each way.
        rectify = layer.lrn and layer.activation and variant.activation == "relu"
        self.activation = None if rectify or not layer.activation else _IN_PLACE[variant.activation]
        self.lrn = (
            LocalResponseNorm(
                LRN_SIZE, variant.lrn_alpha, LRN_BETA, LRN_K, groups=halves, rectify=rectify
            )
            if layer.lrn
            else None
        )
        self.pool = variant.pool if layer.pool else None
        width = variant.halves * layer.out_per_half
        self.dropout = (
            PaperDropout(
                DROPOUT_P,
                width,
                first_half * layer.out_per_half,
                (first_half + halves) * layer.out_per_half,
                dropout_seed(seed, index),
            )
            if layer.dropout
            else None
        )
        self._init(seed, index, first_half)

    @torch.no_grad()
    def _init(self, seed: int, index: int, first_half: int) -> None:
        # Sec. 5: weights N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6, fc7.
        # Each half's slice has its own generator so every layout draws the same weights.
        for slot, weight in enumerate(self.weight.chunk(self.halves)):
            generator = torch.Generator().manual_seed(init_seed(seed, first_half + slot, index))
            weight.copy_(torch.randn(weight.shape, generator=generator) * INIT_STD)
        self.bias.fill_(self.layer.bias_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        if layer.kind == "conv":
            if layer.extra_pad:
                x = F.pad(x, (0, layer.extra_pad, 0, layer.extra_pad))
            x = F.conv2d(x, self.weight, self.bias, layer.stride, layer.padding, groups=self.groups)
        else:
            x = self._linear(x.flatten(1))
        if self.activation is not None:
            x = self.activation(x)
        if self.lrn is not None:
            x = self.normalise(x)
        if self.pool is not None:
            x = F.max_pool2d(x, *self.pool)
        if self.dropout is not None:
            x = self.dropout(x)
        return x

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """LRN within each half's maps, never across the boundary (Sec. 3.3).

        After a ReLU the module rectifies too: it is given pre-activations.
        """
        assert self.lrn is not None
        return self.lrn(x)

    def _linear(self, x: torch.Tensor) -> torch.Tensor:
        if self.groups == 1:
            return F.linear(x, self.weight, self.bias)
        weight = self.weight.unflatten(0, (self.groups, -1))
        y = torch.einsum("ngi,goi->ngo", x.unflatten(1, (self.groups, -1)), weight)
        return y.flatten(1) + self.bias

    def extra_repr(self) -> str:
        return f"{self.layer.name}: weight {tuple(self.weight.shape)}, groups={self.groups}"
