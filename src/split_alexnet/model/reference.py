"""The same network as one module: the readable single-device statement of the paper's net.

Grouped convolutions (and grouped fc layers for halves that never talk) stand
where the halves do not exchange maps, and LRN runs within each group, as
Caffe's `group: 2` emulates the two GPUs. Its parameters are exactly the
reference layout, and from the same seed it starts from the split model's weights.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from split_alexnet.model.blocks import Block
from split_alexnet.model.reference_dict import check_reference_state_dict
from split_alexnet.model.table import Variant, layer_table, resolve_variant


class ReferenceAlexNet(nn.Module):
    def __init__(self, variant: Variant | None = None, *, seed: int = 0, **options: object) -> None:
        super().__init__()
        self.variant = resolve_variant(variant, options)
        self.layers = nn.ModuleDict(
            (layer.name, Block(layer, i, self.variant, seed, halves=self.variant.halves))
            for i, layer in enumerate(layer_table(self.variant))
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        for block in self.layers.values():
            x = block(x)
        return x

    def reference_state_dict(self) -> dict[str, torch.Tensor]:
        return {
            f"{name}.{p}": getattr(block, p).detach().clone()
            for name, block in self.layers.items()
            for p in ("weight", "bias")
        }

    @torch.no_grad()
    def load_reference_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        check_reference_state_dict(state, self.variant)
        for name, block in self.layers.items():
            block.weight.copy_(state[f"{name}.weight"])
            block.bias.copy_(state[f"{name}.bias"])
