"""Top-1 and top-5 error on a validation split: centre crop, or the paper's ten views."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from split_alexnet.data import PairLoader
from split_alexnet.parallel.layout import Layout
from split_alexnet.training.metrics import topk_wrong


def evaluate(model: nn.Module, loader: PairLoader, layout: Layout) -> dict[str, float]:
    """Errors over every validation image, each counted once across all replicas.

    Ten views (N, 10, 3, 224, 224) are averaged as softmax outputs (Sec. 4.1).
    torch.no_grad rather than inference_mode: gloo's all-gather refuses inference tensors.
    """
    dtype = next(model.parameters()).dtype  # float64 for a precision=fp64 run
    was_training = model.training
    model.eval()
    counts = torch.zeros(3, dtype=torch.int64, device=layout.device)  # top-1, top-5 wrong, seen
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
            counts[:2] += topk_wrong(scores, labels, (1, k))
            counts[2] += len(labels)
    model.train(was_training)
    wrong1, wrong5, seen = layout.sum_over_replicas(counts).tolist()
    return {"top1_error": wrong1 / seen, "top5_error": wrong5 / seen, "images": seen}
