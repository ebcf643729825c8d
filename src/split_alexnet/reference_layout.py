"""The monolithic state-dict layout (Caffe's bvlc_alexnet blobs) and its checks.

Keys conv1.weight, conv1.bias, …, fc8.bias; every output dimension holds half 0
first, then half 1; fc6 reads the gathered pool5 maps flattened channel-major.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from split_alexnet.layers import Variant, layer_table


def reference_shapes(variant: Variant = Variant()) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor in the reference layout of `variant`."""
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in layer_table(variant):
        out, *rest = layer.weight_shape
        shapes[f"{layer.name}.weight"] = (variant.halves * out, *rest)
        shapes[f"{layer.name}.bias"] = (variant.halves * out,)
    return shapes


def check_reference_state_dict(state: Mapping[str, torch.Tensor], variant: Variant) -> None:
    """Raise ValueError naming the first missing, unexpected or misshapen key."""
    expected = reference_shapes(variant)
    for key, shape in expected.items():
        if key not in state:
            raise ValueError(f"reference state dict has no {key!r} (expected shape {shape})")
        got = tuple(state[key].shape)
        if got != shape:
            raise ValueError(f"reference state dict {key!r} has shape {got}, expected {shape}")
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise ValueError(f"reference state dict has unexpected keys: {', '.join(unexpected)}")
