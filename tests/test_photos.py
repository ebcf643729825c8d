"""The richer photo sets (issue 16): every photograph the installed wheels ship, one class each."""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from PIL import Image

from split_alexnet.config import register
from split_alexnet.data import build_embedded_dataset, index_split
from split_alexnet.data.photos import COLOUR, GREY, SETS, TRAIN_PER_CLASS, VAL_PER_CLASS

register()


@pytest.fixture(scope="module")
def photos_grey(tmp_path_factory):
    return build_embedded_dataset(tmp_path_factory.mktemp("sets") / "photos_grey", "photos_grey")


def test_every_photograph_is_in_its_wheel_and_the_sets_nest():
    assert all(p.path.is_file() for p in (COLOUR | GREY).values())
    assert len(COLOUR) == 9 and len(GREY) == 9 and not COLOUR.keys() & GREY.keys()
    assert set(SETS["photos"]) == set(COLOUR) and set(SETS["photos_grey"]) == set(COLOUR | GREY)
    assert all(p.colour for p in COLOUR.values()) and not any(p.colour for p in GREY.values())


def test_photos_grey_is_one_class_a_photograph_in_imagenet_layout(photos_grey):
    train, val = index_split(photos_grey, "train"), index_split(photos_grey, "val")
    assert train.classes == val.classes == tuple(sorted(COLOUR | GREY))
    assert list(train.labels).count(0) == TRAIN_PER_CLASS and len(train) == 18 * TRAIN_PER_CLASS
    assert len(val) == 18 * VAL_PER_CLASS
    assert Image.open(photos_grey / "train" / "moon" / "moon_train_0000.JPEG").mode == "L"
    assert Image.open(photos_grey / "val" / "grace_hopper" / "grace_hopper_val_0000.JPEG").mode == (
        "RGB"
    )


def test_crops_span_scales_from_a_quarter_to_the_whole_val_strip(photos_grey):
    sides = [Image.open(p).size[0] for p in (photos_grey / "train" / "camera").iterdir()]
    # camera.png is 512 wide: the largest square in the 28 % val strip has side 143
    assert min(sides) < 143 * 0.35 and max(sides) > 143 * 0.9
    assert all(
        Image.open(p).size[0] == Image.open(p).size[1]
        for p in list((photos_grey / "val" / "page").iterdir())[:5]
    )


def test_the_built_readme_names_every_file_and_its_licence(photos_grey):
    readme = (photos_grey / "README.md").read_text()
    for p in (COLOUR | GREY).values():
        assert p.shipped_as in readme and p.source in readme
    assert "matplotlib" in readme and "BSD-3-Clause" in readme
    recipe = json.loads((photos_grey / "BUILD.json").read_text())["recipe"]
    assert recipe["set"] == "photos_grey" and recipe["scale"] == [0.25, 1.0]
    stamp = (photos_grey / "BUILD.json").stat().st_mtime_ns
    assert build_embedded_dataset(photos_grey, "photos_grey") == photos_grey
    assert (photos_grey / "BUILD.json").stat().st_mtime_ns == stamp


def test_an_unknown_set_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no embedded photo set 'photo'"):
        build_embedded_dataset(tmp_path, "photo")


@pytest.mark.parametrize("option", ["photos", "photos_grey"])
def test_data_photos_composes_beside_the_default_set(option):
    with initialize_config_module("split_alexnet.conf", version_base=None):
        cfg = compose("train", overrides=[f"data={option}"])
        default = compose("train")
    OmegaConf.resolve(cfg)
    OmegaConf.resolve(default)
    assert (cfg.data.name, cfg.data.root) == (option, None)
    assert cfg.data.embedded_dir.endswith(f"/{option}")
    assert default.data.name == "embedded" and default.data.embedded_dir.endswith("/embedded")
