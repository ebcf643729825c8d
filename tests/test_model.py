"""The network's shape, counts, initialisation, LRN within halves, state-dict layout and errors."""

from __future__ import annotations

import ast
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
from split_alexnet.model.table import code_extra_padding
from tests.pair import run_processes

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


def test_initialisation_follows_section_5() -> None:
    model = ReferenceAlexNet(seed=3)
    ones = {"conv2", "conv4", "conv5", "fc6", "fc7"}
    for name, block in model.layers.items():
        assert torch.all(block.bias == (1.0 if name in ones else 0.0)), name
        std = block.weight.std().item()
        assert abs(std - 0.01) < 0.01 * 10 / math.sqrt(block.weight.numel()) + 1e-4, (name, std)
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
    never = Variant(connectivity="never")
    shapes = reference_shapes(never)
    assert shapes["conv3.weight"] == (384, 128, 3, 3)
    assert shapes["fc6.weight"] == (4096, 4608)
    assert shapes["fc8.weight"] == (1000, 2048)
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
    assert not any(layer.lrn for layer in layer_table(Variant(lrn=False)))
    assert not any(layer.dropout for layer in layer_table(Variant(dropout=False)))
    with pytest.raises(ValueError, match="connectivity must be one of"):
        Variant(connectivity="sometimes")


@pytest.mark.parametrize(
    "options",
    [
        {"connectivity": "never"},
        {"connectivity": "always"},
        {"one_gpu": True},
        {"activation": "tanh", "lrn": False, "pooling": "non_overlapping", "dropout": False},
    ],
    ids=["never", "always", "one_gpu", "tanh-nolrn-pool22-nodropout"],
)
def test_every_variant_runs_split_and_monolithic_alike(options: dict) -> None:
    split = SplitAlexNet.emulated(seed=5, **options).train()
    reference = ReferenceAlexNet(seed=5, **options).train()
    images = torch.randn(2, 3, 224, 224) * 20
    torch.testing.assert_close(split(images), reference(images), rtol=2e-4, atol=1e-5)
    halves = 1 if options.get("one_gpu") else 2
    assert sum(p.numel() for p in split.parameters()) == parameter_count(Variant(**options))
    assert len(split.halves) == halves


def test_halves_that_never_talk_exchange_only_the_logits() -> None:
    class Counting(split_alexnet.model.exchange.LocalExchange):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[str] = []

        def gather(self, parts, dim):
            self.calls.append("gather")
            return super().gather(parts, dim)

        def gather_logits(self, parts):
            self.calls.append("logits")
            return super().gather_logits(parts)

    for connectivity, calls in [("paper", 4), ("never", 0), ("always", 7)]:
        exchange = Counting()
        model = SplitAlexNet(exchange, connectivity=connectivity)
        with torch.no_grad():
            model(torch.zeros(1, 3, 224, 224))
        assert exchange.calls == ["gather"] * calls + ["logits"], connectivity


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
    assert edges["data"] <= {"parallel", "cli"}


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
