"""ReLU then LRN, forward and backward, at the shapes of one half of conv1 and conv2.

    .venv/bin/python bench/bench_lrn.py              # batch 128, 2 threads (~2 min)
    .venv/bin/python bench/bench_lrn.py --batch 32   # a quick look

Five ways, interleaved over the repetitions, each from the pre-activation y
(a conv output) to the gradient with respect to y: torch.nn.LocalResponseNorm
after F.relu; this project's autograd function, eager, after F.relu and with
the ReLU folded in (`rectify=True`); and the same two compiled
(torch.compile, `split_alexnet.model.lrn.compile_lrn`). Reports the best and median
time of each and the speed-up over torch's module. Numbers: docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

if "--no-thp" not in sys.argv:
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import torch
import torch.nn.functional as F

from split_alexnet.model import lrn
from split_alexnet.model.table import LRN_ALPHA, LRN_BETA, LRN_K, LRN_SIZE

ALPHA = LRN_ALPHA / LRN_SIZE  # the network as trained (layer.py `scale /= size`)
SHAPES = {"conv1 half": (48, 55, 55), "conv2 half": (128, 27, 27)}


def torch_module(y: torch.Tensor) -> torch.Tensor:
    # torch's module divides its alpha by the window size itself.
    return torch.nn.LocalResponseNorm(LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K)(F.relu(y))


def relu_then_lrn(y: torch.Tensor) -> torch.Tensor:
    return lrn.local_response_norm(F.relu(y), LRN_SIZE, ALPHA, LRN_BETA, LRN_K)


def folded(y: torch.Tensor) -> torch.Tensor:
    return lrn.local_response_norm(y, LRN_SIZE, ALPHA, LRN_BETA, LRN_K, rectify=True)


WAYS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], bool]] = {
    "nn.LocalResponseNorm after relu": (torch_module, False),
    "eager, after relu": (relu_then_lrn, False),
    "eager, relu folded in": (folded, False),
    "compiled, after relu": (relu_then_lrn, True),
    "compiled, relu folded in": (folded, True),
}


def seconds(way: str, y: torch.Tensor, upstream: torch.Tensor) -> float:
    function, compiled = WAYS[way]
    lrn.compile_lrn(compiled)
    x = y.detach().requires_grad_()
    start = time.perf_counter()
    function(x).backward(upstream)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-thp", action="store_true", help="no huge pages for tensors")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"batch {args.batch}, {args.reps} reps, {args.threads} threads, torch {torch.__version__}"
    )
    for label, shape in SHAPES.items():
        generator = torch.Generator().manual_seed(0)
        y = torch.randn(args.batch, *shape, generator=generator) * 30
        upstream = torch.randn(y.shape, generator=generator)
        times: dict[str, list[float]] = {way: [] for way in WAYS}
        for rep in range(args.reps + 1):  # repetition 0 compiles and warms up
            for way in WAYS:
                elapsed = seconds(way, y, upstream)
                if rep:
                    times[way].append(elapsed)
        base = statistics.median(times["nn.LocalResponseNorm after relu"])
        print(f"\n{label} {tuple(y.shape)}: forward + backward, ms (best / median), speed-up")
        for way, t in times.items():
            median = statistics.median(t)
            print(f"  {way:32s} {min(t) * 1e3:7.1f} / {median * 1e3:7.1f}   {base / median:5.1f}x")
    lrn.compile_lrn(False)


if __name__ == "__main__":
    main()
