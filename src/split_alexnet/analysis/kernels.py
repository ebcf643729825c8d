"""conv1 kernels and whole reference-layout state dicts from the files users have.

Every file format is recognised in `_reference_state` (torch files) or
`load_conv1` (the CaffeNet picture), and nowhere else, so a new checkpoint
layout is one branch there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from split_alexnet.model.blocks import Block
from split_alexnet.model.table import Variant, layer_table
from split_alexnet.training import checkpoint as resume

KERNELS = 96


def _reference_state(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        if "conv1.weight" in obj:
            return dict(obj)
        halves = sorted(k for k in obj if k.startswith("halves.") and k.endswith(".conv1.weight"))
        if halves:  # SplitAlexNet.state_dict() of an emulated model: halves.<h>.<layer>.<p>
            return _join_halves(obj)
        for key in ("model", "state_dict"):  # a checkpoint dict holding the model's weights
            if isinstance(obj.get(key), Mapping):
                return _reference_state(obj[key], path)
    raise ValueError(
        f"{path}: not a reference-layout state dict, SplitAlexNet state dict or checkpoint "
        "holding one (no 'conv1.weight'); for Caffe's rendered kernels use a .npy file"
    )


def _join_halves(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    joined: dict[str, list[torch.Tensor]] = {}
    for key in sorted(state, key=lambda k: (k.split(".", 2)[2], int(k.split(".")[1]))):
        if key.startswith("halves."):
            joined.setdefault(key.split(".", 2)[2], []).append(state[key])
    return {k: torch.cat(v) for k, v in joined.items()}


def load_reference_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The monolithic (reference-layout) state dict in `path`.

    A training run's directory or its run-step*.pt file: both halves joined
    from the checkpoint's half files. Otherwise a torch file holding a state dict.
    """
    path = Path(path)
    if path.is_dir():
        return resume.reference_state(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: not a torch file of tensors ({type(error).__name__})") from error
    if isinstance(obj, Mapping) and obj.get("format") == resume.RUN_FORMAT:
        return resume.reference_state(path)
    return _reference_state(obj, path)


def load_conv1(path: str | Path) -> np.ndarray:
    """The 96 conv1 kernels in `path` as float64 (96, 3, 11, 11), channels R, G, B.

    `.npy`: Caffe's kernels as rendered by its notebook (tests/data/README.md):
    uint8 (96, 11, 11, 3) BGR, one global min–max display scaling. They come
    back in that display's units, centred on their overall mean (the weights'
    zero and scale are lost; the chromatic index does not need them).
    Anything else: a torch file that `load_reference_state` reads.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file or directory")
    if path.suffix == ".npy":
        rendered = np.load(path)
        if rendered.shape != (KERNELS, 11, 11, 3):
            raise ValueError(
                f"{path}: expected rendered kernels (96, 11, 11, 3), got {rendered.shape}"
            )
        kernels = rendered[..., ::-1].transpose(0, 3, 1, 2).astype(np.float64) / 255.0
        return kernels - kernels.mean()
    weight = load_reference_state(path)["conv1.weight"]
    if weight.shape[:2] != (KERNELS, 3):
        raise ValueError(
            f"{path}: conv1.weight has shape {tuple(weight.shape)}, need (96, 3, h, w)"
        )
    return weight.detach().to(torch.float64).numpy()


def to_pixel_units(kernels: np.ndarray, std: Sequence[float] | None) -> np.ndarray:
    """Weights of a net fed (pixel − mean)/std per channel, as weights on (pixel − mean).

    w·(x − m)/s = (w/s)·(x − m): each input channel's weights are divided by
    that channel's std (R, G, B), so grey stays grey in the picture and in CI.
    """
    if std is None:
        return kernels
    std = np.asarray(std, dtype=np.float64)
    if std.shape != (3,) or (std <= 0).any():
        raise ValueError(f"std must be three positive numbers (R, G, B), got {std.tolist()}")
    return kernels / std[None, :, None, None]


def initial_conv1(variant: Variant, seed: int, init_from: str | Path | None = None) -> np.ndarray:
    """conv1 as a run of `variant` seeded `seed` starts, float64 (96, 3, 11, 11).

    Drawn by the model's own Block (model/blocks.py: one generator per half from
    model/seeds.init_seed), so W₀ needs no step-0 checkpoint and is the same in
    every layout; a run started from `init_from` (TrainConfig) starts from its conv1.
    """
    if init_from:
        return load_conv1(init_from)
    layer = layer_table(variant)[0]
    if layer.name != "conv1":
        raise ValueError(f"the layer table starts with {layer.name}, not conv1")
    return Block(layer, 0, variant, seed, halves=variant.halves).weight.detach().double().numpy()


def recorded_initial_conv1(path: str | Path) -> np.ndarray | None:
    """W₀ of the training run that wrote checkpoint `path` (its directory or run-step file).

    Rebuilt from the seed and network the checkpoint records, or read from the
    `init_from` file the run started from. None for any other file: a bare state
    dict does not say how it was initialised, so its W₀ must be given.
    """
    path = Path(path)
    if path.suffix == ".npy" or not path.exists():
        return None
    if not path.is_dir():
        # mmap: a whole model's state dict is not read just to learn that it is not a run file
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if not (isinstance(obj, Mapping) and obj.get("format") == resume.RUN_FORMAT):
            return None
    run_path = resume.resolve(path)
    cfg = OmegaConf.create(resume.load_run(run_path).get("config") or "{}")
    if "seed" not in cfg:
        raise ValueError(f"{run_path}: the checkpoint records no seed to rebuild conv1's W₀ from")
    return initial_conv1(resume.variant_of(run_path), int(cfg.seed), cfg.get("init_from"))
