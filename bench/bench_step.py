"""One training step (forward, backward, SGD) of four networks, interleaved, in one run.

    .venv/bin/python bench/bench_step.py                 # batch 128, 5 repetitions
    .venv/bin/python bench/bench_step.py --batch 16 --reps 2     # a quick look
    .venv/bin/python bench/bench_step.py --batches 16,32,64,128,256 --reps 3 --no-pair
                                                     # a sweep of batch sizes, one run

Networks: torchvision's alexnet, ReferenceAlexNet (grouped, one module), the
emulated split model (both halves in this process, `--threads` threads) and
the two-process gloo pair (two spawned processes, one thread each). Each
repetition runs one step of every network in turn, so a machine shared with
other jobs slows them alike; the report gives medians, ratios of medians and
the median of each repetition's ratio.
It also reports LRN's share of the step (torch.profiler), the bytes each rank
of the pair receives per step against the analytic figure, and activation and
peak memory against the analytic figures. Numbers: docs/performance.md.

`--batches` sweeps several batch sizes in one interleaved run (each repetition
runs one step of every network at every batch) and reports, per batch, the
median step, ms per image and the median of each repetition's ratio; a batch
whose ms per image is more than 15 % above a neighbour's is flagged, and
`--plot` draws ratio and ms per image against batch size. The pair runs at a
single batch only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Huge pages for PyTorch's CPU allocations; read once, before torch allocates.
# Without them every fresh 50-150 MB activation costs ~20k page faults.
if "--no-thp" not in sys.argv:
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
import torchvision
from torch import nn

from split_alexnet import ReferenceAlexNet, SplitAlexNet, layer_table
from split_alexnet.model.lrn import compile_lrn
from split_alexnet.model.lrn_pool import fuse_lrn_pool

HALF_PARAMETERS = 30_482_612
# Floats one rank receives per image in the forward exchanges (PAPER.md):
# pool2 21,632 + pool5 4,608 + fc6 2,048 + fc7 2,048 + fc8 logits 500.
FORWARD_FLOATS = 21_632 + 4_608 + 2_048 + 2_048 + 500
# Backward: a reduce-scatter in front of conv3, fc6, fc7 and fc8 (the same
# sizes); the logits' gradient stays local (gather_logits keeps its slice).
BACKWARD_FLOATS = 21_632 + 4_608 + 2_048 + 2_048
ANALYTIC_ACTIVATIONS_PER_IMAGE = 5.7e6  # bytes per rank, issue 7


def analytic_forward_floats() -> int:
    """The forward figure from the layer table, to check the constant above."""
    total = 0
    for layer in layer_table():
        if layer.reads_both:
            total += (
                layer.in_per_half
                * layer.spatial_in
                * (1 if layer.kind == "fc" else _side_before(layer.name) ** 2)
            )
    return total + layer_table()[-1].out_per_half


def _side_before(name: str) -> int:
    table = layer_table()
    index = [layer.name for layer in table].index(name)
    return table[index - 1].out_size


def batch(size: int, layout: torch.memory_format) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(size, 3, 224, 224, generator=generator) * 20
    labels = torch.randint(0, 1000, (size,), generator=generator)
    return images.contiguous(memory_format=layout), labels


class Trainer:
    """A model, plain SGD with the paper's momentum and decay, and one batch per size."""

    def __init__(
        self,
        model: nn.Module,
        sizes: int | list[int],
        layout: torch.memory_format,
        fused: bool = False,
    ) -> None:
        self.model = model.to(memory_format=layout).train()
        self.fused = fused  # LRN + max-pool as one kernel (model/lrn_pool.py) in this model
        self.batches = {s: batch(s, layout) for s in ([sizes] if isinstance(sizes, int) else sizes)}
        self.images, self.labels = next(iter(self.batches.values()))
        self.optimizer = torch.optim.SGD(
            model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4
        )

    def use(self, size: int) -> None:
        """Run the next steps (and profiles) on the batch of `size` images."""
        self.images, self.labels = self.batches[size]

    def step(self) -> float:
        fuse_lrn_pool(self.fused)
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(self.model(self.images), self.labels).backward()
        self.optimizer.step()
        return time.perf_counter() - start

    def saved_bytes(self) -> int:
        """Bytes autograd keeps for the backward of one forward (distinct storages)."""
        storages: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            if t.device.type != "meta" and not isinstance(t, nn.Parameter):
                storage = t.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
            return t

        params = {p.untyped_storage().data_ptr() for p in self.model.parameters()}
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = F.cross_entropy(self.model(self.images), self.labels)
        loss.backward()
        self.optimizer.zero_grad(set_to_none=True)
        return sum(n for ptr, n in storages.items() if ptr not in params)

    def profile(self, rows: int) -> str:
        """torch.profiler's busiest operators of one step, by input shape (per layer)."""
        from torch.profiler import profile

        with profile(record_shapes=True) as prof:
            self.step()
        return prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=36
        )

    def lrn_share(self) -> float:
        """LRN's share (forward + backward) of one step's wall time, from torch.profiler."""
        from torch.profiler import profile, record_function

        with profile() as prof, record_function("step"):
            self.step()
        events = {e.key: e.cpu_time_total for e in prof.key_averages()}
        # With --fused, the fused kernel's forward and backward: LRN and max-pool together.
        lrn = sum(
            t
            for key, t in events.items()
            if ("LocalResponseNorm" in key or "lrn_pool" in key) and "evaluate" not in key
        )
        return lrn / events["step"]


def _rss(field: str) -> int:
    """VmRSS or VmHWM (peak) of this process in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> int:
    """Restart VmHWM from the current RSS (ru_maxrss would carry the parent's over exec)."""
    Path("/proc/self/clear_refs").write_text("5")
    return _rss("VmRSS")


def pair_rank(
    rank: int, init: str, size: int, layout, commands, replies, eager: bool, fused: bool
) -> None:
    torch.set_num_threads(1)
    if not eager:
        compile_lrn(True)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=2)
    try:
        baseline = _reset_peak_rss()
        trainer = Trainer(SplitAlexNet.distributed(seed=0), size, layout, fused)
        exchange = trainer.model.exchange
        while (command := commands.get()) != "stop":
            if command == "saved":
                replies.put(trainer.saved_bytes())
                continue
            if isinstance(command, tuple):  # ("profile", rows)
                replies.put(trainer.profile(command[1]))
                continue
            before = exchange.bytes_received
            seconds = trainer.step()
            peak = _rss("VmHWM")
            replies.put((seconds, exchange.bytes_received - before, peak, baseline))
    finally:
        dist.destroy_process_group()


class Pair:
    """Two spawned gloo ranks that each run one step when told to."""

    def __init__(self, size: int, layout, eager: bool, fused: bool) -> None:
        context = mp.get_context("spawn")
        self.tmp = tempfile.TemporaryDirectory()
        init = str(Path(self.tmp.name) / "init")
        self.commands = [context.Queue() for _ in range(2)]
        self.replies = [context.Queue() for _ in range(2)]
        self.processes = [
            context.Process(
                target=pair_rank,
                args=(r, init, size, layout, self.commands[r], self.replies[r], eager, fused),
            )
            for r in range(2)
        ]
        for p in self.processes:
            p.start()
        self.last: list[tuple] = []

    def ask(self, command: str | tuple[str, int]) -> list:
        for q in self.commands:
            q.put(command)
        return [q.get(timeout=1800) for q in self.replies]

    def step(self) -> float:
        start = time.perf_counter()
        self.last = self.ask("step")
        return time.perf_counter() - start

    def close(self) -> None:
        for q in self.commands:
            q.put("stop")
        for p in self.processes:
            p.join()
        self.tmp.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument(
        "--batches", type=_sizes, metavar="B1,B2,...",
        help="sweep these batch sizes in one interleaved run (no pair)",
    )  # fmt: skip
    parser.add_argument(
        "--plot", type=Path, default=Path("docs/img/step-by-batch.png"),
        help="where --batches draws its PNG",
    )  # fmt: skip
    parser.add_argument(
        "--split-nhwc", action="store_true",
        help="--batches also times the emulated split in channels_last",
    )  # fmt: skip
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions (after 1 warm-up)")
    parser.add_argument("--threads", type=int, default=2, help="threads of this process")
    parser.add_argument("--channels-last", action="store_true", help="NHWC images and weights")
    parser.add_argument("--eager-lrn", action="store_true", help="do not torch.compile LRN")
    parser.add_argument(
        "--fused", action="store_true",
        help="conv1's and conv2's LRN + max-pool as one C++ kernel in the paper's networks",
    )  # fmt: skip
    parser.add_argument(
        "--split-fused", action="store_true",
        help="--batches also times the emulated split with --fused's kernel",
    )  # fmt: skip
    parser.add_argument("--no-pair", action="store_true", help="skip the two-process pair")
    parser.add_argument("--no-thp", action="store_true", help="no huge pages for tensors")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="ROWS",
        help="print the busiest operators (by input shape) of torchvision's, the emulated and "
        "the pair's (rank 0) step",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.eager_lrn:
        compile_lrn(True)
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    if args.batches:
        sweep(args, layout)
        return
    size = args.batch
    print(
        f"batch {size}, {args.reps} reps, {args.threads} threads, torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs, layout {'NHWC' if args.channels_last else 'NCHW'}, "
        f"{_lrn(args)}, THP {os.environ.get('THP_MEM_ALLOC_ENABLE', '0')}",
        flush=True,
    )
    steps: dict[str, Trainer | Pair] = {
        "torchvision alexnet": Trainer(torchvision.models.alexnet(), size, layout),
        "ReferenceAlexNet": Trainer(ReferenceAlexNet(seed=0), size, layout, args.fused),
        "emulated split": Trainer(SplitAlexNet.emulated(seed=0), size, layout, args.fused),
    }
    pair = None if args.no_pair else Pair(size, layout, args.eager_lrn, args.fused)
    if pair is not None:
        steps["gloo pair (1 thread each)"] = pair
    times: dict[str, list[float]] = {name: [] for name in steps}
    try:
        for rep in range(args.reps + 1):
            for name, runner in steps.items():
                seconds = runner.step()
                if rep:
                    times[name].append(seconds)
            print(
                f"rep {rep}: " + ", ".join(f"{t[-1]:.2f}s" for t in times.values() if rep and t),
                flush=True,
            )
        medians = {name: statistics.median(t) for name, t in times.items()}
        print(f"\n{'network':28s} {'median s':>9s} {'images/s':>9s}   all steps (s)")
        for name, t in times.items():
            print(
                f"{name:28s} {medians[name]:9.3f} {size / medians[name]:9.1f}   "
                + " ".join(f"{x:.2f}" for x in t)
            )
        print("\nratios of step time: of the medians, and the median of each repetition's (target)")
        # Issue 15's targets (issue 7 had asked 1.2 and 1.1 of the first and the last).
        for label, (a, b), target in (
            ("emulated / torchvision", ("emulated split", "torchvision alexnet"), 1.0),
            ("emulated / Reference", ("emulated split", "ReferenceAlexNet"), 1.05),
            ("pair / emulated", ("gloo pair (1 thread each)", "emulated split"), 1.05),
        ):
            if a in times:
                # Steps of one repetition ran back to back: their ratio shares the machine's mood.
                paired = statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))
                print(f"  {label:26s} {medians[a] / medians[b]:.3f}  {paired:.3f}  (<= {target})")
        for name in ("ReferenceAlexNet", "emulated split"):
            share = steps[name].lrn_share()
            print(f"  LRN share of {name:15s} {share:.3f}  (<= 0.10)")
        if args.profile:
            for name in ("torchvision alexnet", "emulated split"):
                print(f"\n{name}, one step:\n{steps[name].profile(args.profile)}")
            if pair is not None:
                # _GatherScatterBack[Backward] rows: the exchange, waiting for the peer included.
                print(f"\npair, rank 0, one step:\n{pair.ask(('profile', args.profile))[0]}")
        emu_saved = steps["emulated split"].saved_bytes()
        print(
            f"\nactivations kept for backward, emulation (both halves): "
            f"{emu_saved / size / 2 / 1e6:.2f} MB per image per half "
            f"(analytic ~{ANALYTIC_ACTIVATIONS_PER_IMAGE / 1e6:.1f})"
        )
        if pair is not None:
            assert analytic_forward_floats() == FORWARD_FLOATS
            report_pair(pair, size)
    finally:
        if pair is not None:
            pair.close()


def _sizes(text: str) -> list[int]:
    return sorted({int(part) for part in text.split(",")})


SWEPT = {
    "torchvision alexnet": torchvision.models.alexnet,
    "ReferenceAlexNet": lambda: ReferenceAlexNet(seed=0),
    "emulated split": lambda: SplitAlexNet.emulated(seed=0),
}
# A batch whose time per image exceeds a neighbour's by more than this is flagged.
FLAG = 1.15


def sweep(args: argparse.Namespace, layout: torch.memory_format) -> None:
    """One step of every network at every batch size per repetition; a table per batch."""
    sizes = args.batches
    print(
        f"batches {sizes}, {args.reps} reps, {args.threads} threads, torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs, layout {'NHWC' if args.channels_last else 'NCHW'}, "
        f"{_lrn(args)}, THP {os.environ.get('THP_MEM_ALLOC_ENABLE', '0')}",
        flush=True,
    )
    trainers = {
        name: Trainer(build(), sizes, layout, args.fused and name != "torchvision alexnet")
        for name, build in SWEPT.items()
    }
    pairs = [("emulated split", "torchvision alexnet"), ("emulated split", "ReferenceAlexNet")]
    if args.split_nhwc:
        # The halves in channels_last beside everything else in `layout` (issue 15's lever).
        trainers[NHWC_SPLIT] = Trainer(SWEPT["emulated split"](), sizes, torch.channels_last)
        pairs += [(NHWC_SPLIT, "torchvision alexnet"), (NHWC_SPLIT, "emulated split")]
    if args.split_fused:
        # The halves with LRN + max-pool as one kernel beside the stages apart (issue 15).
        trainers[FUSED_SPLIT] = Trainer(SWEPT["emulated split"](), sizes, layout, fused=True)
        pairs += [(FUSED_SPLIT, "torchvision alexnet"), (FUSED_SPLIT, "emulated split")]
    times = {(name, s): [] for name in trainers for s in sizes}
    for rep in range(args.reps + 1):
        for s in sizes:
            for name, trainer in trainers.items():
                trainer.use(s)
                seconds = trainer.step()
                if rep:  # rep 0 warms up (and compiles LRN for each shape)
                    times[name, s].append(seconds)
        print(f"rep {rep} done", flush=True)
    per_image = {k: 1e3 * statistics.median(t) / k[1] for k, t in times.items()}
    ratios = {}
    for s in sizes:
        print(f"\nbatch {s}")
        print(f"  {'network':22s} {'median s':>9s} {'ms/image':>9s}   all steps (s)")
        for name in trainers:
            t = times[name, s]
            print(
                f"  {name:22s} {statistics.median(t):9.3f} {per_image[name, s]:9.1f}   "
                + " ".join(f"{x:.2f}" for x in t)
            )
        for a, b in pairs:
            # Steps of one repetition ran back to back: their ratio shares the machine's mood.
            ratios[a, b, s] = statistics.median(
                x / y for x, y in zip(times[a, s], times[b, s], strict=True)
            )
            print(f"  {a} / {b}: {ratios[a, b, s]:.3f}  (median per repetition)")
    print("\nsummary: ms per image; ratios, median per repetition")
    labels = [f"{_short(a)}/{_short(b)}" for a, b in pairs]
    print(
        f"  {'batch':>5s} "
        + " ".join(f"{_short(n):>8s}" for n in trainers)
        + "  "
        + " ".join(f"{label:>11s}" for label in labels)
    )
    for s in sizes:
        cells = " ".join(f"{per_image[n, s]:8.1f}" for n in trainers)
        print(f"  {s:5d} {cells}  " + " ".join(f"{ratios[a, b, s]:11.3f}" for a, b in pairs))
    for flag in flags(per_image, list(trainers), sizes):
        print("  FLAG " + flag)
    plot_sweep(per_image, ratios, pairs, list(trainers), sizes, args)


NHWC_SPLIT = "emulated split NHWC"
FUSED_SPLIT = "emulated split fused"


def _short(name: str) -> str:
    return {
        "torchvision alexnet": "tv",
        "ReferenceAlexNet": "ref",
        NHWC_SPLIT: "emuNHWC",
        FUSED_SPLIT: "emuFused",
    }.get(name, "emu")


def _lrn(args: argparse.Namespace) -> str:
    """How this run computes LRN, for the report's first line and the plot's title."""
    how = f"LRN {'eager' if args.eager_lrn else 'compiled'}"
    return how + (", LRN + pool fused" if args.fused else "")


def flags(per_image: dict, names: list[str], sizes: list[int]) -> list[str]:
    """Batches whose ms per image is more than 15 % above a neighbouring batch's."""
    found = []
    for name in names:
        for i, s in enumerate(sizes):
            for j in (i - 1, i + 1):
                if 0 <= j < len(sizes) and per_image[name, s] > FLAG * per_image[name, sizes[j]]:
                    found.append(
                        f"{name}: batch {s} {per_image[name, s]:.1f} ms/image, "
                        f"{per_image[name, s] / per_image[name, sizes[j]] - 1:+.0%} "
                        f"against batch {sizes[j]}"
                        + (" (a larger batch, slower per image)" if j < i else "")
                    )
    return found


def plot_sweep(per_image, ratios, pairs, names, sizes, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name in names:
        left.plot(sizes, [per_image[name, s] for s in sizes], marker="o", label=name)
    left.set(xscale="log", xlabel="batch size", ylabel="ms per image (median step / batch)")
    left.set_title("train step per image")
    for a, b in pairs:
        right.plot(sizes, [ratios[a, b, s] for s in sizes], marker="o", label=f"{a} / {b}")
    right.axhline(1.0, color="grey", lw=0.8)
    right.set(xscale="log", xlabel="batch size", ylabel="step time ratio")
    right.set_title("step time ratios (median per repetition)")
    for ax in (left, right):
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.minorticks_off()
        ax.legend()
    fig.suptitle(
        f"{args.threads} threads, {args.reps} reps, "
        f"{'NHWC' if args.channels_last else 'NCHW'}, "
        f"LRN {'eager' if args.eager_lrn else 'compiled'}",
        fontsize=10,
    )
    fig.tight_layout()
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=110)
    plt.close(fig)
    print(f"\nplot: {args.plot}")


def report_pair(pair: Pair, size: int) -> None:
    expected = (FORWARD_FLOATS + BACKWARD_FLOATS) * size * 4
    weights = HALF_PARAMETERS * 4 * 3
    for rank, (_, received, _, _) in enumerate(pair.last):
        print(
            f"rank {rank}: received {received:,} bytes per step; analytic "
            f"({FORWARD_FLOATS:,} forward + {BACKWARD_FLOATS:,} backward floats per image) "
            f"{expected:,}  {'OK' if received == expected else 'MISMATCH'}"
        )
    saved = pair.ask("saved")
    for rank, ((_, _, peak, baseline), kept) in enumerate(zip(pair.last, saved, strict=True)):
        print(
            f"rank {rank}: peak RSS {peak / 1e6:,.0f} MB, {((peak - baseline) / 1e6):,.0f} MB "
            f"above the process before the model (batch included); "
            f"analytic weights+grads+momentum {weights / 1e6:.0f} MB "
            f"+ activations {ANALYTIC_ACTIVATIONS_PER_IMAGE * size / 1e6:,.0f} MB; "
            f"autograd keeps {kept / size / 1e6:.2f} MB per image"
        )


if __name__ == "__main__":
    main()
