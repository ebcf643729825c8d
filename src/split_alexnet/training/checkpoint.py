"""A run's checkpoint: one file per half, then the run state, which marks it complete.

    <run>/checkpoints/half0-step00000120.pt   half 0: parameters, velocities, dropout draws
    <run>/checkpoints/half1-step00000120.pt   half 1: the same
    <run>/checkpoints/run-step00000120.pt     epoch, next batch, schedule, config, the
                                              halves' SHA-256

Each process writes the halves it holds, so a two-process checkpoint and an
emulated one are the same files and either layout resumes from either. The run
file is written last, after every half is on disk: a checkpoint without it is
incomplete and ignored. Everything is plain data, loaded with weights_only.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from enum import Enum
from pathlib import Path
from typing import Any

import torch
from torch.optim import Optimizer

from split_alexnet.model.dropout import PaperDropout
from split_alexnet.model.split import SplitAlexNet
from split_alexnet.model.table import Variant, saved_variant
from split_alexnet.parallel.layout import Layout
from split_alexnet.training.files import (
    CheckpointError,
    atomic_save,
    check_compatible,
    digest,
    load_checkpoint,
    numbered,
    prune,
)
from split_alexnet.training.optim import load_velocities, velocities

HALF_FORMAT = "split_alexnet.half/1"
RUN_FORMAT = "split_alexnet.run/1"
log = logging.getLogger("split_alexnet")


def half_file(directory: Path, half: int, step: int) -> Path:
    return directory / f"half{half}-step{step:08d}.pt"


def run_file(directory: Path, step: int) -> Path:
    return directory / f"run-step{step:08d}.pt"


def _dropout_layers(model: SplitAlexNet, half: str) -> dict[str, PaperDropout]:
    return {
        name: module
        for name, module in model.halves[half].named_modules()
        if isinstance(module, PaperDropout)
    }


def _plain(variant: Variant) -> dict[str, Any]:
    """The variant as a half file records it: weights_only loading reads no Enum, so its
    choices are their strings, which `Variant(**saved)` takes back."""
    return {k: v.value if isinstance(v, Enum) else v for k, v in asdict(variant).items()}


def save_halves(directory: Path, step: int, model: SplitAlexNet, optimizer: Optimizer) -> None:
    """Write this process's halves of checkpoint `step`."""
    directory.mkdir(parents=True, exist_ok=True)
    moments = velocities(optimizer, model)
    for h in model.halves:
        prefix = f"halves.{h}."
        atomic_save(
            {
                "format": HALF_FORMAT,
                "half": int(h),
                "variant": _plain(model.variant),
                "params": {
                    name: p.detach().cpu()
                    for name, p in model.named_parameters()
                    if name.startswith(prefix)
                },
                "velocity": {n: v.cpu() for n, v in moments.items() if n.startswith(prefix)},
                "dropout_draws": {
                    name: layer.draws for name, layer in _dropout_layers(model, h).items()
                },
            },
            half_file(directory, int(h), step),
        )


def save_run(directory: Path, step: int, state: dict[str, Any], keep: int, halves: int) -> None:
    """Write the run state of checkpoint `step` (after every half is saved) and prune old ones.

    The run file records each half file's SHA-256, read back from the disk, so a
    half damaged later (a bit flip, a truncation) is found before it is resumed.
    """
    digests = {h: digest(half_file(directory, h, step)) for h in range(halves)}
    atomic_save(
        {"format": RUN_FORMAT, "step": step, "digests": digests, **state},
        run_file(directory, step),
    )
    prune(directory, "run-step*.pt", keep)
    for h in range(halves):
        prune(directory, f"half{h}-step*.pt", keep)


def save_checkpoint(
    directory: Path,
    step: int,
    model: SplitAlexNet,
    optimizer: Optimizer,
    layout: Layout,
    state: dict[str, Any],
    keep: int,
) -> None:
    """Checkpoint `step` from every process of the run: the halves, then the run state.

    The pair of data-parallel rank 0 writes the halves; once every half is on
    disk the main process writes the run file that marks the checkpoint complete.
    """
    if layout.writes_halves:
        save_halves(directory, step, model, optimizer)
    layout.barrier()
    if layout.is_main:
        save_run(directory, step, state, keep, model.variant.halves)
    layout.barrier()


def latest(directory: Path) -> Path | None:
    """The newest complete, intact checkpoint's run file in a run directory or its checkpoints/.

    A newer checkpoint that is damaged (an unreadable run file, a missing half, a
    half whose SHA-256 differs from the one its run file recorded) is said in one
    line and passed over for the one before it.
    """
    if (directory / "checkpoints").is_dir():
        directory = directory / "checkpoints"
    if not directory.is_dir():
        return None
    for step, path in reversed(numbered(directory, "run-step*.pt")):
        damage = _damage(path, step)
        if damage is None:
            return path
        log.warning("checkpoint step %d is not usable (%s); trying the one before it", step, damage)
    return None


def _damage(run_path: Path, step: int) -> str | None:
    """What is wrong with checkpoint `step`, or None if it is whole."""
    try:
        state = load_run(run_path)
    except CheckpointError as error:
        return str(error)
    # A run file written before checksums were recorded vouches for half 0's presence only.
    for h, recorded in state.get("digests", {0: None}).items():
        path = half_file(run_path.parent, int(h), step)
        if not path.is_file():
            return f"{path.name} is missing"
        if recorded is not None and digest(path) != recorded:
            return f"{path.name} does not match the checksum its run file recorded"
    return None


def resolve(path: Path) -> Path:
    """A run file from a run directory (its newest checkpoint) or the run file itself."""
    if path.is_dir():
        found = latest(path)
        if found is None:
            raise CheckpointError(f"no complete checkpoint in {path}")
        return found
    if not path.exists():
        raise CheckpointError(f"cannot load checkpoint {path}: no such file")
    return path


def load_run(path: Path) -> dict[str, Any]:
    state = load_checkpoint(path, what="run state")
    if not isinstance(state, dict) or state.get("format") != RUN_FORMAT:
        raise CheckpointError(f"{path} is not a split_alexnet run checkpoint")
    return state


def load_halves(run_path: Path, model: SplitAlexNet, optimizer: Optimizer | None) -> None:
    """Load the halves this process holds from the checkpoint `run_path` belongs to."""
    step = int(load_run(run_path)["step"])
    expected = {"format": HALF_FORMAT, "variant": _plain(model.variant)}
    for h in model.halves:
        path = half_file(run_path.parent, int(h), step)
        saved = load_checkpoint(path, what=f"half {h}")
        if not isinstance(saved, dict):
            raise CheckpointError(f"{path} is not a split_alexnet half checkpoint")
        # Compared as the network it names: a record older than a Variant field reads as
        # that field's default.
        saved = {**saved, "variant": _plain(_recorded_variant(saved, path))}
        check_compatible(saved, {**expected, "half": int(h)}, path)
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in saved["params"].items():
                params[name].copy_(value)
        if optimizer is not None:
            load_velocities(optimizer, model, saved["velocity"])
        # Before the masks were seeded per draw, halves held a device's generator state
        # ("dropout_rng", 16 bytes on CUDA, 5,056 on a CPU); a training run draws one mask
        # per layer and step, so the step is the count such a checkpoint stands for.
        draws = saved.get("dropout_draws") or dict.fromkeys(saved.get("dropout_rng", ()), step)
        for name, layer in _dropout_layers(model, h).items():
            layer.draws = int(draws[name])


def variant_of(run_path: Path) -> Variant:
    """The network a checkpoint holds, from its half 0 file."""
    step = int(load_run(run_path)["step"])
    path = half_file(run_path.parent, 0, step)
    saved = load_checkpoint(path, what="half 0")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path} is not a split_alexnet half checkpoint")
    return _recorded_variant(saved, path)


def _recorded_variant(saved: dict[str, Any], path: Path) -> Variant:
    if "variant" not in saved:
        raise CheckpointError(f"{path} is not a split_alexnet half checkpoint")
    try:
        return saved_variant(saved["variant"])
    except ValueError as error:
        raise CheckpointError(f"cannot load checkpoint {path}: {error}") from None


def reference_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's whole network (a run directory or a run-step file), reference layout."""
    run_path = resolve(checkpoint)
    model = SplitAlexNet.emulated(variant_of(run_path))
    load_halves(run_path, model, None)
    return model.reference_state_dict()
