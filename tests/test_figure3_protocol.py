"""Issue 16's protocol: the scaled input, the grey control, its runs and their report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from split_alexnet import SplitAlexNet, layer_table
from split_alexnet.analysis.protocol import permutation_tests
from split_alexnet.data import PairLoader, dataset_stats, preprocess
from split_alexnet.data.scaled import LUMINANCE, check_image_size, scaled_input
from split_alexnet.model.table import Variant
from split_alexnet.training.metrics import read_metrics
from tests.test_config import compose_train


def test_the_112_pixel_input_is_the_224_view_averaged_over_2x2_pixels():
    # Whole numbers below 2²⁰ make every sum and the division by 4 exact in float32.
    views = torch.randint(-255, 256, (3, 10, 3, 224, 224)).float()
    small = scaled_input(views, 112)
    expected = views.numpy().reshape(3, 10, 3, 112, 2, 112, 2).mean(axis=(4, 6))
    assert small.shape == (3, 10, 3, 112, 112)
    assert np.array_equal(small.numpy(), expected)


def test_the_grey_control_has_r_equal_g_equal_b_the_luminance():
    views = torch.randn(4, 3, 224, 224, dtype=torch.float64) * 60
    grey = scaled_input(views, 112, grey=True)
    luma = sum(w * views[:, c] for c, w in enumerate(LUMINANCE)).numpy()
    expected = luma.reshape(4, 112, 2, 112, 2).mean(axis=(2, 4))
    for c in range(3):
        assert np.allclose(grey[:, c].numpy(), expected, rtol=0, atol=1e-12)
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])


def test_the_paper_input_is_passed_through_untouched():
    views = torch.randn(2, 3, 224, 224)
    assert scaled_input(views) is views


@pytest.mark.parametrize("size", [128, 0, 448])
def test_an_image_size_the_view_does_not_pool_to_is_one_line(size: int):
    with pytest.raises(ValueError, match=f"model.image_size={size} does not divide") as error:
        check_image_size(size)
    assert "\n" not in str(error.value)


def test_the_112_pixel_network_keeps_every_kernel_count_and_shrinks_fc6():
    paper, scaled = layer_table(Variant()), layer_table(Variant(image_size=112))
    assert [(x.name, x.out_per_half) for x in paper] == [(x.name, x.out_per_half) for x in scaled]
    fc6 = {layer.name: layer for layer in scaled}["fc6"]
    assert fc6.spatial_in == 2 * 2  # pool5's maps: 2×2, not the paper's 6×6
    model = SplitAlexNet.emulated(Variant(image_size=112, num_classes=18))
    assert model(torch.randn(2, 3, 112, 112)).shape == (2, 18)


def test_a_loader_at_112_pixels_gives_the_224_batches_scaled(tiny_dataset: Path, tmp_path: Path):
    cache, _ = preprocess(tiny_dataset, tmp_path / "cache")
    common = {"train": True, "views": "random", "stats": dataset_stats(cache), "seed": 5}
    paper = PairLoader(cache, "train", 8, **common)
    scaled = PairLoader(cache, "train", 8, image_size=112, grey=True, **common)
    for (a, labels_a), (b, labels_b) in zip(paper, scaled, strict=True):
        assert torch.equal(scaled_input(a, 112, grey=True), b)
        assert torch.equal(labels_a, labels_b)


def test_the_protocols_run_composes_the_scaled_experiment():
    cfg = compose_train("experiment=figure3")
    assert cfg.model.image_size == 112 and cfg.data.name == "photos_grey"
    assert (cfg.optim.schedule, list(cfg.optim.reduce_at)) == ("fixed", [])
    assert cfg.max_steps == 10_000 and cfg.conv1_every > 0 and not cfg.data.grey


def test_runs_started_together_build_one_shared_data_set(tmp_path: Path):
    """Two runs of the protocol share the photo set: the second waits for the first's build."""
    code = (
        "from split_alexnet.config import DataConfig\n"
        "from split_alexnet.parallel.layout import setup_layout\n"
        "from split_alexnet.training.run import open_data\n"
        f"cfg = DataConfig(embedded_dir={str(tmp_path / 'embedded')!r})\n"
        "source, stats = open_data(cfg, setup_layout('emulate'), seed=0)\n"
        "print(source, float(stats.eigenvalues.sum()))\n"
    )
    runs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [run.communicate()[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0]
    assert outputs[0] == outputs[1]


def test_the_protocol_script_runs_the_controls_and_reports_them(tiny_dataset: Path, tmp_path):
    """launch/figure3_experiment.sh at 112 pixels: the grouped run, its ungrouped twin and the
    grey control, two at a time; the Figure 3 tool's p on each; the table and the plot."""
    out = tmp_path / "protocol"
    environment = {
        **os.environ, "OUT": str(out), "SEEDS": "0", "JOBS": "2",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }  # fmt: skip
    overrides = [
        "data=folder", f"data.root={tiny_dataset}", "data.batch_size=8", "max_steps=4",
        "conv1_every=2", "checkpoint_every=0", "keep_checkpoints=1",
    ]  # fmt: skip
    subprocess.run(
        ["bash", "launch/figure3_experiment.sh", *overrides], check=True, env=environment,
        capture_output=True,
    )  # fmt: skip
    text = (out / "protocol.md").read_text()
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in text.splitlines()[2:]}
    assert {name: row[1] for name, row in rows.items()} == {
        "grey-seed0": "grey input", "paper-seed0": "grouped", "ungrouped-seed0": "ungrouped",
    }  # fmt: skip
    assert all(row[3] == "4" for row in rows.values())  # steps
    for name, folder in (("paper-seed0", "figure3"), ("grey-seed0", "figure3-grey-seed0")):
        tested = json.loads((out / folder / "figure3.json").read_text())["checkpoints"][0]
        assert rows[name][8] == format(tested["halves"]["p_value"], ".2g")
    for run in rows:
        config = OmegaConf.load(out / run / "config.yaml")
        assert config.model.image_size == 112
        records = read_metrics(out / run / "metrics.jsonl")
        assert [r["step"] for r in records if r["kind"] == "conv1"] == [0, 2, 4]
    assert (out / "separation_by_step.png").stat().st_size > 10_000


def test_a_run_tested_twice_is_reported_from_its_latest_test(tmp_path: Path):
    def tested(folder: str, p: float, mtime: float) -> None:
        entry = {"path": str(tmp_path / "paper-seed0"), "halves": {"p_value": p}}
        path = tmp_path / folder / "figure3.json"
        path.parent.mkdir()
        path.write_text(json.dumps({
            "checkpoints": [entry], "controls": [],
            "random_splits": {"separation_quantiles": {"0.95": 0.1, "0.99": 0.2}},
        }))  # fmt: skip
        os.utime(path, (mtime, mtime))

    (tmp_path / "paper-seed0").mkdir()
    tested("figure3-later", 0.001, mtime=2e9)  # sorts before "figure3/" by name
    tested("figure3", 0.5, mtime=1e9)
    entries, _ = permutation_tests(tmp_path)
    assert entries["paper-seed0"]["halves"]["p_value"] == 0.001


def test_the_one_gpu_script_trains_the_twins_in_one_loop(tiny_dataset: Path, tmp_path: Path):
    """launch/figure3_one_gpu.py on the CPU: both twins from one W₀, records from step 0."""
    out = tmp_path / "one-gpu"
    subprocess.run(
        [sys.executable, "launch/figure3_one_gpu.py", "--device", "cpu", "--minutes", "0.02",
         "--every", "1", "--image-size", "112", "--batch", "8", "--root", str(tiny_dataset),
         "--out", str(out)],
        check=True, capture_output=True,
    )  # fmt: skip
    for twin in ("paper-seed0", "ungrouped-seed0"):
        steps = [r["step"] for r in read_metrics(out / twin / "metrics.jsonl")]
        assert steps == list(range(len(steps))) and len(steps) >= 2
    start = [
        torch.load(out / t / "conv1-step000000.pt") for t in ("paper-seed0", "ungrouped-seed0")
    ]
    assert torch.equal(start[0]["conv1.weight"], start[1]["conv1.weight"])
    tested = json.loads((out / "figure3-seed0" / "figure3.json").read_text())
    assert len(tested["checkpoints"]) == len(tested["controls"]) == 1
    rows = (out / "protocol.md").read_text().splitlines()[2:]
    assert [row.split(" | ")[1] for row in rows] == ["grouped", "ungrouped"]
