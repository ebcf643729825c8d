"""The learning-rate (ε) schedule of Sec. 5 (PAPER.md, "Learning").

Two plain objects whose state is a dict of numbers, so the run state can hold
them in a weights_only checkpoint:

- `PlateauSchedule`, the paper's words: ε = 0.01, divided by 10 when the
  validation error stops improving, three reductions.
- `FixedEpochsSchedule`, what the 2012 run did (layer-params-145.cfg):
  0.01 → 0.001 at epoch 25, → 0.0001 at 51, → 0.00001 at 79, stop at 91.

Either hands its ε to the optimizer with `set_lr`, which keeps each group's
multiplier (`param_groups` in optim.py tags groups with "lr_scale": 2 for the
code's biases, 0 for a frozen group) except where the 2012 log set a group's ε
by hand (`GroupLr`: epsB held at 0.02, conv1 slowed at 67 and stopped at 72).
`colour_noise_at` is the log's other hand-made change: colour noise off from 67.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

from torch.optim import Optimizer


def _reduced(initial: float, factor: float, reductions: int) -> float:
    # Divide by 1/factor rather than multiply by factor: 0.01 / 10**k gives the
    # literals 0.001, 0.0001, 1e-05 where 0.01 * 0.1**k drifts in the last bit.
    return initial / (1.0 / factor) ** reductions


class GroupLr(Protocol):
    """One of the 2012 log's hand-made changes: from `epoch` on, `group` trains with ε `lr`.

    config.GroupLrConfig is one; any object with these three attributes will do.
    """

    epoch: int
    group: str
    lr: float


def set_lr(
    optimizer: Optimizer, lr: float, *, epoch: int = 0, group_lr: Sequence[GroupLr] = ()
) -> None:
    """ε for every group in `epoch`: `lr · group["lr_scale"]` (scale 1 where a group has
    none), or the ε of the last `group_lr` entry for that group whose epoch has come.

    A hand-set ε is not scaled: layer-params-145.cfg holds epsB at 0.02 while
    the log cuts epsW, and sets conv1's ε outright.
    """
    by_hand: dict[str, float] = {}
    for change in sorted(group_lr, key=lambda c: c.epoch):  # stable: a later line wins a tie
        if change.epoch <= epoch:
            by_hand[change.group] = change.lr
    names = [g.get("name") for g in optimizer.param_groups]
    unknown = sorted({c.group for c in group_lr} - set(names))
    if unknown:
        raise KeyError(
            f"optim.group_lr names {unknown}, not parameter groups; the groups are {names}"
        )
    for group in optimizer.param_groups:
        group["lr"] = by_hand.get(group.get("name"), lr * group.get("lr_scale", 1.0))


def colour_noise_at(setting: str, off_at: int | None, epoch: int) -> str:
    """The training loader's colour noise in `epoch`: `setting` (data.colour_noise), or
    "off" from epoch `off_at` on (layer-params-145.cfg: "set color noise to 0 from 0.1"
    at 67; with a coefficient of 0, convdata.py neither adds noise nor divides by 1.1).
    """
    return "off" if off_at is not None and epoch >= off_at else setting


class PlateauSchedule:
    """ε divided by 1/`factor` after `patience` epochs in a row without a new best.

    Call `step(val_error)` once per epoch, after validation. An epoch improves
    only if its error is strictly lower than the best so far (a tie or NaN does
    not). Unlike torch's ReduceLROnPlateau, which waits patience + 1 epochs,
    ε drops on the `patience`-th epoch without improvement; the count restarts
    after each reduction, and there are at most `max_reductions` (the paper's
    three).
    """

    def __init__(
        self,
        initial: float = 0.01,
        factor: float = 0.1,
        *,
        patience: int,
        max_reductions: int = 3,
    ) -> None:
        if patience < 1:
            raise ValueError(f"patience must be at least 1 epoch, got {patience}")
        if not 0 < factor < 1:
            raise ValueError(f"factor must lie in (0, 1), got {factor}")
        self.initial, self.factor = initial, factor
        self.patience, self.max_reductions = patience, max_reductions
        self.best = math.inf
        self.epochs_without_improvement = 0
        self.reductions = 0

    @property
    def lr(self) -> float:
        return _reduced(self.initial, self.factor, self.reductions)

    def step(self, val_error: float) -> bool:
        """Record one epoch's validation error; True when ε has just been reduced."""
        val_error = float(val_error)
        if val_error < self.best:
            self.best = val_error
            self.epochs_without_improvement = 0
            return False
        self.epochs_without_improvement += 1
        if (
            self.epochs_without_improvement >= self.patience
            and self.reductions < self.max_reductions
        ):
            self.reductions += 1
            self.epochs_without_improvement = 0
            return True
        return False

    def finished(self, epoch: int) -> bool:
        """Never: the paper's rule lowers ε, and the run's `epochs` ends it."""
        return False

    def state_dict(self) -> dict[str, float | int]:
        return {
            "best": self.best,
            "epochs_without_improvement": self.epochs_without_improvement,
            "reductions": self.reductions,
        }

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        self.best = float(state["best"])
        self.epochs_without_improvement = int(state["epochs_without_improvement"])
        self.reductions = int(state["reductions"])


class FixedEpochsSchedule:
    """ε by epoch as in the 2012 log; epochs count from 0 (completed epochs).

    Epochs 0–24 train with 0.01, 25–50 with 0.001, 51–78 with 0.0001, 79–90
    with 0.00001; `finished(91)` is True, so 91 epochs run in all.
    `step()` after each epoch advances `epoch`, so the loop can use the same
    calls as for `PlateauSchedule`.
    """

    def __init__(
        self,
        initial: float = 0.01,
        factor: float = 0.1,
        epochs: Sequence[int] = (25, 51, 79),
        stop: int = 91,
    ) -> None:
        if list(epochs) != sorted(epochs) or any(e >= stop for e in epochs):
            raise ValueError(f"reduction epochs {tuple(epochs)} must be increasing and < {stop}")
        self.initial, self.factor = initial, factor
        self.epochs, self.stop = tuple(epochs), stop
        self.epoch = 0

    def lr_at(self, epoch: int) -> float:
        return _reduced(self.initial, self.factor, sum(epoch >= e for e in self.epochs))

    def finished(self, epoch: int) -> bool:
        return epoch >= self.stop

    @property
    def lr(self) -> float:
        return self.lr_at(self.epoch)

    @property
    def reductions(self) -> int:
        return sum(self.epoch >= e for e in self.epochs)

    def step(self, val_error: float | None = None) -> bool:
        """One epoch done; True when the next epoch runs with a new ε."""
        self.epoch += 1
        return self.epoch in self.epochs

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])


Schedule = PlateauSchedule | FixedEpochsSchedule
