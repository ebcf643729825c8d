"""One layer as a module: a convolution or product, then its stages in the table's order.

The paper's conv → activation → LRN → pool and fc → activation → dropout, or
the 2012 code's orders (model/table.py, layers-145.cfg). The same block serves
one half (groups = 1, the half's own kernels) and the monolithic reference
(all kernels, `groups` = 2 where the halves do not talk), so the split and the
reference cannot drift apart.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from split_alexnet.model.dropout import PaperDropout
from split_alexnet.model.lrn import LocalResponseNorm
from split_alexnet.model.lrn_pool import lrn_pool
from split_alexnet.model.rnorm import SameMapResponseNorm
from split_alexnet.model.seeds import dropout_seed, init_seed
from split_alexnet.model.table import (
    DROPOUT_P,
    LRN_BETA,
    LRN_K,
    LRN_SIZE,
    RNORM_POWER,
    RNORM_SCALE,
    RNORM_SIZE,
    Layer,
    Variant,
)

# In place: conv and linear keep their inputs for the backward, not their outputs, and
# max-pool keeps its input and indices.
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
        self.layer, self.first_half, self.halves = layer, first_half, halves
        whole_input = layer.reads_both or layer.reads_image or layer.sums_halves
        self.groups = 1 if whole_input else halves
        rows, *rest = layer.weight_shape
        if layer.split_dim == 0:
            rows *= halves
        else:
            rest[0] *= halves
        self.weight = nn.Parameter(torch.empty(rows, *rest))
        self.bias = nn.Parameter(torch.empty(halves * layer.out_per_half))
        stages = list(layer.stages)
        # LRN after a ReLU takes the ReLU in (Sec. 3.3), saving it a pass each way.
        rectify = variant.activation == "relu" and _follows(stages, "act", "lrn")
        if rectify:
            stages.remove("act")
        # LRN then max-pool run as one stage, fused where the kernel can (model/lrn_pool.py).
        if _follows(stages, "lrn", "pool"):
            stages[stages.index("lrn") : stages.index("lrn") + 2] = ["lrn_pool"]
        self.stages = tuple(stages)
        self.activation = _IN_PLACE[variant.activation] if "act" in stages else None
        self.lrn = (
            LocalResponseNorm(
                LRN_SIZE, variant.lrn_alpha, LRN_BETA, LRN_K, groups=halves, rectify=rectify
            )
            if "lrn" in layer.stages
            else None
        )
        self.rnorm = (
            SameMapResponseNorm(RNORM_SIZE, RNORM_SCALE, RNORM_POWER) if "rnorm" in stages else None
        )
        self.pool = variant.pool if "pool" in layer.stages else None
        width = variant.halves * layer.out_per_half
        self.dropout = (
            PaperDropout(
                DROPOUT_P,
                width,
                first_half * layer.out_per_half,
                (first_half + halves) * layer.out_per_half,
                dropout_seed(seed, index),
            )
            if "dropout" in stages
            else None
        )
        self._init(seed, index)

    @torch.no_grad()
    def _init(self, seed: int, index: int) -> None:
        # Sec. 5: weights N(0, 0.01) (0.03 in conv3-5 in layers-145.cfg); biases 1 in conv2,
        # conv4, conv5, fc6, fc7. Each half's slice has its own generator so every layout
        # draws the same weights.
        for slot, weight in enumerate(self.weight.chunk(self.halves, self.layer.split_dim)):
            generator = torch.Generator().manual_seed(
                init_seed(seed, self.first_half + slot, index)
            )
            weight.copy_(torch.randn(weight.shape, generator=generator) * self.layer.weight_std)
        self.bias.fill_(self.layer.bias_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        if layer.kind == "conv":
            if layer.extra_pad:
                x = F.pad(x, (0, layer.extra_pad, 0, layer.extra_pad))
            x = F.conv2d(x, self.weight, self.bias, layer.stride, layer.padding, groups=self.groups)
        else:
            x = self._linear(x.flatten(1))
        for stage in self.stages:
            x = self._stage(stage, x)
        return x

    def _stage(self, stage: str, x: torch.Tensor) -> torch.Tensor:
        if stage == "act":
            return self.activation(x)
        if stage == "lrn":
            return self.normalise(x)
        if stage == "pool":
            return F.max_pool2d(x, *self.pool)
        if stage == "lrn_pool":
            assert self.lrn is not None and self.pool is not None
            return lrn_pool(x, self.lrn, self.pool)
        return getattr(self, stage)(x)  # rnorm, dropout

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """LRN within each half's maps, never across the boundary (Sec. 3.3).

        After a ReLU the module rectifies too: it is given pre-activations.
        """
        assert self.lrn is not None
        return self.lrn(x)

    def _linear(self, x: torch.Tensor) -> torch.Tensor:
        if self.layer.sums_halves:
            # This block's classes' biases, in place among all the layer's outputs: the
            # halves' sum then holds each bias once.
            share = self.layer.out_per_half
            after = (self.layer.halves - self.first_half - self.halves) * share
            return F.linear(x, self.weight, F.pad(self.bias, (self.first_half * share, after)))
        if self.groups == 1:
            return F.linear(x, self.weight, self.bias)
        weight = self.weight.unflatten(0, (self.groups, -1))
        y = torch.einsum("ngi,goi->ngo", x.unflatten(1, (self.groups, -1)), weight)
        return y.flatten(1) + self.bias

    def extra_repr(self) -> str:
        return (
            f"{self.layer.name}: weight {tuple(self.weight.shape)}, groups={self.groups}, "
            f"stages={' → '.join(self.layer.stages)}"
        )


def _follows(stages: list[str], first: str, second: str) -> bool:
    """Whether `second` comes right after `first` in `stages`."""
    return (first, second) in itertools.pairwise(stages)
