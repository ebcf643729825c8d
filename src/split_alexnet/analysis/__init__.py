"""The paper's Figures 3 and 4: what the two halves' conv1 kernels learn, and fc7 as a feature.

`colour` measures kernels (chromatic index, frequency centroid) and compares
the halves (AUC, separation, permutation test); `drift` measures how far conv1
has moved from its initialisation W₀ (cheap enough to log during training);
`kernels` reads conv1 from the files users have and rebuilds W₀; `pictures`
draws the kernel grids and plots; `neighbours` finds nearest images by fc7
activations. `figure3` and `figure4` are the commands (split-alexnet-figure3,
split-alexnet-figure4).
"""

from split_alexnet.analysis.colour import (
    HalfComparison,
    chromatic_index,
    compare_halves,
    frequency_centroid,
    luminance_chromatic,
    separation_null,
)
from split_alexnet.analysis.drift import conv1_diagnostics
from split_alexnet.analysis.kernels import (
    initial_conv1,
    load_conv1,
    load_reference_state,
    recorded_initial_conv1,
    to_pixel_units,
)
from split_alexnet.analysis.neighbours import nearest, nearest_class_agreement

__all__ = [
    "HalfComparison",
    "chromatic_index",
    "compare_halves",
    "conv1_diagnostics",
    "frequency_centroid",
    "initial_conv1",
    "load_conv1",
    "load_reference_state",
    "luminance_chromatic",
    "nearest",
    "nearest_class_agreement",
    "recorded_initial_conv1",
    "separation_null",
    "to_pixel_units",
]
