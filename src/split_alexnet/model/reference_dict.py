"""The monolithic state-dict layout (Caffe's bvlc_alexnet blobs) and its checks.

Keys conv1.weight, conv1.bias, …, fc8.bias; every output dimension holds half 0
first, then half 1; fc6 reads the gathered pool5 maps flattened channel-major.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from split_alexnet.model.table import Variant, layer_table


def reference_shapes(variant: Variant = Variant()) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor in the reference layout of `variant`."""
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in layer_table(variant):
        weight = list(layer.weight_shape)
        weight[layer.split_dim] *= variant.halves
        shapes[f"{layer.name}.weight"] = tuple(weight)
        shapes[f"{layer.name}.bias"] = (variant.halves * layer.out_per_half,)
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


# The paper's input and the scaled Figure 3 experiment's (data/scaled.py): fc6's width
# tells them apart (pool5's 6×6 or 2×2 maps).
IMAGE_SIZES = (224, 112)


def variant_of_shapes(state: Mapping[str, torch.Tensor]) -> Variant:
    """The network whose reference layout `state` has (connectivity, width and input size
    told by shapes).

    layers=code2012 has the paper's shapes (fc8 is 1000 × 4096 either way), so
    shapes tell the paper's net, never_talk's (layers-150.cfg), the ungrouped
    control and the one-GPU net apart, but not the paper's from code2012's.
    """
    num_classes = state["fc8.bias"].numel()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    for image_size in IMAGE_SIZES:
        for options in (
            {},
            {"connectivity": "never", "layers": "code2012"},
            {"connectivity": "always"},
            {"one_gpu": True},
        ):
            variant = Variant(num_classes=num_classes, image_size=image_size, **options)
            if reference_shapes(variant) == shapes:
                return variant
    sizes = " or ".join(f"{size}×{size}" for size in IMAGE_SIZES)
    raise ValueError(
        f"state dict matches no variant (paper, never_talk, ungrouped, one_gpu) at {sizes}"
    )
