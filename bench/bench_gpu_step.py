"""The training step on one GPU: the emulated split, torchvision's alexnet, ReferenceAlexNet.

    python bench/bench_gpu_step.py                     # batch 128 and 256, 10 repetitions
    python bench/bench_gpu_step.py --batches 128 --reps 3
    python bench/bench_gpu_step.py --batches 128 --profile 15   # where the split's time goes

Every combination of precision (fp32, bf16 autocast) and memory format (NCHW,
channels_last) runs the three networks interleaved, one step each in turn, so
clock and thermal drift hit them alike. Steps are timed with CUDA events after
a warm-up step (cuDNN autotuning, the compiled LRN). Prints one Markdown table:
median ms per step, the ms the host took to queue it, images/s, and split /
torchvision per repetition (median). Where a network's queueing time is close to
its step time, the GPU waited for the host (too many small kernels), not the host
for the GPU. `--profile` shows instead, for the first batch in fp32 and NHWC, how
many kernels a step of the split and of torchvision's net launches, how long the
GPU is busy with them, and the busiest kernels.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from split_alexnet import ReferenceAlexNet, SplitAlexNet
from split_alexnet.model.lrn import compile_lrn

NETWORKS = {
    "torchvision": lambda: torchvision.models.alexnet(num_classes=1000),
    "reference": lambda: ReferenceAlexNet(seed=0),
    "split": lambda: SplitAlexNet.emulated(seed=0),
}


def step(net: nn.Module, opt: torch.optim.Optimizer, images, labels, bf16: bool) -> None:
    """One forward, backward and SGD step, queued (nothing in it waits for the GPU)."""
    with torch.autocast("cuda", torch.bfloat16, enabled=bf16):
        logits = net(images)
    loss = F.cross_entropy(logits.float(), labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def step_time(
    net: nn.Module, opt: torch.optim.Optimizer, images, labels, bf16: bool
) -> tuple[float, float]:
    """Milliseconds of one step on the GPU's clock, and on the host's until it was queued."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    queued = time.perf_counter()
    step(net, opt, images, labels, bf16)
    host = time.perf_counter() - queued
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end), host * 1e3


def networks(batch: int, layout: torch.memory_format):
    """A batch, the three networks in `layout` on the GPU, and their optimisers."""
    generator = torch.Generator().manual_seed(0)
    images = (torch.randn(batch, 3, 224, 224, generator=generator) * 50).cuda()
    images = images.contiguous(memory_format=layout)
    labels = torch.randint(0, 1000, (batch,), generator=generator).cuda()
    nets = {name: make().cuda().to(memory_format=layout) for name, make in NETWORKS.items()}
    opts = {n: torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9) for n, net in nets.items()}
    return images, labels, nets, opts


def bench(batch: int, bf16: bool, layout: torch.memory_format, reps: int) -> str:
    images, labels, nets, opts = networks(batch, layout)
    times: dict[str, list[float]] = {name: [] for name in nets}
    queued: dict[str, list[float]] = {name: [] for name in nets}
    for rep in range(reps + 1):
        for name, net in nets.items():
            ms, host_ms = step_time(net, opts[name], images, labels, bf16)
            if rep:  # the first is the warm-up
                times[name].append(ms)
                queued[name].append(host_ms)
    pairs = zip(times["split"], times["torchvision"], strict=True)
    ratio = statistics.median(split / tv for split, tv in pairs)
    cells = [str(batch), "bf16" if bf16 else "fp32"]
    cells.append("NHWC" if layout == torch.channels_last else "NCHW")
    for name in nets:
        ms, host_ms = statistics.median(times[name]), statistics.median(queued[name])
        cells.append(f"{ms:.1f} ms ({host_ms:.1f} queued), {batch / ms * 1e3:,.0f} img/s")
    return f"| {' | '.join(cells)} | {ratio:.3f} |"


def kernel_profile(batch: int, rows: int) -> str:
    """fp32, NHWC: per network, one profiled step after two warm-ups: the kernels it
    launched, how long the GPU was busy with them, and the `rows` busiest."""
    from torch.profiler import ProfilerActivity, profile

    images, labels, nets, opts = networks(batch, torch.channels_last)
    lines = [f"batch {batch}, fp32, NHWC"]
    for name in ("split", "torchvision"):
        for _ in range(2):
            step(nets[name], opts[name], images, labels, False)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            step(nets[name], opts[name], images, labels, False)
            torch.cuda.synchronize()
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        busy = sum(e.device_time_total for e in kernels) / 1e3
        lines.append(f"\n{name}: {len(kernels)} kernels and copies, GPU busy {busy:.1f} ms")
        lines.append(
            prof.key_averages().table(
                sort_by="self_cuda_time_total", row_limit=rows, max_name_column_width=60
            )
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", default="128,256")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument(
        "--profile", type=int, default=0, metavar="ROWS",
        help="instead of the table: at the first batch, fp32, NHWC, the kernels each step of the "
        "split and of torchvision's net launched, the GPU's busy time, and the ROWS busiest",
    )  # fmt: skip
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu_step.py: no CUDA device")
    torch.backends.cudnn.benchmark = True
    compile_lrn(True)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}\n")
    batches = [int(b) for b in args.batches.split(",")]
    if args.profile:
        print(kernel_profile(batches[0], args.profile))
        return
    print("| batch | precision | format | torchvision | ReferenceAlexNet | split | split / tv |")
    print("|---|---|---|---|---|---|---|")
    for batch in batches:
        for bf16 in (False, True):
            for layout in (torch.contiguous_format, torch.channels_last):
                print(bench(batch, bf16, layout, args.reps), flush=True)


if __name__ == "__main__":
    main()
