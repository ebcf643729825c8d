"""The network's shape, counts, initialisation, LRN within halves, state-dict layout and errors."""

from __future__ import annotations

import ast
import itertools
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

import split_alexnet
from split_alexnet import ReferenceAlexNet, SplitAlexNet, Variant, layer_table, parameter_count
from split_alexnet.model.reference_dict import reference_shapes
from split_alexnet.model.rnorm import same_map_response_norm
from split_alexnet.model.table import code_extra_padding, saved_variant
from tests.pair import run_processes
from tests.variants import model_option

PER_LAYER = {  # PAPER.md, per half
    "conv1": 17_472,
    "conv2": 153_728,
    "conv3": 442_560,
    "conv4": 331_968,
    "conv5": 221_312,
    "fc6": 18_876_416,
    "fc7": 8_390_656,
    "fc8": 2_048_500,
}


def test_parameter_counts_per_layer_per_half_and_in_all() -> None:
    model = SplitAlexNet.emulated()
    for h, half in model.halves.items():
        for name, count in PER_LAYER.items():
            block = half.layer(name)
            assert block.weight.numel() + block.bias.numel() == count, (h, name)
        assert sum(p.numel() for p in half.parameters()) == 30_482_612
    assert sum(p.numel() for p in model.parameters()) == 60_965_224
    assert sum(p.numel() for p in ReferenceAlexNet().parameters()) == 60_965_224
    assert parameter_count() == 60_965_224


def _conv(filters: int, channels: int, size: int) -> int:
    return filters * channels * size * size + filters


def _fc(outputs: int, inputs: int) -> int:
    return outputs * inputs + outputs


# The cfg files' own numbers, one GPU's layers twice, then fc1000 once (inputs=hs2a,hs2b).
# layers-145.cfg: conv3 reads pool2a and pool2b (channels=128,128), fc2048a pool3a and pool3b
# (2 × 128 × 6 × 6), fc2048ba hs1a and hs1b.
LAYERS_145 = 2 * (
    _conv(48, 3, 11) + _conv(128, 48, 5) + _conv(192, 128 + 128, 3) + _conv(192, 192, 3)
    + _conv(128, 192, 3) + _fc(2048, 2 * 128 * 6 * 6) + _fc(2048, 2048 + 2048)
) + _fc(1000, 2048 + 2048)  # fmt: skip
# layers-150.cfg: conv2 160 filters, conv3 reads pool2a only (channels=160), fc4096a pool3a
# only, fc2048ba hs1a only.
LAYERS_150 = 2 * (
    _conv(48, 3, 11) + _conv(160, 48, 5) + _conv(192, 160, 3) + _conv(192, 192, 3)
    + _conv(128, 192, 3) + _fc(4096, 128 * 6 * 6) + _fc(2048, 4096)
) + _fc(1000, 2048 + 2048)  # fmt: skip


# layers-145-half.cfg, the one-tower net: conv5 256 filters, fc4096a and fc4096ba, fc1000.
LAYERS_145_HALF = (
    _conv(48, 3, 11) + _conv(128, 48, 5) + _conv(192, 128, 3) + _conv(192, 192, 3)
    + _conv(256, 192, 3) + _fc(4096, 256 * 6 * 6) + _fc(4096, 4096) + _fc(1000, 4096)
)  # fmt: skip


@pytest.mark.parametrize(
    "variant,count",
    [
        (model_option("code2012"), LAYERS_145),
        (model_option("never_talk"), LAYERS_150),
        (Variant(one_gpu=True, layers="code2012"), LAYERS_145_HALF),
    ],
    ids=["code2012", "never_talk", "one_gpu-code2012"],
)
def test_parameter_counts_follow_the_cfg_files(variant: Variant, count: int) -> None:
    assert (LAYERS_145, LAYERS_150) == (60_965_224, 60_714_408)  # PAPER.md
    assert sum(p.numel() for p in SplitAlexNet.emulated(variant).parameters()) == count
    assert sum(p.numel() for p in ReferenceAlexNet(variant).parameters()) == count
    assert parameter_count(variant) == count


def test_neurons_per_layer() -> None:
    """PAPER.md: 290,400–186,624–64,896–64,896–43,264–4096–4096–1000 (conv maps before pooling)."""
    neurons = [
        2 * layer.out_per_half * (layer.conv_out_size**2 if layer.kind == "conv" else 1)
        for layer in layer_table()
    ]
    assert neurons == [290_400, 186_624, 64_896, 64_896, 43_264, 4096, 4096, 1000]


class _ShapeLog(TorchFunctionMode):
    """Records the output side of every convolution and max-pool the model runs."""

    def __init__(self) -> None:
        super().__init__()
        self.sides: list[tuple[str, int]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in (F.conv2d, torch.conv2d):
            self.sides.append(("conv", out.shape[-1]))
        if func in (F.max_pool2d, torch.max_pool2d):
            self.sides.append(("pool", out.shape[-1]))
        if str(func) == "split_alexnet.lrn_pool":  # LRN and max-pool as one kernel
            self.sides.append(("pool", out[0].shape[-1]))
        return out


@pytest.mark.parametrize("model_class", [ReferenceAlexNet, SplitAlexNet.emulated])
def test_map_sizes_at_every_layer(model_class) -> None:
    model = model_class()
    with _ShapeLog() as log, torch.no_grad():
        logits = model(torch.zeros(1, 3, 224, 224))
    sides = [side for _, side in log.sides]
    # conv1 pool1 conv2 pool2 conv3 conv4 conv5 pool5, once per half when split
    expected = [55, 27, 27, 13, 13, 13, 13, 6]
    if model_class is ReferenceAlexNet:
        assert sides == expected
    else:
        assert sorted(sides) == sorted(expected * 2)
    assert logits.shape == (1, 1000)


def test_conv1_reads_past_the_edge_as_the_code_rounds() -> None:
    """layer.py: 1 + ceil((2p + S - f)/s); 224 → 55 by 3 zero pixels, 227 → 55 with none."""
    assert code_extra_padding(224, 11, 4, 0) == 3
    assert code_extra_padding(227, 11, 4, 0) == 0
    image = torch.randn(1, 3, 224, 224)
    padded = F.pad(image, (0, 3, 0, 3))
    model = ReferenceAlexNet()
    conv1 = model.layers["conv1"]
    with torch.no_grad():
        expected = F.conv2d(padded, conv1.weight, conv1.bias, stride=4)
        got = F.conv2d(F.pad(image, (0, 3, 0, 3)), conv1.weight, conv1.bias, stride=4)
    assert expected.shape[-1] == 55 and 1 + math.ceil((224 - 11) / 4) == 55
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize(
    "name,wide",
    [("paper", set()), ("code2012", {"conv3", "conv4", "conv5"})],
)
def test_initialisation_follows_section_5_or_layers_145(name: str, wide: set[str]) -> None:
    """Sec. 5: N(0, 0.01), biases 1 in conv2, conv4, conv5, fc6, fc7; layers-145.cfg: initW
    0.03 in conv3-5, initB=1 in the same layers as the text."""
    model = ReferenceAlexNet(model_option(name), seed=3)
    ones = {"conv2", "conv4", "conv5", "fc6", "fc7"}
    for layer, block in model.layers.items():
        assert torch.all(block.bias == (1.0 if layer in ones else 0.0)), layer
        want = 0.03 if layer in wide else 0.01
        std = block.weight.std().item()
        assert abs(std - want) < want * 10 / math.sqrt(block.weight.numel()) + 1e-4, (layer, std)
        assert abs(block.weight.mean().item()) < 1e-3


def test_same_seed_same_weights_in_every_layout_different_seed_different() -> None:
    split = SplitAlexNet.emulated(seed=11).reference_state_dict()
    reference = ReferenceAlexNet(seed=11).reference_state_dict()
    other = ReferenceAlexNet(seed=12).reference_state_dict()
    for key in split:
        assert torch.equal(split[key], reference[key]), key
    assert not torch.equal(split["conv1.weight"], other["conv1.weight"])


def _lrn_formula(a: torch.Tensor, alpha: float) -> torch.Tensor:
    """Sec. 3.3 evaluated term by term, over one half's channels."""
    channels = a.shape[1]
    out = torch.empty_like(a)
    for c in range(channels):
        lo, hi = max(0, c - 2), min(channels - 1, c + 2)
        out[:, c] = a[:, c] / (2 + alpha * (a[:, lo : hi + 1] ** 2).sum(1)) ** 0.75
    return out


@pytest.mark.parametrize("formula,alpha", [("trained", 1e-4 / 5), ("literal", 1e-4)])
def test_lrn_matches_the_formula_within_each_half_never_across(formula: str, alpha: float) -> None:
    conv1 = ReferenceAlexNet(lrn_formula=formula).double().layers["conv1"]
    activations = torch.rand(2, 96, 9, 9, dtype=torch.float64) * 40
    expected = torch.cat([_lrn_formula(part, alpha) for part in activations.split(48, 1)], 1)
    got = conv1.normalise(activations)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
    # Channel 47 (half 0's last) must not see channel 48 (half 1's first); 49 and 50 must.
    bumped = activations.clone()
    bumped[:, 48] *= 100
    moved = conv1.normalise(bumped)
    assert torch.equal(got[:, :48], moved[:, :48])
    assert (got[:, 49:51] != moved[:, 49:51]).all()
    # The literal formula normalises five times harder than the trained one.
    assert conv1.lrn.alpha == alpha


def _lrn_within_halves(a: torch.Tensor) -> torch.Tensor:
    """torch's LRN (alpha divided by the window, as trained) over each half's maps."""
    return torch.cat([F.local_response_norm(part, 5, 1e-4, 0.75, 2.0) for part in a.chunk(2, 1)], 1)


def test_code2012_runs_each_layer_in_the_order_of_layers_145() -> None:
    """rnorm1a reads conv1a, pool1a carries the relu; conv2a's relu, rnorm2a, cnorm2a, pool2a;
    pool3a carries conv5a's relu."""
    layers = ReferenceAlexNet(model_option("code2012"), seed=4).double().eval().layers
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 67, 67, generator=generator, dtype=torch.float64) * 20
    conv1, conv2, conv5 = layers["conv1"], layers["conv2"], layers["conv5"]
    with torch.no_grad():
        linear = F.conv2d(F.pad(images, (0, 3, 0, 3)), conv1.weight, conv1.bias, stride=4)
        pool1 = F.relu(F.max_pool2d(_lrn_within_halves(linear), 3, 2))
        torch.testing.assert_close(conv1(images), pool1, rtol=1e-12, atol=0)
        conv = F.conv2d(pool1, conv2.weight, conv2.bias, padding=2, groups=2)
        normalised = same_map_response_norm(_lrn_within_halves(F.relu(conv)), 5, 1e-3, 0.75)
        torch.testing.assert_close(conv2(pool1), F.max_pool2d(normalised, 3, 2), rtol=1e-12, atol=0)
        maps = torch.randn(2, 384, 13, 13, generator=generator, dtype=torch.float64)
        conv = F.conv2d(maps, conv5.weight, conv5.bias, padding=1, groups=2)
        torch.testing.assert_close(conv5(maps), F.relu(F.max_pool2d(conv, 3, 2)), rtol=0, atol=0)
    assert (pool1 == 0).any() and (linear < 0).any()  # the order is tested where it matters


def test_a_record_of_the_retired_never_network_is_refused_in_one_line() -> None:
    """Before `layers`, connectivity "never" was each half deciding 500 classes alone."""
    with pytest.raises(ValueError, match="retired connectivity=never") as error:
        saved_variant({"connectivity": "never", "one_gpu": False, "lrn": True})
    assert "\n" not in str(error.value)
    assert saved_variant({"connectivity": "paper", "lrn": True}) == Variant()
    recorded = {"connectivity": "never", "layers": "code2012"}
    assert saved_variant(recorded) == model_option("never_talk")


def test_reference_state_dict_layout_and_round_trip() -> None:
    model = SplitAlexNet.emulated(seed=1)
    state = model.reference_state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == {
        "conv1.weight": (96, 3, 11, 11), "conv1.bias": (96,),
        "conv2.weight": (256, 48, 5, 5), "conv2.bias": (256,),
        "conv3.weight": (384, 256, 3, 3), "conv3.bias": (384,),
        "conv4.weight": (384, 192, 3, 3), "conv4.bias": (384,),
        "conv5.weight": (256, 192, 3, 3), "conv5.bias": (256,),
        "fc6.weight": (4096, 9216), "fc6.bias": (4096,),
        "fc7.weight": (4096, 4096), "fc7.bias": (4096,),
        "fc8.weight": (1000, 4096), "fc8.bias": (1000,),
    }  # fmt: skip
    # Half 0 first in every output dimension.
    assert torch.equal(state["fc6.weight"][:2048], model.halves["0"].layer("fc6").weight)
    assert torch.equal(state["conv5.weight"][128:], model.halves["1"].layer("conv5").weight)
    other = SplitAlexNet.emulated(seed=2)
    other.load_reference_state_dict(state)
    for key, value in other.reference_state_dict().items():
        assert torch.equal(value, state[key]), key
    reference = ReferenceAlexNet(seed=3)
    reference.load_reference_state_dict(state)
    images = torch.randn(2, 3, 224, 224) * 20
    model.eval(), reference.eval()
    with torch.no_grad():
        torch.testing.assert_close(reference(images), model(images))


def test_fc6_reads_pool5_flattened_channel_major_half_0_first() -> None:
    model = ReferenceAlexNet(seed=0).eval()
    images = torch.randn(1, 3, 224, 224) * 20
    with torch.no_grad():
        x = images
        for name in ("conv1", "conv2", "conv3", "conv4", "conv5"):
            x = model.layers[name](x)
        assert x.shape == (1, 256, 6, 6)
        fc6 = model.layers["fc6"]
        expected = torch.relu(fc6.weight @ x.reshape(-1) + fc6.bias) * 0.5
        torch.testing.assert_close(model.layers["fc6"](x)[0], expected)


@pytest.mark.parametrize("key,value,message", [
    ("conv3.weight", None, "has no 'conv3.weight'"),
    ("fc8.weight", torch.zeros(1000, 2048), "'fc8.weight' has shape (1000, 2048), expected"),
    ("fc9.weight", torch.zeros(1), "unexpected keys: fc9.weight"),
])  # fmt: skip
def test_a_bad_reference_dict_is_a_clear_error_naming_the_key(key, value, message) -> None:
    state = ReferenceAlexNet().reference_state_dict()
    if value is None:
        del state[key]
    else:
        state[key] = value
    for model in (SplitAlexNet.emulated(), ReferenceAlexNet()):
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            model.load_reference_state_dict(state)


def test_variants_follow_the_layer_table() -> None:
    shapes = reference_shapes(model_option("never_talk"))
    assert shapes["conv2.weight"] == (320, 48, 5, 5)
    assert shapes["conv3.weight"] == (384, 160, 3, 3)
    assert shapes["fc6.weight"] == (8192, 4608)
    assert shapes["fc7.weight"] == (4096, 4096)
    assert shapes["fc8.weight"] == (1000, 4096)
    assert reference_shapes(model_option("code2012")) == reference_shapes(Variant())
    always = reference_shapes(Variant(connectivity="always"))
    assert always["conv2.weight"] == (256, 96, 5, 5)
    assert always["conv4.weight"] == (384, 384, 3, 3)
    assert always["conv5.weight"] == (256, 384, 3, 3)
    one = reference_shapes(Variant(one_gpu=True))
    assert [one[f"{n}.weight"][0] for n in PER_LAYER] == [48, 128, 192, 192, 256, 4096, 4096, 1000]
    assert Variant(pooling="non_overlapping").pool == (2, 2)
    assert [layer.out_size for layer in layer_table(Variant(pooling="non_overlapping"))][:5] == [
        27, 13, 13, 13, 6,
    ]  # fmt: skip
    for layers in ("paper", "code2012"):
        for ablation, dropped in (("lrn", {"lrn", "rnorm"}), ("dropout", {"dropout"})):
            table = layer_table(Variant(layers=layers, **{ablation: False}))
            assert not any(dropped & set(layer.stages) for layer in table), (layers, ablation)
    with pytest.raises(ValueError, match="connectivity must be one of"):
        Variant(connectivity="sometimes")


@pytest.mark.parametrize(
    "options",
    [
        {"layers": "code2012"},
        {"layers": "code2012", "connectivity": "never"},
        {"connectivity": "never"},
        {"connectivity": "always"},
        {"one_gpu": True},
        {"layers": "code2012", "activation": "tanh"},
        {"activation": "tanh", "lrn": False, "pooling": "non_overlapping", "dropout": False},
    ],
    ids=[
        "code2012", "never_talk", "never-paper-layers", "always", "one_gpu", "code2012-tanh",
        "tanh-nolrn-pool22-nodropout",
    ],
)  # fmt: skip
def test_every_variant_runs_split_and_monolithic_alike(options: dict) -> None:
    split = SplitAlexNet.emulated(seed=5, **options).train()
    reference = ReferenceAlexNet(seed=5, **options).train()
    images = torch.randn(2, 3, 224, 224) * 20
    torch.testing.assert_close(split(images), reference(images), rtol=2e-4, atol=1e-5)
    halves = 1 if options.get("one_gpu") else 2
    assert sum(p.numel() for p in split.parameters()) == parameter_count(Variant(**options))
    assert len(split.halves) == halves


@pytest.mark.parametrize(
    "options,calls",
    [
        ({}, ["conv3", "fc6", "fc7", "fc8", "gather_logits"]),
        # layers-145.cfg: conv3, fc6 and fc7 read both halves; fc1000 sums its two inputs.
        ({"layers": "code2012"}, ["conv3", "fc6", "fc7", "sum_logits"]),
        # layers-150.cfg: the halves meet at fc1000 only.
        ({"layers": "code2012", "connectivity": "never"}, ["sum_logits"]),
        ({"connectivity": "never"}, ["fc8", "gather_logits"]),
        (
            {"connectivity": "always"},
            ["conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8", "gather_logits"],
        ),
    ],
)
def test_the_halves_meet_where_the_network_says(options: dict, calls: list[str]) -> None:
    log: list[str] = []

    class Counting(split_alexnet.model.exchange.LocalExchange):
        def gather(self, parts, dim):
            log.append("gather")
            return super().gather(parts, dim)

        def gather_logits(self, parts):
            log.append("gather_logits")
            return super().gather_logits(parts)

        def sum_logits(self, parts):
            log.append("sum_logits")
            return super().sum_logits(parts)

    model = SplitAlexNet(Counting(), **options)
    for name, block in model.halves["0"].named_children():
        block.register_forward_pre_hook(lambda *_, name=name: log.append(name))
    with torch.no_grad():
        model(torch.zeros(1, 3, 224, 224))
    # Each gather named by the layer that reads it.
    met = [after for before, after in itertools.pairwise(log) if before == "gather"]
    assert [*met, log[-1]] == calls


def size_three_worker(rank: int) -> str:
    try:
        SplitAlexNet.distributed()
    except ValueError as error:
        return str(error)
    return "no error"


def test_a_group_of_three_is_a_clear_error() -> None:
    messages = run_processes(size_three_worker, world=3)
    assert messages == ["a split AlexNet pair needs a model-parallel group of 2 ranks, got 3"] * 3


def test_the_model_code_does_not_know_about_processes() -> None:
    """The exchange is injected: building and running emulation never loads the collectives."""
    code = (
        "import sys, torch; from split_alexnet import SplitAlexNet, ReferenceAlexNet;"
        "SplitAlexNet.emulated()(torch.zeros(1, 3, 224, 224)); ReferenceAlexNet();"
        "print('split_alexnet.parallel.collectives' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


PACKAGE = Path(split_alexnet.__file__).parent
# Which part may not import which (issue 11). The one sanctioned door: SplitAlexNet.distributed
# keeps its public name on the model but builds the pair in parallel/, imported when called.
FORBIDDEN = {
    "model": {"parallel", "data", "training", "analysis"},
    "parallel": {"data", "training", "analysis"},
    "data": {"model", "training", "analysis"},
    "training": {"analysis"},
    "cli": {"model", "parallel", "data", "training", "analysis"},
    "compiled": {"model", "parallel", "data", "training", "analysis", "cli"},
}
DOORS = {("model/split.py", "split_alexnet.parallel.layout")}


def _part(module: str) -> str:
    """The part a split_alexnet module belongs to: its subpackage, or its own root name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "face"


def _imports(path: Path) -> set[str]:
    """Every split_alexnet module `path` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            if node.module and node.module.startswith("split_alexnet"):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("split_alexnet")}
    return found


def _graph() -> dict[str, set[str]]:
    """part → the parts it imports (root modules are parts of their own: cli, config, train…)."""
    edges: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        part = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        for module in _imports(path):
            target = _part(module)
            if target == "face" or (str(rel), module) in DOORS:
                continue
            known = (PACKAGE / target).is_dir() or (PACKAGE / f"{target}.py").is_file()
            if known and target != part:
                edges.setdefault(part, set()).add(target)
    return edges


def test_no_part_imports_a_part_above_it() -> None:
    edges = _graph()
    for part, forbidden in FORBIDDEN.items():
        assert not edges.get(part, set()) & forbidden, (part, edges.get(part))
    # The model is reached through the layers below it only.
    assert edges["parallel"] == {"model"}
    assert edges["data"] <= {"parallel", "cli", "compiled"}


def test_the_parts_import_one_another_without_a_loop() -> None:
    edges = _graph()
    done: set[str] = set()

    def visit(part: str, path: tuple[str, ...]) -> None:
        assert part not in path, " → ".join((*path, part))
        if part not in done:
            for target in edges.get(part, ()):
                visit(target, (*path, part))
            done.add(part)

    for part in edges:
        visit(part, ())


def test_the_package_root_holds_only_the_commands_config_and_face() -> None:
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert root == [
        "__init__.py", "cli.py", "config.py", "evaluate.py", "export.py", "train.py",
    ]  # fmt: skip
