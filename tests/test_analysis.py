"""Figure 3: the chromatic index, the half comparison, the pictures and the command."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module

from split_alexnet.analysis import (
    chromatic_index,
    compare_halves,
    frequency_centroid,
    load_conv1,
    to_pixel_units,
)
from split_alexnet.analysis import figure3 as figure3_command
from split_alexnet.analysis.colour import auc, permutation_p, separation_null
from split_alexnet.analysis.pictures import null_note, scaled_parts
from split_alexnet.training.plots import kernel_grid, scaled

CAFFENET = Path(__file__).resolve().parent / "data" / "caffenet_conv1_rendered.npy"
SIZE = 11


def gabor(freq: float, theta: float = 0.3) -> np.ndarray:
    y, x = np.mgrid[-5:6, -5:6].astype(np.float64)
    u = x * np.cos(theta) + y * np.sin(theta)
    return np.exp(-(x**2 + y**2) / 12.0) * np.cos(2 * np.pi * freq * u)


def blob() -> np.ndarray:
    y, x = np.mgrid[-5:6, -5:6].astype(np.float64)
    return np.exp(-(x**2 + y**2) / 8.0)


def grey(pattern: np.ndarray, offset: float = 0.0) -> np.ndarray:
    return np.repeat(pattern[None], 3, axis=0) + offset


def planted(rng: np.random.Generator) -> np.ndarray:
    """48 grey Gabors, then 48 red–green blobs: the split at its clearest."""
    grey_half = [grey(gabor(rng.uniform(0.05, 0.3), rng.uniform(0, np.pi))) for _ in range(48)]
    colour_half = [np.stack([blob(), -blob(), 0 * blob()]) * rng.uniform(0.5, 2) for _ in range(48)]
    return np.stack(grey_half + colour_half)


# --- the chromatic index ----------------------------------------------------------------


def test_grey_gabor_has_chromatic_index_zero():
    assert chromatic_index(grey(gabor(0.2), offset=3.0)[None])[0] == pytest.approx(0, abs=1e-12)


def test_isoluminant_red_green_blob_has_chromatic_index_one():
    kernel = np.stack([blob(), -blob(), np.zeros((SIZE, SIZE))])
    assert chromatic_index(kernel[None])[0] == pytest.approx(1, abs=1e-12)


def test_noise_has_chromatic_index_two_thirds_on_average():
    noise = np.random.default_rng(0).normal(size=(4000, 3, SIZE, SIZE))
    # 242 chromatic dimensions of the 362 left after removing the kernel's mean
    assert chromatic_index(noise).mean() == pytest.approx(242 / 362, abs=0.002)


def test_chromatic_index_ignores_channel_order_offset_and_scale():
    kernels = np.random.default_rng(1).normal(size=(10, 3, SIZE, SIZE))
    ci = chromatic_index(kernels)
    np.testing.assert_allclose(chromatic_index(kernels[:, ::-1]), ci, rtol=1e-12)
    np.testing.assert_allclose(chromatic_index(kernels[:, [1, 2, 0]]), ci, rtol=1e-12)
    np.testing.assert_allclose(chromatic_index(3.5 * kernels - 7.0), ci, rtol=1e-12)


def test_constant_kernel_has_chromatic_index_zero():
    assert chromatic_index(np.ones((1, 3, SIZE, SIZE)))[0] == 0


def test_frequency_centroid_rises_with_frequency_and_ignores_colour():
    low, high = frequency_centroid(np.stack([grey(gabor(0.08)), grey(gabor(0.35))]))
    assert low < 0.15 < 0.3 < high
    checker = grey(np.indices((SIZE, SIZE)).sum(0) % 2 * 2.0 - 1)
    assert frequency_centroid(checker[None])[0] > 0.6
    pattern = gabor(0.2) - gabor(0.2).mean()
    coloured = np.stack([pattern, -pattern, 0 * pattern])
    np.testing.assert_allclose(
        frequency_centroid(coloured[None]), frequency_centroid(grey(pattern)[None]), rtol=1e-12
    )


# --- comparing the halves ----------------------------------------------------------------


def test_auc_counts_pairs_and_half_ties():
    assert auc(np.array([0.0, 2, 4]), np.array([1.0, 3, 5])) == pytest.approx(6 / 9, abs=1e-15)
    assert auc(np.array([1.0, 2]), np.array([3.0, 4])) == 1.0
    assert auc(np.array([3.0, 4]), np.array([1.0, 2])) == 0.0
    assert auc(np.array([0.0, 2]), np.array([1.0])) == 0.5
    assert auc(np.array([1.0]), np.array([1.0])) == 0.5


def test_planted_groups_are_found_with_the_smallest_p():
    rng = np.random.default_rng(2)
    ci = np.r_[rng.uniform(0, 0.1, 48), rng.uniform(0.6, 1, 48)]
    stats = compare_halves(ci, permutations=2000, seed=0)
    assert (stats.auc, stats.separation, stats.colour_half) == (1.0, 1.0, 1)
    assert stats.p_value == 1 / 2001
    assert stats.below_0_2 == (1.0, 0.0) and stats.above_0_5 == (0.0, 1.0)
    swapped = compare_halves(np.r_[ci[48:], ci[:48]], permutations=2000, seed=0)
    assert (swapped.auc, swapped.separation, swapped.colour_half) == (0.0, 1.0, 0)


def test_no_difference_gives_separation_zero_and_p_one():
    stats = compare_halves(np.full(96, 0.3), permutations=500, seed=0)
    assert (stats.auc, stats.separation, stats.p_value) == (0.5, 0.0, 1.0)


def test_random_splits_are_seeded_and_keep_group_sizes():
    ci = np.random.default_rng(3).uniform(size=96)
    second = np.arange(96) >= 48
    s1, null1 = separation_null(ci, second, 300, seed=7)
    s2, null2 = separation_null(ci, second, 300, seed=7)
    assert s1 == s2 and np.array_equal(null1, null2)
    # ranks only: any untied values give the same null from the same seed
    _, null3 = separation_null(ci**3 + 5, second, 300, seed=7)
    np.testing.assert_allclose(null3, null1, atol=1e-12)
    assert permutation_p(2.0, null1) == 1 / 301 and permutation_p(0.0, null1) == 1.0


def test_odd_number_of_kernels_is_refused():
    with pytest.raises(ValueError, match="even number"):
        compare_halves(np.zeros(95))


# --- the real CaffeNet kernels -----------------------------------------------------------


def test_caffenet_kernels_load_as_rgb():
    rendered = np.load(CAFFENET)
    kernels = load_conv1(CAFFENET)
    assert kernels.shape == (96, 3, 11, 11)
    # channel 0 is red: Caffe's BGR last channel
    np.testing.assert_allclose(
        kernels[:, 0] - kernels[:, 2], (rendered[..., 2] - rendered[..., 0].astype(float)) / 255
    )


def test_caffenet_first_half_grey_second_half_colour():
    ci = chromatic_index(load_conv1(CAFFENET))
    stats = compare_halves(ci, permutations=10_000, seed=0)
    assert stats.separation > 0.8 and stats.colour_half == 1
    # the numbers tests/data/README.md states
    assert stats.mean == pytest.approx((0.056, 0.743), abs=0.001)
    assert stats.median == pytest.approx((0.03, 0.91), abs=0.005)
    assert ((ci[:48] > 0.5).sum(), (ci[48:] > 0.5).sum()) == (1, 37)
    assert stats.auc == pytest.approx(0.958, abs=0.0005)
    assert stats.p_value == 1 / 10_001


# --- reading conv1 ------------------------------------------------------------------------


def test_load_conv1_reads_reference_split_and_checkpoint_dicts(tmp_path):
    weight = torch.randn(96, 3, 11, 11)
    layouts = {
        "reference.pt": {"conv1.weight": weight, "conv1.bias": torch.zeros(96)},
        "split.pt": {"halves.0.conv1.weight": weight[:48], "halves.1.conv1.weight": weight[48:]},
        "checkpoint.pt": {"model": {"conv1.weight": weight}, "epoch": 3},
    }
    for name, obj in layouts.items():
        torch.save(obj, tmp_path / name)
        np.testing.assert_array_equal(load_conv1(tmp_path / name), weight.double().numpy())


def test_load_conv1_names_unknown_files(tmp_path):
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other\.pt: not a reference-layout state dict"):
        load_conv1(tmp_path / "other.pt")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.txt: not a torch file"):
        load_conv1(tmp_path / "notes.txt")
    np.save(tmp_path / "small.npy", np.zeros((10, 11, 11, 3), np.uint8))
    with pytest.raises(ValueError, match="expected rendered kernels"):
        load_conv1(tmp_path / "small.npy")


def test_normalised_weights_go_back_to_pixel_units():
    std = [2.0, 4.0, 8.0]
    # a net fed x/std that sees grey needs weights proportional to std
    kernels = np.stack([grey(gabor(0.2))[None][0] * np.array(std)[:, None, None]])
    back = to_pixel_units(kernels, std)
    assert chromatic_index(back)[0] == pytest.approx(0, abs=1e-12)
    assert to_pixel_units(kernels, None) is kernels
    with pytest.raises(ValueError, match="three positive"):
        to_pixel_units(kernels, [1.0, 0.0, 1.0])


# --- the pictures -------------------------------------------------------------------------


def test_grey_kernel_stays_grey_in_the_picture():
    rng = np.random.default_rng(4)
    kernels = rng.normal(size=(96, 3, SIZE, SIZE)) * np.array([5.0, 1.0, 0.2])[:, None, None]
    kernels[7] = grey(gabor(0.2)) * 3  # channels of very different ranges elsewhere
    for per_kernel in (False, True):
        rgb = scaled(kernels, per_kernel)
        assert rgb.shape == (96, SIZE, SIZE, 3) and rgb.min() >= 0 and rgb.max() <= 1
        assert np.array_equal(rgb[7, ..., 0], rgb[7, ..., 1])
        assert np.array_equal(rgb[7, ..., 0], rgb[7, ..., 2])
        assert np.ptp(rgb[7]) > 0.1
    grid = kernel_grid(scaled(kernels, False))
    assert grid.shape == (2, 3 * 12 + 1, 16 * 12 + 1, 3)
    # kernel 7: block 0, row 0, column 7
    tile = grid[0, 1:12, 1 + 7 * 12 : 12 + 7 * 12]
    assert np.array_equal(tile, scaled(kernels, False)[7])
    assert np.array_equal(tile[..., 0], tile[..., 2])


def test_per_kernel_scale_puts_zero_at_mid_grey():
    kernels = np.zeros((96, 3, SIZE, SIZE))
    kernels[:, :, 5, 5] = np.linspace(-1, 1, 96)[:, None]
    kernels[:, 0, 0, 0] = 0.5
    rgb = scaled(kernels, per_kernel=True)
    assert np.all(rgb[:, 3, 3] == 0.5)


def test_luminance_and_chromatic_parts():
    rng = np.random.default_rng(5)
    kernels = rng.normal(size=(96, 3, SIZE, SIZE))
    kernels[0] = grey(gabor(0.2))
    luminance, chroma = scaled_parts(kernels, per_kernel=False)
    assert np.array_equal(luminance[..., 0], luminance[..., 1])
    assert np.allclose(chroma[0], 0.5)
    assert np.allclose(chroma.mean(axis=-1), 0.5)


# --- the command --------------------------------------------------------------------------


def _save_conv1(path: Path, kernels: np.ndarray) -> str:
    torch.save({"conv1.weight": torch.from_numpy(kernels).float()}, path)
    return str(path)


def _run_command(monkeypatch, out: Path, **lists: list[str]) -> dict:
    """split-alexnet-figure3 with 999 permutations and these list options; its JSON."""
    options = [f"{key}=[{','.join(map(str, paths))}]" for key, paths in lists.items()]
    argv = ["split-alexnet-figure3", *options, "permutations=999", f"out_dir={out}"]
    monkeypatch.setattr(sys, "argv", argv)
    figure3_command.main()
    return json.loads((out / "figure3.json").read_text())


def test_config_composes_and_matches_schema():
    with initialize_config_module(config_module="split_alexnet.conf", version_base=None):
        cfg = compose("figure3", overrides=["checkpoints=[a.pt]", "std=[1,2,3]"])
    assert list(cfg.checkpoints) == ["a.pt"] and list(cfg.std) == [1.0, 2.0, 3.0]
    assert set(cfg) == set(figure3_command.Figure3Config.__dataclass_fields__)


def test_command_end_to_end(tmp_path, monkeypatch):
    rng = np.random.default_rng(6)
    grouped = [_save_conv1(tmp_path / f"seed{s}.pt", planted(rng)) for s in range(2)]
    noise = rng.normal(size=(3, 96, 3, SIZE, SIZE))
    controls = [_save_conv1(tmp_path / f"control{s}.pt", noise[s]) for s in range(2)]
    epochs = [
        _save_conv1(tmp_path / f"epoch{e}.pt", (1 - e / 2) * noise[2] + e / 2 * planted(rng))
        for e in range(3)
    ]
    out = tmp_path / "out"
    result = _run_command(
        monkeypatch, out, checkpoints=[*grouped, CAFFENET], controls=controls, epochs=epochs
    )
    assert [e["name"] for e in result["checkpoints"]] == ["seed0", "seed1", CAFFENET.stem]
    assert result["groups"]["grouped"]["separation"][:2] == [1.0, 1.0]
    assert result["groups"]["grouped"]["colour_half"] == [1, 1, 1]
    assert result["checkpoints"][2]["halves"]["auc"] == pytest.approx(0.958, abs=0.0005)
    assert len(result["checkpoints"][0]["chromatic_index"]) == 96
    assert max(result["groups"]["control"]["separation"]) < 0.5
    assert result["random_splits"]["splits"] == 999
    assert [e["halves"]["separation"] for e in result["epochs"]][-1] == 1.0
    for group, name in (("grouped", "seed0"), ("control", "control1")):
        for picture in ("kernels", "luminance", "chromatic", "ci_by_half", "ci_vs_frequency"):
            assert (out / group / name / f"{picture}.png").stat().st_size > 1000
    for picture in ("random_splits", "separation_by_seed", "epochs"):
        assert (out / f"{picture}.png").stat().st_size > 1000


def test_command_refuses_unknown_keys_and_no_inputs(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["f3", "colour=1", f"out_dir={tmp_path}"])
    with pytest.raises(SystemExit):
        figure3_command.main()
    with pytest.raises(ValueError, match="nothing to analyse"):
        figure3_command.figure3(figure3_command.Figure3Config(out_dir=str(tmp_path)))


def test_command_measures_delta_w_against_the_initial_conv1(tmp_path, monkeypatch):
    rng = np.random.default_rng(7)
    start = rng.normal(size=(96, 3, SIZE, SIZE)) * 0.01
    initial = _save_conv1(tmp_path / "step0.pt", start)
    # ΔW: grey Gabors on half 0, red–green blobs on half 1, small beside W₀'s noise
    moved = _save_conv1(tmp_path / "moved.pt", start + 1e-3 * planted(rng))
    still = _save_conv1(tmp_path / "still.pt", start)
    out = tmp_path / "out"
    result = _run_command(
        monkeypatch, out, checkpoints=[moved], controls=[still], epochs=[still, moved],
        initial=[initial],
    )  # fmt: skip
    grouped, control = result["checkpoints"][0], result["controls"][0]
    assert grouped["delta"]["halves"]["separation"] == 1.0
    assert grouped["delta"]["halves"]["p_value"] == 1 / 1000
    assert grouped["drift"]["S/dW"] == 1.0
    assert grouped["halves"]["separation"] < 0.5  # W itself is still mostly W₀
    assert grouped["drift"]["norm_growth/half0"] > 1.0
    # W = W₀: every CI(ΔW) is 0, so S 0 and p 1
    assert control["delta"]["halves"]["separation"] == 0.0
    assert control["delta"]["halves"]["p_value"] == 1.0
    assert control["drift"]["cos_W_W0/half1"] == pytest.approx(1.0, abs=1e-6)
    assert [e["delta"]["halves"]["separation"] for e in result["epochs"]] == [0.0, 1.0]
    for picture in ("delta_kernels", "delta_ci_by_half"):
        assert (out / "grouped" / "moved" / f"{picture}.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="one per input"):
        figure3_command.figure3(
            figure3_command.Figure3Config(
                checkpoints=[moved], controls=[still], initial=[initial, initial, initial]
            )
        )


def test_plots_show_the_random_split_null():
    null = np.linspace(0, 0.4, 101)
    assert null_note(null) == "random 48/48 splits: S median 0.200, 95 % 0.380, 99 % 0.396"
