"""The layer table: the one source of truth for the network and its ablations.

Every module that builds or describes the network (the halves, the monolithic
reference, the parameter counts in the docs and tests) reads `layer_table`.
Numbers are the paper's (Sec. 3.5, Fig. 2) as listed in shared/PAPER.md, and the
2012 code's (layers-145.cfg, layers-150.cfg) where a variant asks for them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from enum import Enum
from typing import Literal

LRN_K = 2.0
LRN_SIZE = 5
LRN_ALPHA = 1e-4
LRN_BETA = 0.75
# The 2012 code's same-map normalisation after conv2 (cnorm2a: size in layers-145.cfg,
# scale and pow in layer-params-145.cfg).
RNORM_SIZE = 5
RNORM_SCALE = 1e-3
RNORM_POWER = 0.75
DROPOUT_P = 0.5
INIT_STD = 0.01


class _Choice(str, Enum):
    """A Variant option whose members compare equal to, and print as, their plain strings.

    Each member's name is its value: OmegaConf reads an Enum field by name, so the
    YAML under conf/model/ and an override such as `model.connectivity=never` pick
    the member whose value a checkpoint stores as a plain string.
    """

    def __str__(self) -> str:
        return str(self.value)


class Connectivity(_Choice):
    paper = "paper"
    never = "never"
    always = "always"


class Layers(_Choice):
    paper = "paper"
    code2012 = "code2012"


class Activation(_Choice):
    relu = "relu"
    tanh = "tanh"


class Pooling(_Choice):
    overlapping = "overlapping"
    non_overlapping = "non_overlapping"


class LRNFormula(_Choice):
    trained = "trained"
    literal = "literal"


@dataclass(frozen=True)
class Variant:
    """Which network: the paper's, the 2012 code's, or an ablation the paper reports (Sec. 3, 4.2).

    connectivity: "paper" (halves meet at conv3 and the fc layers), "never"
        (the 2012 code's halves that never talk, layers-150.cfg: conv2 has 160
        kernels a half, conv3, fc6 and fc7 read their own half only, fc6 is
        4096 wide a half, and fc8 alone reads both halves' fc7) or "always"
        (conv2, conv4 and conv5 also read both halves: the ungrouped control).
    layers: "paper" (the text: conv → ReLU → LRN → pool, Sec. 3.3; weights
        N(0, 0.01), Sec. 5; fc8 500 classes a half, each reading both halves'
        fc7) or "code2012" (layers-145.cfg as it ran: LRN on conv1's linear
        output, then pool, then ReLU; conv5 pooled before its ReLU; conv2's
        LRN followed by the same-map "rnorm"; initW 0.03 in conv3-5; fc8 one
        1000-way layer, see `Layer.sums_halves`).
    one_gpu: the Sec. 3.2 net on one device, half the kernels, conv5 and the
        fc layers not halved.
    lrn_formula: "trained" divides alpha by the window size as the 2012 code
        did (layer.py `scale /= size`); "literal" is the printed formula.

    The choices take their plain strings too (a checkpoint stores those).
    """

    connectivity: Connectivity = Connectivity.paper
    layers: Layers = Layers.paper
    one_gpu: bool = False
    lrn: bool = True
    lrn_formula: LRNFormula = LRNFormula.trained
    pooling: Pooling = Pooling.overlapping
    activation: Activation = Activation.relu
    dropout: bool = True
    num_classes: int = 1000
    image_size: int = 224

    def __post_init__(self) -> None:
        for option in fields(self):
            choice = type(option.default)
            if not issubclass(choice, _Choice):
                continue
            value = getattr(self, option.name)
            try:
                object.__setattr__(self, option.name, choice(value))
            except ValueError:
                allowed = ", ".join(choice)
                raise ValueError(f"{option.name} must be one of {allowed}, not {value!r}") from None
        if self.one_gpu and self.connectivity != Connectivity.paper:
            raise ValueError("the one-GPU net has one tower: connectivity does not apply")
        if self.num_classes % self.halves:
            raise ValueError(f"num_classes={self.num_classes} does not split into two halves")

    @property
    def halves(self) -> int:
        return 1 if self.one_gpu else 2

    @property
    def lrn_alpha(self) -> float:
        return LRN_ALPHA / LRN_SIZE if self.lrn_formula == LRNFormula.trained else LRN_ALPHA

    @property
    def pool(self) -> tuple[int, int]:
        """(kernel, stride) of every max-pool: 3/2 overlapping (Sec. 3.4) or 2/2."""
        return (3, 2) if self.pooling == Pooling.overlapping else (2, 2)


@dataclass(frozen=True)
class Layer:
    """One layer as one half holds it.

    `reads_both`: the layer's input is both halves' maps, so an exchange (an
    all-gather between the halves) happens in front of it.
    `sums_halves`: the 2012 code's fc1000 (layers-145.cfg, layers-150.cfg:
    `inputs=hs2a,hs2b`, `initW=0.01,0.01`), one weight matrix per input. Each
    half holds the matrix for its own fc7 (all `halves * out_per_half` outputs)
    and the bias of its `out_per_half` classes; the halves' products are summed.
    That is the one 1000-way layer reading both halves' fc7, its parameters
    placed beside their inputs rather than all on GPU 0.
    `stages`: what follows the convolution or product, in order: "act" (the
    variant's activation), "lrn" (across maps, Sec. 3.3), "rnorm" (within each
    map, the 2012 code's cnorm2a), "pool", "dropout".
    """

    name: str
    kind: Literal["conv", "fc"]
    out_per_half: int
    in_per_half: int  # channels or features produced by one half of the layer below
    reads_both: bool
    reads_image: bool = False  # conv1: both halves read the whole image
    sums_halves: bool = False
    halves: int = 2  # of the network: 1 for the one-GPU net
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    stages: tuple[str, ...] = ("act",)
    weight_std: float = INIT_STD
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
        outputs = self.out_per_half * (self.halves if self.sums_halves else 1)
        return (outputs, self.in_features)

    @property
    def split_dim(self) -> int:
        """The weight dimension the halves divide: outputs, or inputs where they are summed."""
        return 1 if self.sums_halves else 0

    @property
    def parameters(self) -> int:
        return math.prod(self.weight_shape) + self.out_per_half


@dataclass(frozen=True)
class _Row:
    """One line of `_PAPER`: its cells in the order of these fields."""

    name: str
    kind: Literal["conv", "fc"]
    out: int | None  # kernels or units per half; None: num_classes / halves (fc8's logits)
    tower: int | None  # out of the one-GPU net (Sec. 3.2): conv5 and the fc layers not halved
    conv: tuple[int, int, int] | None  # kernel, stride, padding
    # Sec. 3.3, 3.5: the activation on every layer but fc8, then LRN and pooling where
    # Fig. 2 has them; dropout in fc6 and fc7 (Sec. 4.2).
    stages: str
    bias: float  # the initial bias (Sec. 5)
    image: bool  # both halves read the whole image
    # The connectivities in which the layer reads both halves' maps: where the GPUs
    # talk (Sec. 3.2; never: layers-150.cfg; always: the ungrouped control).
    meets: str

    def reads_both(self, connectivity: Connectivity) -> bool:
        return connectivity in {Connectivity(c) for c in self.meets.split()}


# The paper's network, one half (Fig. 2; PAPER.md's table).
# fmt: off
_PAPER: tuple[_Row, ...] = tuple(_Row(*cells) for cells in (
    # name     kind   out   tower conv      stages          bias image  meets
    ("conv1", "conv", 48,   48,   (11,4,0), "act lrn pool", 0.0, True,  ""),
    ("conv2", "conv", 128,  128,  (5,1,2),  "act lrn pool", 1.0, False, "always"),
    ("conv3", "conv", 192,  192,  (3,1,1),  "act",          0.0, False, "paper always"),
    ("conv4", "conv", 192,  192,  (3,1,1),  "act",          1.0, False, "always"),
    ("conv5", "conv", 128,  256,  (3,1,1),  "act pool",     1.0, False, "always"),
    ("fc6",   "fc",   2048, 4096, None,     "act dropout",  1.0, False, "paper always"),
    ("fc7",   "fc",   2048, 4096, None,     "act dropout",  1.0, False, "paper always"),
    ("fc8",   "fc",   None, None, None,     "",             0.0, False, "paper never always"),
))
# fmt: on

# layers-150.cfg, where the halves never talk: conv2a has filters=160, fc4096a outputs=4096.
_NEVER_WIDTH = {"conv2": 160, "fc6": 4096}

# layers-145.cfg where it differs from the text. The order of stages: rnorm1a reads
# conv1a and pool1a carries neuron=relu; cnorm2a (rnorm) reads rnorm2a; conv5a has no
# neuron and pool3a carries its relu. initW=0.03 in conv3, conv4, conv5. fc1000 is one
# layer with a weight matrix per input (hs2a, hs2b). initB is as in the text.
_CODE2012_STAGES = {"conv1": "lrn pool act", "conv2": "act lrn rnorm pool", "conv5": "pool act"}
_CODE2012_STD = {"conv3": 0.03, "conv4": 0.03, "conv5": 0.03}
_CODE2012_SUMMED = {"fc8"}


def resolve_variant(variant: Variant | None, options: dict[str, object]) -> Variant:
    """A Variant from either a Variant or its fields as keyword options, not both."""
    if variant is not None and options:
        raise TypeError("pass either variant= or its fields as keywords, not both")
    return variant if variant is not None else Variant(**options)  # type: ignore[arg-type]


def saved_variant(options: Mapping[str, object]) -> Variant:
    """The Variant a checkpoint recorded as plain options; fields it predates take defaults.

    Until `layers` was added, connectivity "never" named another network (each half
    deciding 500 classes alone from its own fc7), whose weights fit no network built
    now: such a record is refused in one line rather than read as layers-150.cfg's.
    """
    if options.get("connectivity") == Connectivity.never and "layers" not in options:
        raise ValueError(
            "it holds the retired connectivity=never network (each half deciding 500 "
            "classes alone), which this version does not build; model=never_talk is now "
            "the 2012 code's layers-150.cfg"
        )
    return Variant(**options)  # type: ignore[arg-type]


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
    code = variant.layers == Layers.code2012
    # Sec. 3.3's ablation drops the code's same-map normalisation with LRN.
    dropped = ({"lrn", "rnorm"} if not variant.lrn else set()) | (
        {"dropout"} if not variant.dropout else set()
    )
    layers: list[Layer] = []
    in_per_half, size = 3, variant.image_size
    for row in _PAPER:
        if variant.one_gpu:
            width = row.tower
        elif variant.connectivity == Connectivity.never:
            width = _NEVER_WIDTH.get(row.name, row.out)
        else:
            width = row.out
        out = variant.num_classes // variant.halves if width is None else width
        stages = _CODE2012_STAGES.get(row.name, row.stages) if code else row.stages
        summed = code and row.name in _CODE2012_SUMMED
        layer = Layer(
            name=row.name,
            kind=row.kind,
            out_per_half=out,
            in_per_half=in_per_half,
            # The one-tower net has no other half to read; a summed layer reads its own.
            reads_both=not (variant.one_gpu or summed) and row.reads_both(variant.connectivity),
            reads_image=row.image,
            sums_halves=summed,
            halves=variant.halves,
            stages=tuple(stage for stage in stages.split() if stage not in dropped),
            weight_std=_CODE2012_STD.get(row.name, INIT_STD) if code else INIT_STD,
            bias_init=row.bias,
        )
        if row.conv is not None:
            kernel, stride, padding = row.conv
            # layer.py rounds every conv's output size up; only conv1's stride makes it
            # differ from PyTorch's floor.
            extra = code_extra_padding(size, kernel, stride, padding)
            conv_out = (size + 2 * padding + extra - kernel) // stride + 1
            pooled = "pool" in layer.stages
            size = _pooled(conv_out, pool_kernel, pool_stride) if pooled else conv_out
            layer = replace(
                layer,
                kernel=kernel,
                stride=stride,
                padding=padding,
                extra_pad=extra,
                conv_out_size=conv_out,
                out_size=size,
            )
        else:
            # An fc layer reads the maps below it flattened (fc6: pool5's 6×6, Sec. 3.5).
            layer = replace(layer, spatial_in=size * size)
            size = 1
        layers.append(layer)
        # conv1 reads the whole image in both halves; the input is not split.
        in_per_half = out
    return tuple(layers)


def parameter_count(variant: Variant = Variant()) -> int:
    """Parameters of the whole network (both halves)."""
    return variant.halves * sum(layer.parameters for layer in layer_table(variant))
