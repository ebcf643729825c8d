"""Every random number generator of the network, seeded from the run's one seed.

Seeds are derived with numpy's SeedSequence from (seed, purpose, …), so each
stream is independent of the others and of how the network is laid out.
"""

from __future__ import annotations

import numpy as np


def _derived(*words: int) -> int:
    return int(np.random.SeedSequence(list(words)).generate_state(1, dtype=np.uint64)[0] >> 1)


def init_seed(seed: int, half: int, layer_index: int) -> int:
    """The generator seed for one half's slice of one layer's weights."""
    return _derived(seed, 0, half, layer_index)


def dropout_seed(seed: int, layer_index: int) -> int:
    """One seed per layer, not per half: every layout draws the same full-width mask."""
    return _derived(seed, 1, layer_index)


def mask_seed(layer_seed: int, draw: int) -> int:
    """The seed of a dropout layer's `draw`-th mask (0, 1, … one per training forward)."""
    return _derived(layer_seed, draw)
