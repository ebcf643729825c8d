"""Top-1 and top-5 error on a validation split: centre crop, or the paper's ten views."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from split_alexnet.data import PairLoader
from split_alexnet.parallel.layout import Layout


def evaluate(
    model: nn.Module, loader: PairLoader, layout: Layout, by_class: bool = False
) -> dict[str, Any]:
    """Errors over every validation image, each counted once across all replicas.

    Ten views (N, 10, 3, 224, 224) are averaged as softmax outputs (Sec. 4.1).
    torch.no_grad rather than inference_mode: gloo's all-gather refuses inference tensors.
    by_class: add "per_class", [top-1 wrong, top-5 wrong, seen] for each of the loader's classes.
    """
    dtype = next(model.parameters()).dtype  # float64 for a precision=fp64 run
    was_training = model.training
    model.eval()
    # per class: top-1 wrong, top-5 wrong, seen
    counts = torch.zeros(loader.num_classes, 3, dtype=torch.int64, device=layout.device)
    with torch.no_grad():
        for images, labels in tqdm(
            loader, desc="validate", leave=False, disable=not layout.is_main
        ):
            images = images.to(dtype)
            if images.dim() == 5:
                views = images.shape[1]
                probs = F.softmax(model(images.flatten(0, 1)), dim=1)
                scores = probs.unflatten(0, (-1, views)).mean(1)
            else:
                scores = model(images)
            k = min(5, scores.shape[1])
            hit = scores.topk(k, dim=1).indices == labels[:, None]
            missed = torch.stack([~hit[:, 0], ~hit.any(1), torch.ones_like(hit[:, 0])], 1)
            counts.index_add_(0, labels, missed.long())
    model.train(was_training)
    loader.check_pair()
    per_class = layout.sum_over_replicas(counts)
    wrong1, wrong5, seen = per_class.sum(0).tolist()
    result = {"top1_error": wrong1 / seen, "top5_error": wrong5 / seen, "images": seen}
    return {**result, "per_class": per_class.tolist()} if by_class else result
