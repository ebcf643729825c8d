"""Would emulation gain from running the two halves' independent work at once? (issue 15)

    .venv/bin/python bench/bench_concurrent_halves.py [--batch 128] [--reps 5]

Until conv3 the halves share nothing (the paper's Figure 2): in emulation their
conv1 → LRN → pool → conv2 → LRN → pool could run side by side. This times that
stretch, forward and backward, for both halves, in turns in one process:
one half after the other with 2 intra-op threads each (what SplitAlexNet does),
against one Python thread per half with 1 intra-op thread each (the ops release
the GIL, and a CPU backward runs on the thread that calls it). Ratio below 1:
the concurrent halves win. Numbers: docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as the launch scripts and other benches

import torch

from split_alexnet import SplitAlexNet
from split_alexnet.model.split import Half


def before_the_exchange(half: Half, images: torch.Tensor, threads: int) -> None:
    torch.set_num_threads(threads)
    half.layer("conv2")(half.layer("conv1")(images)).sum().backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    layout = torch.channels_last  # the training default
    model = SplitAlexNet.emulated(seed=0).to(memory_format=layout)
    halves = list(model.halves.values())
    images = (torch.randn(args.batch, 3, 224, 224) * 20).contiguous(memory_format=layout)

    def one_after_the_other() -> None:
        for half in halves:
            before_the_exchange(half, images, 2)

    def side_by_side() -> None:
        workers = [
            threading.Thread(target=before_the_exchange, args=(half, images, 1)) for half in halves
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    def timed(run) -> float:
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        run()
        return time.perf_counter() - start

    timed(one_after_the_other), timed(side_by_side)  # warm-up: oneDNN primitives, pages
    pairs = [(timed(one_after_the_other), timed(side_by_side)) for _ in range(args.reps)]
    sequential, concurrent = zip(*pairs, strict=True)
    ratios = [c / s for s, c in pairs]
    print(
        f"batch {args.batch}, conv1-pool2 of both halves, forward + backward, {args.reps} turns: "
        f"one after the other {statistics.median(sequential):.3f} s, side by side "
        f"{statistics.median(concurrent):.3f} s; side by side / one after the other, median "
        f"per turn {statistics.median(ratios):.3f} ({', '.join(f'{r:.2f}' for r in ratios)})"
    )


if __name__ == "__main__":
    main()
