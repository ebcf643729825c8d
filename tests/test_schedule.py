"""The ε schedules: every number of PAPER.md "Learning", plateau behaviour, state round trips."""

from __future__ import annotations

import inspect
import io
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from torch import nn

from split_alexnet.config import GroupLrConfig, register
from split_alexnet.parallel.layout import setup_layout
from split_alexnet.training.optim import PaperSGD, param_groups
from split_alexnet.training.run import Run, start
from split_alexnet.training.schedule import (
    FixedEpochsSchedule,
    PlateauSchedule,
    colour_noise_at,
    set_lr,
)

register()


def test_plateau_defaults_are_the_papers():
    s = PlateauSchedule(patience=2)
    assert (s.initial, s.factor, s.max_reductions) == (0.01, 0.1, 3)
    assert (s.lr, s.reductions, s.best) == (0.01, 0, math.inf)
    assert inspect.signature(PlateauSchedule).parameters["patience"].default is inspect._empty


def test_plateau_reduces_on_the_patience_th_epoch_without_improvement():
    s = PlateauSchedule(patience=2)
    assert [s.step(e) for e in (0.9, 0.8, 0.85, 0.8)] == [False, False, False, True]
    assert (s.lr, s.reductions, s.best) == (0.001, 1, 0.8)  # 0.8 again is a tie: no improvement


def test_plateau_improvement_resets_the_count():
    s = PlateauSchedule(patience=3)
    changes = [s.step(e) for e in (0.5, 0.6, 0.6, 0.4, 0.7, 0.7, 0.7)]
    assert changes == [False, False, False, False, False, False, True]
    assert s.best == 0.4 and s.lr == 0.001


def test_plateau_three_reductions_and_no_fourth():
    s = PlateauSchedule(patience=1)
    assert s.step(0.5) is False
    lrs = []
    for _ in range(6):
        s.step(0.5)
        lrs.append(s.lr)
    assert lrs == [0.001, 0.0001, 1e-05, 1e-05, 1e-05, 1e-05]
    assert s.reductions == 3
    assert s.step(0.49) is False and s.best == 0.49  # improvements are still recorded


def test_plateau_nan_is_no_improvement():
    s = PlateauSchedule(patience=1)
    s.step(0.5)
    assert s.step(float("nan")) is True and s.best == 0.5


def test_plateau_state_round_trip_continues_identically():
    a = PlateauSchedule(patience=2)
    for e in (0.5, 0.6, 0.7, 0.4, 0.45):
        a.step(e)
    state = a.state_dict()
    assert state == {"best": 0.4, "epochs_without_improvement": 1, "reductions": 1}
    assert all(type(v) in (int, float) for v in state.values())
    b = PlateauSchedule(patience=2)
    buffer = io.BytesIO()
    torch.save(PlateauSchedule(patience=2).state_dict(), buffer)  # best = inf
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["best"] == math.inf
    b.load_state_dict(state)
    assert b.lr == a.lr == 0.001
    assert b.step(0.45) is a.step(0.45) is True
    assert b.state_dict() == a.state_dict()


@pytest.mark.parametrize("bad", [{"patience": 0}, {"patience": 1, "factor": 10.0}])
def test_plateau_rejects_nonsense(bad):
    with pytest.raises(ValueError):
        PlateauSchedule(**bad)


def test_fixed_epochs_are_the_2012_log():
    s = FixedEpochsSchedule()
    assert (s.initial, s.factor, s.epochs, s.stop) == (0.01, 0.1, (25, 51, 79), 91)
    assert [s.lr_at(e) for e in (0, 24, 25, 50, 51, 78, 79, 90)] == [
        0.01,
        0.01,
        0.001,
        0.001,
        0.0001,
        0.0001,
        1e-05,
        1e-05,
    ]
    assert not s.finished(90) and s.finished(91)


def test_fixed_epochs_step_and_state():
    s = FixedEpochsSchedule()
    changed = [e + 1 for e in range(91) if s.step()]
    assert changed == [25, 51, 79]
    assert s.epoch == 91 and s.finished(s.epoch) and s.reductions == 3 and s.lr == 1e-05
    t = FixedEpochsSchedule()
    t.load_state_dict(s.state_dict())
    assert t.state_dict() == {"epoch": 91} and t.lr == 1e-05


def test_fixed_epochs_rejects_unordered_epochs():
    with pytest.raises(ValueError, match="increasing"):
        FixedEpochsSchedule(epochs=(51, 25))


def _code2012_optimizer() -> PaperSGD:
    # Two layers are enough: grouping matches on the layer name part only.
    model = nn.Sequential()
    model.add_module("conv1", nn.Conv2d(3, 2, 3))
    model.add_module("fc8", nn.Linear(2, 2))
    return PaperSGD(param_groups(model, "code2012", lr=0.01, weight_decay=0.0005))


def test_set_lr_keeps_group_scales():
    opt = _code2012_optimizer()
    set_lr(opt, 0.001)
    assert [g["lr"] for g in opt.param_groups] == [0.001, 0.002, 0.001, 0.002]
    untagged = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.5)
    set_lr(untagged, 0.01)
    assert untagged.param_groups[0]["lr"] == 0.01


# The log at the end of layer-params-145.cfg, written out from the log itself (not from
# conf/optim/code2012.yaml): from this epoch on, the ε of
# (weights, biases, conv1.weight, conv1.bias) and whether colour noise is on.
LOG_145 = {
    0: (0.01, 0.02, 0.01, 0.02, True),  # epsW 0.01, epsB 0.02 in every layer
    25: (0.001, 0.02, 0.001, 0.02, True),  # "epoch 25: set epsw to 0.001 from 0.01"
    51: (0.0001, 0.02, 0.0001, 0.02, True),  # "epoch 51: set epsw to 0.0001 from 0.001"
    # "epoch 67: set epsw to 0.00001 from 0.0001 on conv1 / set color noise to 0 from 0.1";
    # conv1's epsB as layer-params-149.cfg holds it beside epsW 0.00001
    67: (0.0001, 0.02, 1e-05, 0.002, False),
    72: (0.0001, 0.02, 0.0, 0.0, False),  # "epoch 72: set epsw to 0 on conv1"
    79: (1e-05, 0.02, 0.0, 0.0, False),  # "epoch 79: set epsw to 0.00001 from 0.0001"
}
KILLED_AT = 91  # "epoch 91: killed"
GROUPS = ("weights", "biases", "conv1.weight", "conv1.bias")


def _log_at(epoch: int) -> tuple[dict[str, float], bool]:
    *lrs, noise = LOG_145[max(e for e in LOG_145 if e <= epoch)]
    return dict(zip(GROUPS, lrs, strict=True)), noise


def _code2012(*overrides: str):
    with initialize_config_module("split_alexnet.conf", version_base=None):
        return compose("train", overrides=["optim=code2012", *overrides])


@pytest.fixture(scope="module")
def code2012_run(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A training run of optim=code2012 on the tiny set, set up and never stepped."""
    run_dir = tmp_path_factory.mktemp("code2012")
    cfg = _code2012(
        "mode=emulate", "data=folder", f"data.root={tiny_dataset}", "data.batch_size=8",
        "data.colour_noise=code", f"run_dir={run_dir}",
    )  # fmt: skip
    return start(cfg, setup_layout("emulate"))


def _epoch_settings(run: Run, epoch: int) -> tuple[dict[str, float], str]:
    """What the run's optimizer and training loader hold for `epoch` (Run.apply_lr)."""
    run.epoch = epoch
    run.apply_lr()
    return {g["name"]: g["lr"] for g in run.optimizer.param_groups}, run.train_loader.colour_noise


def test_code2012_replays_the_log_of_layer_params_145_epoch_by_epoch(code2012_run: Run):
    schedule = code2012_run.schedule
    for epoch in range(KILLED_AT + 1):
        assert schedule.finished(epoch) is (epoch == KILLED_AT), epoch
        if epoch == KILLED_AT:
            break
        lrs, on = _log_at(epoch)
        assert _epoch_settings(code2012_run, epoch) == (lrs, "code" if on else "off"), epoch
        schedule.step()


@pytest.mark.parametrize("epoch", [66, 67, 71, 72, 79, 90])
def test_code2012_resumed_takes_the_logs_epsilons_from_the_epoch_alone(
    code2012_run: Run, epoch: int
):
    code2012_run.schedule.load_state_dict({"epoch": epoch})
    lrs, _ = _log_at(epoch)
    assert _epoch_settings(code2012_run, epoch)[0] == lrs


def test_a_later_hand_set_line_wins_and_unknown_groups_are_named():
    opt = _code2012_optimizer()
    same_epoch = [GroupLrConfig(3, "conv1.weight", 0.5), GroupLrConfig(3, "conv1.weight", 0.0)]
    set_lr(opt, 0.001, epoch=3, group_lr=[GroupLrConfig(9, "biases", 1.0), *same_epoch])
    assert [g["lr"] for g in opt.param_groups] == [0.001, 0.002, 0.0, 0.002]
    with pytest.raises(KeyError, match=r"\['all'\].*the groups are \['weights'"):
        set_lr(opt, 0.01, group_lr=[GroupLrConfig(0, "all", 0.01)])


def test_colour_noise_stays_as_set_without_an_off_epoch():
    assert {colour_noise_at("code", None, e) for e in range(200)} == {"code"}
