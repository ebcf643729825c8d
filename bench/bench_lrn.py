"""ReLU then LRN (and max-pool), forward and backward, at one half of conv1's and conv2's shapes.

    .venv/bin/python bench/bench_lrn.py              # batch 128, 2 threads (~3 min)
    .venv/bin/python bench/bench_lrn.py --batch 32   # a quick look
    .venv/bin/python bench/bench_lrn.py --channels-last   # the network's default layout

Five ways, interleaved over the repetitions, each from the pre-activation y
(a conv output) to the gradient with respect to y: torch.nn.LocalResponseNorm
after F.relu; this project's autograd function, eager, after F.relu and with
the ReLU folded in (`rectify=True`); and the same two compiled
(torch.compile, `split_alexnet.model.lrn.compile_lrn`). Then ReLU + LRN +
max-pool (3, stride 2), the whole of conv1's and conv2's tail: apart (eager and
compiled LRN, then F.max_pool2d) and as one C++ kernel
(`split_alexnet.model.lrn_pool`). Reports the best and median time of each and
the speed-up over the first way. Numbers: docs/performance.md.
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

from split_alexnet.model import lrn, lrn_pool
from split_alexnet.model.lrn import LocalResponseNorm
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


def folded_then_pool(y: torch.Tensor) -> torch.Tensor:
    norm = LocalResponseNorm(LRN_SIZE, ALPHA, LRN_BETA, LRN_K, rectify=True)
    return lrn_pool.lrn_pool(y, norm, (3, 2))


# way: (function, LRN compiled, LRN + pool fused)
Way = tuple[Callable[[torch.Tensor], torch.Tensor], bool, bool]
WAYS: dict[str, Way] = {
    "nn.LocalResponseNorm after relu": (torch_module, False, False),
    "eager, after relu": (relu_then_lrn, False, False),
    "eager, relu folded in": (folded, False, False),
    "compiled, after relu": (relu_then_lrn, True, False),
    "compiled, relu folded in": (folded, True, False),
}
POOLED_WAYS: dict[str, Way] = {
    "eager LRN, then max_pool2d": (folded_then_pool, False, False),
    "compiled LRN, then max_pool2d": (folded_then_pool, True, False),
    "one C++ kernel (lrn_pool)": (folded_then_pool, False, True),
}


def seconds(way: Way, y: torch.Tensor, upstream: torch.Tensor) -> float:
    function, compiled, fused = way
    lrn.compile_lrn(compiled)
    lrn_pool.fuse_lrn_pool(fused)
    x = y.detach().requires_grad_()
    start = time.perf_counter()
    function(x).backward(upstream)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--channels-last", action="store_true", help="NHWC maps")
    parser.add_argument("--no-thp", action="store_true", help="no huge pages for tensors")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    print(
        f"batch {args.batch}, {args.reps} reps, {args.threads} threads, torch {torch.__version__}, "
        f"{'NHWC' if args.channels_last else 'NCHW'}"
    )
    for label, shape in SHAPES.items():
        generator = torch.Generator().manual_seed(0)
        y = (torch.randn(args.batch, *shape, generator=generator) * 30).contiguous(
            memory_format=layout
        )
        pooled = F.max_pool2d(y[:1], 3, 2).shape[1:]
        for stages, ways, out_shape in (
            ("ReLU then LRN", WAYS, y.shape),
            ("ReLU + LRN + max-pool", POOLED_WAYS, (args.batch, *pooled)),
        ):
            upstream = torch.randn(out_shape, generator=generator).contiguous(memory_format=layout)
            times: dict[str, list[float]] = {way: [] for way in ways}
            for rep in range(args.reps + 1):  # repetition 0 compiles and warms up
                for way in ways:
                    elapsed = seconds(ways[way], y, upstream)
                    if rep:
                        times[way].append(elapsed)
            base = statistics.median(next(iter(times.values())))
            print(
                f"\n{label} {tuple(y.shape)}, {stages}: forward + backward, "
                "ms (best / median), speed-up"
            )
            for way, t in times.items():
                median = statistics.median(t)
                best, middle = min(t) * 1e3, median * 1e3
                print(f"  {way:32s} {best:7.1f} / {middle:7.1f}   {base / median:5.1f}x")
    lrn.compile_lrn(False)
    lrn_pool.fuse_lrn_pool(False)


if __name__ == "__main__":
    main()
