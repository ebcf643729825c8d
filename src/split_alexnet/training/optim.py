"""The paper's stochastic gradient descent, in exactly its form (PAPER.md, "Learning").

    v ← μ·v − wd·ε·w − ε·⟨∂L/∂w⟩ ;  w ← w + v

cuda-convnet (src/weights.cu) keeps ε inside the velocity:
`inc = mom·inc + ε·grad/N − wc·ε·w`. The 1/N is already in the gradient of a
batch-mean loss. torch.optim.SGD keeps ε outside (v ← μ·v + g + wd·w;
w ← w − ε·v), which is the same update while ε is constant (v_sgd = −v/ε) but
not after ε changes: the paper's velocity carries the old ε's steps at their
old size, PyTorch's rescales them to the new ε at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch import nn
from torch.optim import Optimizer

Preset = Literal["paper", "code2012"]


class PaperSGD(Optimizer):
    """Momentum SGD with ε and weight decay inside the velocity (weights.cu).

    Per group: "lr" (ε), "momentum" (μ), "weight_decay" (wd). The velocity is
    `state[p]["momentum_buffer"]`, starting at zero. Parameters whose grad is
    None are skipped (their velocity does not decay either, as in cuda-convnet
    a layer that gets no update keeps its `inc`).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 0.0005,
    ) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(
                f"lr, momentum and weight_decay must be >= 0, got {lr}, {momentum}, {weight_decay}"
            )
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            by_kind: dict[tuple[torch.device, torch.dtype], tuple[list, list, list]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("PaperSGD does not support sparse gradients")
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(
                        p, memory_format=torch.preserve_format
                    )
                ws, gs, vs = by_kind.setdefault((p.device, p.dtype), ([], [], []))
                ws.append(p)
                gs.append(p.grad)
                vs.append(state["momentum_buffer"])
            lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            for ws, gs, vs in by_kind.values():
                torch._foreach_mul_(vs, mu)
                if wd != 0:
                    torch._foreach_add_(vs, ws, alpha=-wd * lr)
                torch._foreach_add_(vs, gs, alpha=-lr)
                torch._foreach_add_(ws, vs)
        return loss


def _layer_and_kind(name: str) -> tuple[str, str]:
    # Names are halves.<h>.<layer>.<weight|bias> (model/split.py) or layers.<layer>.<…>
    # (reference.py): the layer is the second-to-last part.
    parts = name.split(".")
    return (parts[-2] if len(parts) > 1 else ""), parts[-1]


def param_groups(
    model: nn.Module, preset: Preset, lr: float, weight_decay: float
) -> list[dict[str, Any]]:
    """Parameter groups for `PaperSGD` (or torch.optim.SGD), tagged "name" and "lr_scale".

    "paper": one group "all", the same ε and weight decay for every layer (Sec. 5).
    "code2012": the original code's layer-params files: biases get 2·ε and no
    weight decay, and conv1 has its own groups so that its ε can be set to 0
    late in training (`optim.group_lr`). Groups, always in this order and
    always present so that optimizer states from any process layout line up:
    "weights", "biases", "conv1.weight", "conv1.bias".

    Each group's ε is `lr · lr_scale`; `schedule.set_lr` keeps that relation.
    """
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if preset == "paper":
        return [
            {
                "name": "all",
                "params": [p for _, p in params],
                "lr": lr,
                "lr_scale": 1.0,
                "weight_decay": weight_decay,
            }
        ]
    if preset != "code2012":
        raise ValueError(f"unknown optimiser preset {preset!r}; expected 'paper' or 'code2012'")
    buckets: dict[str, list[nn.Parameter]] = {
        "weights": [],
        "biases": [],
        "conv1.weight": [],
        "conv1.bias": [],
    }
    for name, p in params:
        layer, kind = _layer_and_kind(name)
        is_bias = kind == "bias"
        if layer == "conv1":
            buckets["conv1.bias" if is_bias else "conv1.weight"].append(p)
        else:
            buckets["biases" if is_bias else "weights"].append(p)
    groups = []
    for group_name, ps in buckets.items():
        is_bias = group_name.endswith(("bias", "biases"))
        scale = 2.0 if is_bias else 1.0
        groups.append(
            {
                "name": group_name,
                "params": ps,
                "lr": lr * scale,
                "lr_scale": scale,
                "weight_decay": 0.0 if is_bias else weight_decay,
            }
        )
    return groups


def velocities(optimizer: Optimizer, model: nn.Module) -> dict[str, torch.Tensor]:
    """Each parameter's momentum buffer keyed by parameter name.

    Names (halves.<h>.…) are the same in emulation and in each process of a
    pair, so a checkpoint keyed this way moves between layouts, which the
    optimizer's index-keyed state_dict does not.
    """
    out = {}
    for name, p in model.named_parameters():
        buf = optimizer.state.get(p, {}).get("momentum_buffer")
        if buf is not None:
            out[name] = buf
    return out


def load_velocities(optimizer: Optimizer, model: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    """Put `velocities(...)` back for the parameters `model` holds; other names are ignored."""
    for name, p in model.named_parameters():
        if name in saved:
            # In the parameter's own memory layout, whichever layout the run saved.
            optimizer.state[p]["momentum_buffer"] = torch.empty_like(p).copy_(saved[name])
