"""Every config group composes against the schema: in the repository, outside it, in a wheel."""

from __future__ import annotations

import importlib.resources
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from split_alexnet.config import register, variant_options
from split_alexnet.model.table import Variant

register()
CONF = importlib.resources.files("split_alexnet.conf")
GROUPS = {
    group: sorted(p.name.removesuffix(".yaml") for p in CONF.joinpath(group).iterdir())
    for group in ("data", "model", "optim", "mode", "experiment")
}
NEEDS_ROOT = {"data": {"imagenet", "folder"}, "experiment": {"paper_imagenet", "code2012"}}


def compose_train(*overrides: str):
    with initialize_config_module("split_alexnet.conf", version_base=None):
        return compose("train", overrides=list(overrides))


def test_every_group_has_its_options() -> None:
    assert GROUPS["model"] == sorted(
        ["paper", "code2012", "one_gpu", "never_talk", "ungrouped", "no_lrn", "lrn_literal",
         "pool_2x2", "alexnet_tanh", "no_dropout"]
    )  # fmt: skip
    assert GROUPS["optim"] == ["code2012", "paper", "torch_sgd"]
    assert GROUPS["mode"] == ["auto", "distributed", "emulate"]
    assert {"embedded", "imagenet", "folder"} <= set(GROUPS["data"])


@pytest.mark.parametrize("group,option", [(g, o) for g, options in GROUPS.items() for o in options])
def test_every_option_composes_and_builds(group: str, option: str) -> None:
    extra = ["data.root=/data"] if option in NEEDS_ROOT.get(group, ()) else []
    cfg = compose_train(f"{group}={option}", *extra)
    OmegaConf.resolve(cfg)
    if group == "model":
        Variant(**variant_options(cfg.model, 10))  # the variant exists and is consistent


def test_the_defaults_are_the_papers_numbers() -> None:
    cfg = compose_train()
    assert cfg.data.batch_size == 128
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay) == (0.01, 0.9, 0.0005)
    assert cfg.optim.max_reductions == 3 and cfg.epochs == 90
    assert cfg.mode.layout == "auto" and cfg.data.name == "embedded"
    code = compose_train("optim=code2012")
    assert (code.optim.preset, code.optim.schedule, list(code.optim.reduce_at)) == (
        "code2012", "fixed", [25, 51, 79],
    )  # fmt: skip
    assert (list(cfg.optim.group_lr), cfg.optim.colour_noise_off_at) == ([], None)


def test_the_code2012_experiment_is_the_run_behind_the_papers_numbers() -> None:
    # layers-145.cfg's network, layer-params-145.cfg's log (tests/test_schedule.py replays
    # it), convdata.py's colour noise, killed at epoch 91, validated on ten views.
    cfg = compose_train("experiment=code2012", "data.root=/data")
    assert cfg.model == compose_train("model=code2012").model
    assert cfg.optim == compose_train("optim=code2012").optim
    assert (cfg.epochs, cfg.data.name, cfg.data.colour_noise, cfg.data.val_views) == (
        91, "imagenet", "code", "ten",
    )  # fmt: skip


def test_an_unknown_key_fails_at_start_up() -> None:
    with pytest.raises(ConfigCompositionException, match="conectivity"):
        compose_train("model.conectivity=never")


def test_configs_resolve_from_outside_the_repository(tmp_path: Path) -> None:
    code = (
        "from hydra import compose, initialize_config_module\n"
        "from split_alexnet.config import register\n"
        "register()\n"
        "with initialize_config_module('split_alexnet.conf', version_base=None):\n"
        "    print(compose('train', overrides=['model=ungrouped']).model.connectivity)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "always"


def test_the_wheel_carries_every_config_and_kernel(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(repo)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("split_alexnet-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"split_alexnet/conf/{p.relative_to(repo / 'conf')}"
        for p in (repo / "conf").rglob("*.yaml")
    }
    assert expected and expected <= names
    packages = {n.rsplit("/", 1)[0] for n in names if n.endswith("__init__.py")}
    sources = {
        str(p.parent.relative_to(repo / "src"))
        for p in (repo / "src" / "split_alexnet").rglob("__init__.py")
    }
    assert sources <= packages
    # The C++ kernels built on first use (compiled/native.py).
    kernels = {str(p.relative_to(repo / "src")) for p in (repo / "src").rglob("*.cpp")}
    assert kernels and kernels <= names
