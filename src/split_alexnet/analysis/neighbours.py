"""Nearest images by Euclidean distance between fc7 activations (the paper's Figure 4)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def nearest(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    k: int,
    exclude: Sequence[int | None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, distances), each (Q, k): the `k` gallery rows nearest each query, nearest first.

    `exclude[q]` names a gallery row query q may not return (itself, when
    queries are drawn from the gallery).
    """
    distances = torch.cdist(queries.double(), gallery.double())
    if exclude is not None:
        for q, row in enumerate(exclude):
            if row is not None:
                distances[q, row] = float("inf")
    k = min(k, gallery.shape[0] - (exclude is not None and any(e is not None for e in exclude)))
    d, i = torch.topk(distances, k, dim=1, largest=False, sorted=True)
    return i, d


def nearest_class_agreement(
    indices: torch.Tensor, query_labels: Sequence[int], gallery_labels: Sequence[int]
) -> float:
    """The fraction of queries whose nearest neighbour (`indices[:, 0]`) shares their class."""
    gallery = torch.as_tensor(list(gallery_labels))
    hits = gallery[indices[:, 0]] == torch.as_tensor(list(query_labels))
    return float(hits.double().mean())
