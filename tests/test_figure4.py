"""Figure 4: nearest images by fc7 activations, and the command on real photographs."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import skimage.data
import torch
from torchvision.io import encode_jpeg

from split_alexnet import SplitAlexNet
from split_alexnet.analysis import figure4 as figure4_command
from split_alexnet.analysis import nearest, nearest_class_agreement
from split_alexnet.model.reference_dict import reference_shapes, variant_of_shapes
from split_alexnet.model.table import Variant

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
# the data package decodes with torchvision.io too; its deprecation is not this test's business
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


def test_nearest_on_a_line():
    gallery = torch.tensor([[0.0], [1.0], [2.0], [10.0]])
    queries = torch.tensor([[0.9], [9.0]])
    indices, distances = nearest(queries, gallery, k=3)
    assert indices.tolist() == [[1, 0, 2], [3, 2, 1]]
    expected = torch.tensor([[0.1, 0.9, 1.1], [1.0, 7.0, 8.0]], dtype=torch.float64)
    torch.testing.assert_close(distances, expected, rtol=0, atol=1e-6)
    indices, _ = nearest(gallery[:2], gallery, k=6, exclude=[0, 1])
    assert indices.tolist() == [[1, 2, 3], [0, 2, 3]]
    assert nearest_class_agreement(indices, [1, 0], [1, 0, 0, 1]) == 0.0
    assert nearest_class_agreement(indices, [0, 1], [1, 0, 0, 1]) == 1.0
    assert nearest_class_agreement(indices, [1, 1], [1, 0, 0, 1]) == 0.5


def test_variant_is_told_by_the_shapes():
    for variant in (
        Variant(),
        Variant(connectivity="never", layers="code2012"),
        Variant(connectivity="always", num_classes=10),
        Variant(one_gpu=True),
        Variant(image_size=112),
        Variant(connectivity="never", layers="code2012", image_size=112),
    ):
        state = {k: torch.empty(s, device="meta") for k, s in reference_shapes(variant).items()}
        assert variant_of_shapes(state) == variant
    state = {k: torch.empty(s, device="meta") for k, s in reference_shapes(Variant()).items()}
    state["fc6.weight"] = torch.empty(4096, 2 * 128 * 3 * 3, device="meta")  # a 160-pixel input
    with pytest.raises(ValueError, match=r"matches no variant .* at 224×224 or 112×112"):
        variant_of_shapes(state)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """train/<photo>/{a,b}.jpg (the photo, its mirror image); query/<photo>/q.jpg (a copy of a)."""
    root = tmp_path_factory.mktemp("figure4")
    for name in PHOTOS:
        image = torch.from_numpy(getattr(skimage.data, name)().copy()).permute(2, 0, 1)
        for split in ("train", "query"):
            (root / split / name).mkdir(parents=True)
        (root / "train" / name / "a.jpg").write_bytes(encode_jpeg(image).numpy().tobytes())
        (root / "train" / name / "b.jpg").write_bytes(encode_jpeg(image.flip(2)).numpy().tobytes())
        shutil.copy(root / "train" / name / "a.jpg", root / "query" / name / "q.jpg")
    for name, image_size in (("model.pt", 224), ("model112.pt", 112)):
        model = SplitAlexNet.emulated(seed=0, num_classes=10, image_size=image_size)
        torch.save(model.reference_state_dict(), root / name)
    yield root
    shutil.rmtree(root)  # 0.23 GB that later modules' checkpoints need (suite under 2 GB)


@pytest.mark.parametrize("weights", ["model.pt", "model112.pt"])
def test_command_finds_the_copies(folders, tmp_path, monkeypatch, weights):
    """The paper's net, and the scaled experiment's, which reads the crops at 112 pixels."""
    out = tmp_path / "out"
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "split-alexnet-figure4",
            f"checkpoint={folders / weights}",
            f"train_dir={folders / 'train'}",
            f"query_dir={folders / 'query'}",
            f"out_dir={out}",
        ],
    )
    figure4_command.main()
    result = json.loads((out / "figure4.json").read_text())
    assert (result["gallery_images"], result["query_images"]) == (8, 4)
    assert result["nearest_shares_class"] == 1.0
    for query in result["queries"]:
        first, *rest = query["neighbours"]
        assert first["path"].endswith(f"{query['class']}/a.jpg")
        assert first["distance"] < 1e-3 * rest[0]["distance"]
        assert len(query["neighbours"]) == 6
    assert (out / "neighbours.png").stat().st_size > 10_000


def test_queries_from_the_gallery_never_retrieve_themselves(folders, tmp_path):
    cfg = figure4_command.Figure4Config(
        checkpoint=str(folders / "model.pt"),
        train_dir=str(folders / "train"),
        query_dir=str(folders / "train"),
        mean=[123.0, 117.0, 104.0],
        neighbours=3,
        shown=2,
        out_dir=str(tmp_path),
    )
    result = figure4_command.figure4(cfg)
    assert result["query_images"] == 8
    for query in result["queries"]:
        assert query["path"] not in [n["path"] for n in query["neighbours"]]
    assert 0.0 <= result["nearest_shares_class"] <= 1.0
