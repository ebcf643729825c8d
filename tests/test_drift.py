"""conv1 against its initialisation W₀ (issue 16): ΔW = W − W₀, norm growth, cos, and W₀ itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from split_alexnet.analysis import (
    chromatic_index,
    conv1_diagnostics,
    initial_conv1,
    recorded_initial_conv1,
)
from split_alexnet.analysis.drift import separation
from split_alexnet.model.split import SplitAlexNet
from split_alexnet.model.table import Variant
from split_alexnet.training.checkpoint import RUN_FORMAT, half_file, run_file

SHAPE = (48, 3, 11, 11)


def halves(kernels: np.ndarray) -> list[np.ndarray]:
    return np.split(kernels, 2)


def grey_and_colour_delta(rng: np.random.Generator) -> np.ndarray:
    """ΔW: 48 grey kernels (R = G = B), then 48 isoluminant ones (R = −G, B = 0)."""
    pattern = rng.normal(size=(96, 11, 11))
    grey = np.repeat(pattern[:48, None], 3, axis=1)
    colour = np.stack([pattern[48:], -pattern[48:], np.zeros_like(pattern[48:])], axis=1)
    return np.concatenate([grey, colour])


def test_w_equal_to_w0_has_no_delta_and_separation_zero():
    w0 = np.random.default_rng(0).normal(size=(96, 3, 11, 11)) * 0.01
    d = conv1_diagnostics(halves(w0), halves(w0.copy()))
    # every CI(ΔW) is 0 (a zero kernel has nothing to measure), all tie: AUC ½, S 0
    assert d["S/dW"] == 0.0
    assert (d["mean_CI/dW/half0"], d["mean_CI/dW/half1"]) == (0.0, 0.0)
    assert d["norm_growth/half0"] == pytest.approx(1.0, abs=1e-15)
    assert d["cos_W_W0/half1"] == pytest.approx(1.0, abs=1e-15)
    assert d["S/W"] == separation(chromatic_index(w0))
    assert d["mean_CI/W/half1"] == pytest.approx(chromatic_index(w0[48:]).mean(), abs=1e-15)


def test_grey_delta_on_half_0_and_coloured_on_half_1_is_split_exactly():
    rng = np.random.default_rng(1)
    w0 = rng.normal(size=(96, 3, 11, 11)) * 0.01
    delta = grey_and_colour_delta(rng)
    d = conv1_diagnostics(halves(w0 + delta), halves(w0))
    assert d["mean_CI/dW/half0"] == pytest.approx(0.0, abs=1e-12)
    assert d["mean_CI/dW/half1"] == pytest.approx(1.0, abs=1e-12)
    assert d["S/dW"] == 1.0
    for h in (0, 1):
        w, start = (w0 + delta)[48 * h : 48 * (h + 1)], w0[48 * h : 48 * (h + 1)]
        growth = np.linalg.norm(w) / np.linalg.norm(start)
        cos = (w * start).sum() / (np.linalg.norm(w) * np.linalg.norm(start))
        assert d[f"norm_growth/half{h}"] == pytest.approx(growth, rel=1e-12)
        assert d[f"cos_W_W0/half{h}"] == pytest.approx(cos, rel=1e-12)
    # W itself is dominated by ΔW here (100× W₀), so it is split too
    assert d["S/W"] == 1.0


def test_scaled_and_flipped_weights_give_growth_and_cosine():
    w0 = np.random.default_rng(2).normal(size=(96, 3, 11, 11))
    w = np.concatenate([2.0 * w0[:48], -0.5 * w0[48:]])
    d = conv1_diagnostics(halves(w), halves(w0))
    assert d["norm_growth/half0"] == pytest.approx(2.0, rel=1e-12)
    assert d["norm_growth/half1"] == pytest.approx(0.5, rel=1e-12)
    assert d["cos_W_W0/half0"] == pytest.approx(1.0, rel=1e-12)
    assert d["cos_W_W0/half1"] == pytest.approx(-1.0, rel=1e-12)
    # ΔW ∝ W₀ in each half: CI is scale-invariant, so CI(ΔW) = CI(W₀)
    ci0 = chromatic_index(w0)
    assert d["mean_CI/dW/half0"] == pytest.approx(ci0[:48].mean(), rel=1e-12)


def test_torch_halves_on_any_dtype_give_the_numpy_numbers():
    rng = np.random.default_rng(3)
    w0 = rng.normal(size=(96, 3, 11, 11)).astype(np.float32)
    w = w0 + grey_and_colour_delta(rng).astype(np.float32)
    from_numpy = conv1_diagnostics(halves(w), halves(w0))
    from_torch = conv1_diagnostics(torch.from_numpy(w).chunk(2), torch.from_numpy(w0).chunk(2))
    assert from_torch == from_numpy
    assert all(isinstance(v, float) for v in from_torch.values())


def test_mismatched_halves_are_refused():
    w = np.zeros((96, 3, 11, 11))
    with pytest.raises(ValueError, match="2 halves of W but 1 of W₀"):
        conv1_diagnostics(halves(w), [w])
    with pytest.raises(ValueError, match="half 1"):
        conv1_diagnostics(halves(w), [w[:48], w[:47]])


# --- W₀ without a step-0 checkpoint ----------------------------------------------------


def test_initial_conv1_is_what_the_model_draws_for_the_seed():
    model = SplitAlexNet.emulated(Variant(num_classes=10), seed=5)
    drawn = torch.cat([h.layer("conv1").weight.detach() for h in model.halves.values()])
    rebuilt = initial_conv1(Variant(), 5)
    assert rebuilt.shape == (96, 3, 11, 11) and rebuilt.dtype == np.float64
    np.testing.assert_array_equal(rebuilt, drawn.double().numpy())
    # the ungrouped twin starts from the same conv1 (issue 16: twins from one initialisation)
    np.testing.assert_array_equal(initial_conv1(Variant(connectivity="always"), 5), rebuilt)
    assert not np.array_equal(initial_conv1(Variant(), 6), rebuilt)


def _fake_run(directory, config: dict, variant: dict) -> str:
    """The two files recorded_initial_conv1 reads: a run-step file and half 0's variant."""
    directory.mkdir(parents=True, exist_ok=True)
    yaml = OmegaConf.to_yaml(OmegaConf.create(config))
    torch.save({"format": RUN_FORMAT, "step": 40, "config": yaml}, run_file(directory, 40))
    torch.save({"variant": variant}, half_file(directory, 0, 40))
    return str(run_file(directory, 40))


def test_a_run_checkpoint_gives_w0_from_its_seed_or_its_init_from(tmp_path):
    run = _fake_run(tmp_path / "run", {"seed": 7, "init_from": None}, {"connectivity": "always"})
    np.testing.assert_array_equal(recorded_initial_conv1(run), initial_conv1(Variant(), 7))
    np.testing.assert_array_equal(
        recorded_initial_conv1(tmp_path / "run"), initial_conv1(Variant(), 7)
    )
    start = torch.randn(96, 3, 11, 11)
    torch.save({"conv1.weight": start}, tmp_path / "init.pt")
    started = _fake_run(
        tmp_path / "started", {"seed": 7, "init_from": str(tmp_path / "init.pt")}, {}
    )
    np.testing.assert_array_equal(recorded_initial_conv1(started), start.double().numpy())


def test_files_that_do_not_say_how_they_started_have_no_w0(tmp_path):
    torch.save({"conv1.weight": torch.zeros(96, 3, 11, 11)}, tmp_path / "plain.pt")
    assert recorded_initial_conv1(tmp_path / "plain.pt") is None
    assert recorded_initial_conv1(tmp_path / "kernels.npy") is None
    no_seed = _fake_run(tmp_path / "old", {"epochs": 3}, {})
    with pytest.raises(ValueError, match="records no seed"):
        recorded_initial_conv1(no_seed)
