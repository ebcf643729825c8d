"""The paper's dropout (Sec. 4.2), with masks that do not depend on the layout."""

from __future__ import annotations

import torch
from torch import nn

from split_alexnet.model.seeds import mask_seed


class PaperDropout(nn.Module):
    """Non-inverted dropout over a slice [start, stop) of a `width`-unit layer.

    Training zeroes each unit with probability p and leaves the rest unscaled;
    evaluation multiplies every output by 1 - p (the 2012 code's "hs" layer,
    src/layer.cu). The mask for all `width` units is drawn from a generator
    seeded by (layer seed, draw count) and the module keeps its slice, so both halves, the
    two-process pair and the monolithic reference draw the same masks from the
    same seed. Mask values are drawn in float32 whatever the activations'
    dtype, so float64 runs see the same masks too.

    Data-parallel replicas (`replica` of `replicas`, each holding an equal
    shard of the global batch) draw the whole global batch's masks and keep
    their own rows, so every replica count draws the masks of one pair and
    every generator advances alike.
    """

    def __init__(self, p: float, width: int, start: int, stop: int, seed: int) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), not {p}")
        self.p, self.width, self.start, self.stop, self.seed = p, width, start, stop, seed
        self.replica, self.replicas = 0, 1
        self.draws = 0  # masks drawn so far: with the seed, the whole state of the masks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x * (1 - self.p)
        n = x.shape[0]
        # Each mask has a generator of its own, seeded from (seed, draws): the state a
        # checkpoint keeps is one count, the same on every device, so a run saved on a GPU
        # resumes, exports and is analysed on a CPU (issue 12). A CPU and a GPU draw
        # different masks from one seed (their generators differ); each device is exact.
        generator = torch.Generator(device=x.device).manual_seed(mask_seed(self.seed, self.draws))
        self.draws += 1
        draws = torch.rand((n * self.replicas, self.width), generator=generator, device=x.device)
        rows = slice(self.replica * n, (self.replica + 1) * n)
        keep = draws[rows, self.start : self.stop] >= self.p
        return x * keep.to(x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}, units [{self.start}, {self.stop}) of {self.width}, non-inverted"
