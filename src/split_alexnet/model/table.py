"""The layer table: the one source of truth for the network and its ablations.

Every module that builds or describes the network (the halves, the monolithic
reference, the parameter counts in the docs and tests) reads `layer_table`.
Numbers are the paper's (Sec. 3.5, Fig. 2) as listed in shared/PAPER.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

Connectivity = Literal["paper", "never", "always"]
Activation = Literal["relu", "tanh"]
Pooling = Literal["overlapping", "non_overlapping"]
LRNFormula = Literal["trained", "literal"]

LRN_K = 2.0
LRN_SIZE = 5
LRN_ALPHA = 1e-4
LRN_BETA = 0.75
DROPOUT_P = 0.5
INIT_STD = 0.01

_CHOICES: dict[str, tuple[str, ...]] = {
    "connectivity": ("paper", "never", "always"),
    "activation": ("relu", "tanh"),
    "pooling": ("overlapping", "non_overlapping"),
    "lrn_formula": ("trained", "literal"),
}


@dataclass(frozen=True)
class Variant:
    """Which network: the paper's, or one of the ablations it reports (Sec. 3, 4.2).

    connectivity: "paper" (halves meet at conv3 and the fc layers), "never"
        (halves that never talk, layer-params-150.cfg) or "always" (conv2,
        conv4 and conv5 also read both halves: the ungrouped control).
    one_gpu: the Sec. 3.2 net on one device, half the kernels, conv5 and the
        fc layers not halved.
    lrn_formula: "trained" divides alpha by the window size as the 2012 code
        did (layer.py `scale /= size`); "literal" is the printed formula.
    """

    connectivity: Connectivity = "paper"
    one_gpu: bool = False
    lrn: bool = True
    lrn_formula: LRNFormula = "trained"
    pooling: Pooling = "overlapping"
    activation: Activation = "relu"
    dropout: bool = True
    num_classes: int = 1000
    image_size: int = 224

    def __post_init__(self) -> None:
        for name, allowed in _CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
        if self.one_gpu and self.connectivity != "paper":
            raise ValueError("the one-GPU net has one tower: connectivity does not apply")
        if self.num_classes % self.halves:
            raise ValueError(f"num_classes={self.num_classes} does not split into two halves")

    @property
    def halves(self) -> int:
        return 1 if self.one_gpu else 2

    @property
    def lrn_alpha(self) -> float:
        return LRN_ALPHA / LRN_SIZE if self.lrn_formula == "trained" else LRN_ALPHA

    @property
    def pool(self) -> tuple[int, int]:
        """(kernel, stride) of every max-pool: 3/2 overlapping (Sec. 3.4) or 2/2."""
        return (3, 2) if self.pooling == "overlapping" else (2, 2)


@dataclass(frozen=True)
class Layer:
    """One layer as one half holds it.

    `reads_both`: the layer's input is both halves' maps, so an exchange (an
    all-gather between the halves) happens in front of it.
    """

    name: str
    kind: Literal["conv", "fc"]
    out_per_half: int
    in_per_half: int  # channels or features produced by one half of the layer below
    reads_both: bool
    reads_image: bool = False  # conv1: both halves read the whole image
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    lrn: bool = False
    pool: bool = False
    activation: bool = True
    dropout: bool = False
    bias_init: float = 0.0
    spatial_in: int = 1  # fc6 reads flattened 6×6 maps
    out_size: int = 1  # map side after this layer's pool, for the docs and tests
    conv_out_size: int = 1  # map side before the pool
    extra_pad: int = 0  # right/bottom zero padding from the code's rounding (conv1)

    @property
    def in_features(self) -> int:
        """Inputs to one half of the layer: channels for conv, features for fc."""
        return self.in_per_half * (2 if self.reads_both else 1) * self.spatial_in

    @property
    def weight_shape(self) -> tuple[int, ...]:
        if self.kind == "conv":
            return (self.out_per_half, self.in_features, self.kernel, self.kernel)
        return (self.out_per_half, self.in_features)

    @property
    def parameters(self) -> int:
        return math.prod(self.weight_shape) + self.out_per_half


@dataclass(frozen=True)
class _Row:
    name: str
    kind: Literal["conv", "fc"]
    out_per_half: int
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    lrn: bool = False
    pool: bool = False
    bias_init: float = 0.0
    reads_both: dict[str, bool] = field(default_factory=dict)


# The paper's Fig. 2 per half. reads_both per connectivity: where the GPUs talked.
_PAPER: tuple[_Row, ...] = (
    _Row(
        "conv1",
        "conv",
        48,
        11,
        4,
        0,
        lrn=True,
        pool=True,
        reads_both={"paper": False, "never": False, "always": False},
    ),
    _Row(
        "conv2",
        "conv",
        128,
        5,
        1,
        2,
        lrn=True,
        pool=True,
        bias_init=1.0,
        reads_both={"paper": False, "never": False, "always": True},
    ),
    _Row("conv3", "conv", 192, 3, 1, 1, reads_both={"paper": True, "never": False, "always": True}),
    _Row(
        "conv4",
        "conv",
        192,
        3,
        1,
        1,
        bias_init=1.0,
        reads_both={"paper": False, "never": False, "always": True},
    ),
    _Row(
        "conv5",
        "conv",
        128,
        3,
        1,
        1,
        pool=True,
        bias_init=1.0,
        reads_both={"paper": False, "never": False, "always": True},
    ),
    _Row(
        "fc6", "fc", 2048, bias_init=1.0, reads_both={"paper": True, "never": False, "always": True}
    ),
    _Row(
        "fc7", "fc", 2048, bias_init=1.0, reads_both={"paper": True, "never": False, "always": True}
    ),
    _Row("fc8", "fc", 500, reads_both={"paper": True, "never": False, "always": True}),
)

# Sec. 3.2's comparison net: one tower, conv1–conv4 with half the kernels,
# conv5 and the fc layers as wide as the two-GPU net's.
_ONE_GPU_WIDTH = {"conv5": 256, "fc6": 4096, "fc7": 4096, "fc8": 1000}


def resolve_variant(variant: Variant | None, options: dict[str, object]) -> Variant:
    """A Variant from either a Variant or its fields as keyword options, not both."""
    if variant is not None and options:
        raise TypeError("pass either variant= or its fields as keywords, not both")
    return variant if variant is not None else Variant(**options)  # type: ignore[arg-type]


def code_extra_padding(size: int, kernel: int, stride: int, padding: int) -> int:
    """Zero pixels past the right/bottom edge the 2012 code's rounding reads.

    layer.py sizes a conv output as 1 + ceil((2p + S - f) / s); PyTorch floors.
    For conv1, 224 with p = 0 gives 55 and the last window reads 3 pixels past
    the edge (PAPER.md, conv1 row).
    """
    out = 1 + math.ceil((2 * padding + size - kernel) / stride)
    return (out - 1) * stride + kernel - size - 2 * padding


def _pooled(size: int, kernel: int, stride: int) -> int:
    return (size - kernel) // stride + 1


def layer_table(variant: Variant = Variant()) -> tuple[Layer, ...]:
    """The layers of one half (of the single tower for the one-GPU net)."""
    pool_kernel, pool_stride = variant.pool
    layers: list[Layer] = []
    in_per_half, size = 3, variant.image_size
    for row in _PAPER:
        out = row.out_per_half
        if variant.one_gpu:
            out = _ONE_GPU_WIDTH.get(row.name, out)
        if row.name == "fc8":
            out = variant.num_classes // variant.halves
        reads_both = False if variant.one_gpu else row.reads_both[variant.connectivity]
        is_input = row.name == "conv1"
        layer = Layer(
            name=row.name,
            kind=row.kind,
            out_per_half=out,
            in_per_half=in_per_half,
            reads_both=reads_both,
            reads_image=is_input,
            kernel=row.kernel,
            stride=row.stride,
            padding=row.padding,
            lrn=row.lrn and variant.lrn,
            pool=row.pool,
            activation=row.name != "fc8",
            dropout=row.name in ("fc6", "fc7") and variant.dropout,
            bias_init=row.bias_init,
        )
        if row.kind == "conv":
            extra = code_extra_padding(size, row.kernel, row.stride, row.padding) if is_input else 0
            conv_out = (size + 2 * row.padding + extra - row.kernel) // row.stride + 1
            size = _pooled(conv_out, pool_kernel, pool_stride) if row.pool else conv_out
            layer = replace(layer, extra_pad=extra, conv_out_size=conv_out, out_size=size)
        elif row.name == "fc6":
            layer = replace(layer, spatial_in=size * size)
        layers.append(layer)
        # conv1 reads the whole image in both halves; the input is not split.
        in_per_half = out
    return tuple(layers)


def parameter_count(variant: Variant = Variant()) -> int:
    """Parameters of the whole network (both halves)."""
    return variant.halves * sum(layer.parameters for layer in layer_table(variant))
