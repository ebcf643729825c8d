"""The paper's network as two halves that meet only where its two GPUs talked.

Each `Half` holds exactly its half of every layer's kernels. `SplitAlexNet`
runs the halves this process holds, layer by layer, and hands their outputs to
an injected `Exchange` in front of every layer that reads both halves (the
paper's conv3, fc6, fc7, fc8) and at the logits: gathered, or summed where
each half holds fc8's weights for its own fc7 (the 2012 code's fc1000, see
`Layer.sums_halves`). Whether the other half lives in this process or in
another one is the exchange's business alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn

from split_alexnet.model.blocks import Block
from split_alexnet.model.dropout import PaperDropout
from split_alexnet.model.exchange import Exchange, LocalExchange
from split_alexnet.model.reference_dict import check_reference_state_dict
from split_alexnet.model.table import Layer, Variant, layer_table, resolve_variant

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup


class Half(nn.Module):
    """One half ("GPU 0" or "GPU 1") of every layer: conv1 … fc8."""

    def __init__(self, variant: Variant, index: int, seed: int) -> None:
        super().__init__()
        self.index = index
        for i, layer in enumerate(layer_table(variant)):
            self.add_module(layer.name, Block(layer, i, variant, seed, first_half=index))

    def layer(self, name: str) -> Block:
        return self.get_submodule(name)


class SplitAlexNet(nn.Module):
    """The halves this process holds, joined by `exchange`.

    `model(images)` returns the full (N, num_classes) logits in every process.
    Parameters are named halves.<h>.<layer>.<weight|bias>, so a process's
    state dict names the halves it holds.
    """

    def __init__(
        self,
        exchange: Exchange,
        variant: Variant | None = None,
        *,
        seed: int = 0,
        **options: object,
    ) -> None:
        super().__init__()
        self.variant = resolve_variant(variant, options)
        self.table: tuple[Layer, ...] = layer_table(self.variant)
        self.exchange = exchange
        if max(exchange.halves) >= self.variant.halves:
            raise ValueError(
                f"this network has {self.variant.halves} half(s), "
                f"the exchange holds halves {exchange.halves}"
            )
        self.halves = nn.ModuleDict((str(h), Half(self.variant, h, seed)) for h in exchange.halves)

    @classmethod
    def emulated(
        cls, variant: Variant | None = None, *, seed: int = 0, **options: object
    ) -> SplitAlexNet:
        """Both halves in this process, joined by concatenation."""
        variant = resolve_variant(variant, options)
        return cls(LocalExchange(variant.halves), variant, seed=seed)

    @classmethod
    def distributed(
        cls,
        group: ProcessGroup | None = None,
        variant: Variant | None = None,
        *,
        seed: int = 0,
        **options: object,
    ) -> SplitAlexNet:
        """This rank's half; the other rank of the 2-rank `group` holds the other one.

        Built by `split_alexnet.parallel.layout.distributed`, which joins the halves
        with a process-group exchange; this model module never imports it.
        """
        from split_alexnet.parallel.layout import distributed

        return distributed(group, variant, seed=seed, **options)

    def shard_dropout(self, replica: int, replicas: int) -> None:
        """As data-parallel replica `replica` of `replicas`, each holding an equal shard of the
        global batch: draw the global batch's dropout masks and keep this shard's rows."""
        for module in self.modules():
            if isinstance(module, PaperDropout):
                module.replica, module.replicas = replica, replicas

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.activations(images, self.table[-1].name)

    def activations(self, images: torch.Tensor, upto: str) -> torch.Tensor:
        """Both halves' outputs of layer `upto`, gathered (e.g. "fc7" for Figure 4 features)."""
        names = [layer.name for layer in self.table]
        if upto not in names:
            raise ValueError(f"no layer {upto!r}; layers are {', '.join(names)}")
        halves = list(self.halves.values())
        xs = [images] * len(halves)
        for layer in self.table:
            if layer.reads_both:
                gathered = self.exchange.gather(_in_compute_dtype(xs), dim=1)
                xs = [gathered] * len(halves)
            xs = [half.layer(layer.name)(x) for half, x in zip(halves, xs, strict=True)]
            if layer.name == upto:
                break
        if layer.sums_halves:
            return self.exchange.sum_logits(xs)
        return self.exchange.gather_logits(xs)

    @torch.no_grad()
    def reference_state_dict(self) -> dict[str, torch.Tensor]:
        """The monolithic state dict (reference layout), whole, in every process."""
        halves = list(self.halves.values())
        return {
            # Contiguous whatever the training layout: the dict outlives the run.
            f"{layer.name}.{p}": self.exchange.gather(
                [getattr(half.layer(layer.name), p).detach() for half in halves],
                dim=layer.split_dim if p == "weight" else 0,
            ).clone(memory_format=torch.contiguous_format)
            for layer in self.table
            for p in ("weight", "bias")
        }

    @torch.no_grad()
    def load_reference_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load a reference-layout dict; every process keeps the slices of its halves."""
        check_reference_state_dict(state, self.variant)
        for h, half in self.halves.items():
            for layer in self.table:
                block = half.layer(layer.name)
                for p in ("weight", "bias"):
                    whole = state[f"{layer.name}.{p}"]
                    dim = layer.split_dim if p == "weight" else 0
                    getattr(block, p).copy_(whole.chunk(self.variant.halves, dim)[int(h)])


def _in_compute_dtype(xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """The maps in the dtype the layer reading them computes in.

    Under autocast that layer (a conv or a linear) casts its input to the
    autocast dtype anyway, but LRN hands over float32 maps; cast before the
    exchange, and the link carries bf16 both ways: half the bytes (issue 12).
    """
    device = xs[0].device.type
    if not torch.is_autocast_enabled(device):
        return xs
    dtype = torch.get_autocast_dtype(device)
    return [x.to(dtype) for x in xs]
