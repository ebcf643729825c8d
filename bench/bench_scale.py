"""Data-parallel pairs against one pair: step time and bytes per step, measured and on paper.

    .venv/bin/python bench/bench_scale.py                       # per-pair batch 8, 3 steps
    .venv/bin/python bench/bench_scale.py --batch 16 --steps 5

Measured (this machine, CPU, gloo): one pair (2 processes) and two pairs
(dp=2 × mp=2, 4 processes), each pair holding the same per-pair batch, built
with the training's own Layout (init_device_mesh, DDP over "dp") and PaperSGD
on random images. Per rank and step: the exchange's bytes received
(ProcessGroupExchange.bytes_received) and the gradient bytes DDP all-reduces
(counted by a comm hook around DDP's all-reduce).

On paper (real GPUs): the pair's exchange grows with the per-pair batch, the
gradient all-reduce does not; where they cross, and what each costs on the
links of an 8-GPU machine. Writes the table to stdout and the plot to
docs/scaling.png; docs/scaling.md quotes both.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

HALF_PARAMETERS = 30_482_612  # PAPER.md: per half; 60,965,224 in all
MB = 1e6
# Floats one rank receives per image (PAPER.md layer table): forward all-gathers of
# pool2 21,632 + pool5 4,608 + fc6 2,048 + fc7 2,048 + logits 500; backward
# reduce-scatters of the same tensors except the logits (their gradient stays local).
FORWARD_FLOATS = 21_632 + 4_608 + 2_048 + 2_048 + 500
BACKWARD_FLOATS = 21_632 + 4_608 + 2_048 + 2_048
EXCHANGE_PER_IMAGE = 4 * (FORWARD_FLOATS + BACKWARD_FLOATS)  # bytes per rank, fp32
GRADIENTS = 4 * 2 * HALF_PARAMETERS  # 243.9 MB: one copy of every gradient, fp32
# Forward multiply-adds per image, both halves: Σ weights × output positions,
# conv1 105.4 M, conv2 223.9 M, conv3 149.5 M, conv4 112.1 M, conv5 74.8 M, fc 58.6 M.
FORWARD_MACS = 724.3e6
STEP_FLOPS = 3 * 2 * FORWARD_MACS  # forward + backward ≈ 3 × forward: 4.35 GFLOP per image
SUSTAINED_FLOPS = 15e12  # per GPU, assumed (an A100 sustains more in TF32, less in fp32)

# Link figures for the analysis (bytes/s one way per GPU; assumptions, not measured here).
LINKS = {
    "NVLink (A100, NVSwitch)": 200e9,  # nccl-tests all-reduce bus bandwidth on DGX A100
    "PCIe 4.0 x16": 20e9,
    "PCIe 3.0 x16": 10e9,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, batch: int, steps: int, out: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    torch.set_num_threads(1)
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    from split_alexnet.config import OptimConfig
    from split_alexnet.model.table import Variant
    from split_alexnet.parallel.layout import setup_layout
    from split_alexnet.training.run import make_optimizer

    layout = setup_layout("distributed")
    model = layout.build(Variant(), seed=0)
    net = layout.replicate(model)
    reduced = [0]
    if net is not model:

        def counting_hook(group, bucket):
            reduced[0] += bucket.buffer().numel() * bucket.buffer().element_size()
            return allreduce_hook(group, bucket)

        net.register_comm_hook(layout.dp_group, counting_hook)
    optimizer = make_optimizer(model, OptimConfig())
    generator = torch.Generator().manual_seed(layout.dp_rank)
    images = torch.randn(batch, 3, 224, 224, generator=generator)
    labels = torch.randint(0, 1000, (batch,), generator=generator)
    times, exchanged, all_reduced = [], [], []
    for step in range(steps + 1):  # the first step warms up (allocations, DDP buckets)
        layout.barrier()
        started, before, reduced[0] = time.perf_counter(), model.exchange.bytes_received, 0
        loss = F.cross_entropy(net(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        layout.barrier()
        if step:
            times.append(time.perf_counter() - started)
            exchanged.append(model.exchange.bytes_received - before)
            all_reduced.append(reduced[0])
    if rank == 0:
        Path(out).write_text(
            json.dumps(
                {
                    "pairs": layout.dp_size,
                    "processes": world,
                    "pair_batch": batch,
                    "step_s": statistics.median(times),
                    "exchange_bytes": statistics.median(exchanged),
                    "allreduce_bytes": statistics.median(all_reduced),
                }
            )
        )
    layout.close()


def measure(pairs: int, batch: int, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "result.json")
        world = 2 * pairs
        mp.start_processes(
            _worker, (world, _free_port(), batch, steps, out), world, start_method="spawn"
        )
        return json.loads(Path(out).read_text())


def ring_traffic(size: float, ranks: int) -> float:
    """Bytes each rank sends (and receives) in a ring all-reduce of `size` bytes."""
    return 2 * (ranks - 1) / ranks * size


def analysis(plot: Path | None) -> None:
    cross = GRADIENTS / EXCHANGE_PER_IMAGE
    print(
        f"\nExchange per rank per image: {EXCHANGE_PER_IMAGE / 1e3:.1f} kB "
        f"({4 * FORWARD_FLOATS * 128 / MB:.1f} MB forward + {4 * BACKWARD_FLOATS * 128 / MB:.1f}"
        f" MB backward at batch 128); gradients {GRADIENTS / MB:.1f} MB per step."
    )
    print(f"The exchange equals one copy of the gradients at a per-pair batch of {cross:.0f}.")
    print(
        f"\n8 GPUs, per rank and step: bytes sent, link time for them, and compute at "
        f"{SUSTAINED_FLOPS / 1e12:.0f} TFLOP/s per GPU"
    )
    header = "| layout | global batch | per-pair batch | exchange | all-reduce |"
    header += "".join(f" {name} |" for name in LINKS) + " compute |"
    print(header)
    print("|" + "---|" * (6 + len(LINKS)))
    for global_batch in (128, 512, 2048):
        rows = [
            ("4 pairs (dp=4 × mp=2)", global_batch // 4, ring_traffic(GRADIENTS / 2, 4)),
            ("8 one-GPU replicas (dp=8)", None, ring_traffic(GRADIENTS, 8)),
        ]
        for name, pair_batch, reduce_bytes in rows:
            exchange = EXCHANGE_PER_IMAGE * pair_batch if pair_batch else 0.0
            total = exchange + reduce_bytes
            cells = "".join(f" {1e3 * total / bw:.1f} ms |" for bw in LINKS.values())
            # A half does half the work of its pair's images; a replica all of its own.
            flops = STEP_FLOPS * (pair_batch / 2 if pair_batch else global_batch / 8)
            print(
                f"| {name} | {global_batch} | {pair_batch or '—'} | {exchange / MB:.0f} MB | "
                f"{reduce_bytes / MB:.0f} MB |{cells} {1e3 * flops / SUSTAINED_FLOPS:.1f} ms |"
            )
    if plot is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = [2**k for k in range(3, 13)]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(batches, [EXCHANGE_PER_IMAGE * b / MB for b in batches], "o-",
            label="pair's exchange per rank (fwd + bwd)")  # fmt: skip
    levels = [
        (GRADIENTS, "gradients, one copy (244 MB)", "k"),
        (ring_traffic(GRADIENTS, 8), "ring all-reduce per rank, 8 one-GPU replicas", "C3"),
        (ring_traffic(GRADIENTS / 2, 4), "ring all-reduce per rank, 4 pairs", "C2"),
    ]
    for size, label, colour in levels:
        ax.axhline(size / MB, color=colour, linestyle="--", label=label)
    ax.axvline(cross, color="grey", linestyle=":")
    ax.annotate(f"crossing at {cross:.0f}", (cross, 20), rotation=90, ha="right")
    ax.axvline(128, color="C1", linestyle=":")
    ax.annotate("paper: 128", (128, 20), rotation=90, ha="right")
    ax.set(xscale="log", yscale="log", xlabel="per-pair batch", ylabel="MB per rank per step",
           title="Activation exchange vs gradient all-reduce (fp32)")  # fmt: skip
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(plot, dpi=120)
    print(f"\nplot: {plot}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="images per pair")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up")
    parser.add_argument("--plot", type=Path, default=Path(__file__).parents[1] / "docs/scaling.png")
    parser.add_argument("--no-measure", action="store_true", help="only the analysis")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPU cores, gloo, one thread per process")
    if not args.no_measure:
        results = [measure(pairs, args.batch, args.steps) for pairs in (1, 2)]
        print("\n| layout | processes | global batch | step (s) | images/s | exchange MB/rank "
              "| all-reduced MB/rank |")  # fmt: skip
        print("|---|---|---|---|---|---|---|")
        for r in results:
            global_batch = r["pairs"] * r["pair_batch"]
            print(
                f"| {r['pairs']} pair(s) | {r['processes']} | {global_batch} | {r['step_s']:.2f} | "
                f"{global_batch / r['step_s']:.1f} | {r['exchange_bytes'] / MB:.2f} | "
                f"{r['allreduce_bytes'] / MB:.1f} |"
            )
        expected = EXCHANGE_PER_IMAGE * args.batch / MB
        print(f"(analytic exchange at per-pair batch {args.batch}: {expected:.2f} MB per rank)")
    analysis(args.plot)


if __name__ == "__main__":
    main()
