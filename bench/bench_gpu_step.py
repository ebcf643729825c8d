"""The training step on one GPU: the emulated split, torchvision's alexnet, ReferenceAlexNet.

    python bench/bench_gpu_step.py                     # batch 128 and 256, 10 repetitions
    python bench/bench_gpu_step.py --batches 128 --reps 3

Every combination of precision (fp32, bf16 autocast) and memory format (NCHW,
channels_last) runs the three networks interleaved, one step each in turn, so
clock and thermal drift hit them alike. Steps are timed with CUDA events after
a warm-up step (cuDNN autotuning, the compiled LRN). Prints one Markdown table:
median ms per step, images/s, and split / torchvision per repetition (median).
"""

from __future__ import annotations

import argparse
import statistics

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


def step_time(net: nn.Module, opt: torch.optim.Optimizer, images, labels, bf16: bool) -> float:
    """Milliseconds of one forward, backward and SGD step, on the GPU's clock."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    with torch.autocast("cuda", torch.bfloat16, enabled=bf16):
        logits = net(images)
    loss = F.cross_entropy(logits.float(), labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end)


def bench(batch: int, bf16: bool, layout: torch.memory_format, reps: int) -> str:
    generator = torch.Generator().manual_seed(0)
    images = (torch.randn(batch, 3, 224, 224, generator=generator) * 50).cuda()
    images = images.contiguous(memory_format=layout)
    labels = torch.randint(0, 1000, (batch,), generator=generator).cuda()
    nets = {name: make().cuda().to(memory_format=layout) for name, make in NETWORKS.items()}
    opts = {n: torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9) for n, net in nets.items()}
    times: dict[str, list[float]] = {name: [] for name in nets}
    for rep in range(reps + 1):
        for name, net in nets.items():
            ms = step_time(net, opts[name], images, labels, bf16)
            if rep:  # the first is the warm-up
                times[name].append(ms)
    pairs = zip(times["split"], times["torchvision"], strict=True)
    ratio = statistics.median(split / tv for split, tv in pairs)
    cells = [str(batch), "bf16" if bf16 else "fp32"]
    cells.append("NHWC" if layout == torch.channels_last else "NCHW")
    for name in nets:
        ms = statistics.median(times[name])
        cells.append(f"{ms:.1f} ms, {batch / ms * 1e3:,.0f} img/s")
    return f"| {' | '.join(cells)} | {ratio:.3f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", default="128,256")
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu_step.py: no CUDA device")
    torch.backends.cudnn.benchmark = True
    compile_lrn(True)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}\n")
    print("| batch | precision | format | torchvision | ReferenceAlexNet | split | split / tv |")
    print("|---|---|---|---|---|---|---|")
    for batch in (int(b) for b in args.batches.split(",")):
        for bf16 in (False, True):
            for layout in (torch.contiguous_format, torch.channels_last):
                print(bench(batch, bf16, layout, args.reps), flush=True)


if __name__ == "__main__":
    main()
