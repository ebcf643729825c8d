"""Throughput of the paper's training pipeline, per CPU core, and the share of a step spent on data.

    .venv/bin/python bench/bench_data.py [--work DIR] [--batch 32] [--profile ROWS] [--cuts]
                                         [--against CHECKOUT [--reps 8]] [--no-thp] [--compile]
                                         [--heap-turns [--reps 8]]

Measures, in one process with one torch thread and no loader workers (so the
figure is per core), PairLoader's whole path from the uint8 cache: the host
reads whole 256×256 images, then batched tensor ops on the loader's device cut
the random patches, reflect them, subtract the mean and add the colour noise
(issue 15). Also the device part alone on the CPU (those ops on a batch
already in memory) and, by difference, the host's part: all that a GPU run
asks of a host core. Then the same from raw 500×375 JPEGs (decode + rescale to
256 as well); where CUDA is present, end to end into the GPU (host read, pinned
copy, augmentation on the device); and one emulated SplitAlexNet training step
(forward, backward) at --batch, for the share of a serial step spent waiting
for data.

`--profile ROWS` prints torch.profiler's busiest operators over one epoch from
the cache; `--cuts` times three ways to cut a batch's patches; `--against
CHECKOUT` runs the loader of another checkout (e.g. a clone at an older commit)
and this one in turns, an epoch from the cache each, and gives the median of
each turn's ratio; `--compile` turns on views.compile_finish in this checkout
(training's random views as one C++ pass, compiled/cut_finish.cpp; other views'
`finish` as one compiled loop), SPLIT_ALEXNET_COMPILE_DATA=1 in both;
`--heap-turns` runs the loader in turns with glibc's mmap threshold and one of
256 MB. Numbers: docs/data.md.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform
import sys
import time
import types
from pathlib import Path

# Huge pages for PyTorch's CPU allocations, as the launch scripts set them; read
# once, before torch allocates. Without them each fresh 77 MB float batch of 128
# costs ~19k page faults.
if "--no-thp" not in sys.argv:
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image, read_file, write_jpeg
from torchvision.transforms.v2 import functional as F

from split_alexnet import SplitAlexNet
from split_alexnet.data import (
    CROP,
    SIZE,
    PairLoader,
    build_embedded_dataset,
    dataset_stats,
    preprocess,
)
from split_alexnet.data.views import (
    BORDER,
    augmentation,
    colour_shift,
    compile_finish,
    corners,
    cut_and_finish,
    patches,
)

GLIBC_MMAP_CEILING = 32 << 20  # glibc's own mmap threshold never rises above this
HEAP_MMAP_THRESHOLD = 256 << 20  # --heap-turns: every block of a step at batch 128 on the heap


def raw_jpegs(embedded: Path, out: Path, count: int) -> Path:
    """count ImageNet-sized (500×375) JPEGs, upscaled from the embedded photos, in 4 classes."""
    if (out / "done").is_file():
        return out
    files = sorted((embedded / "train").rglob("*.JPEG"))[:: max(1, 1500 // count)][:count]
    for k, path in enumerate(files):
        image = decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
        image = F.resize(image, [375, 500], antialias=True)
        folder = out / "train" / f"c{k % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        write_jpeg(image, str(folder / f"{k:04d}.JPEG"), 90)
    (out / "done").write_text("")
    return out


def training_loader(
    source: Path, stats, batch: int, device: str = "cpu", kind: type = PairLoader
) -> PairLoader:
    loader = kind(
        source, "train", batch, train=True, views="random", stats=stats, seed=0, device=device
    )
    for _ in loader:  # warm the page cache, the allocator and the device
        break
    return loader


def epoch_seconds(loader: PairLoader, epoch: int) -> tuple[int, float]:
    """Images in `epoch` and the seconds the loader took to hand them all over."""
    loader.set_epoch(epoch)
    count, start = 0, time.perf_counter()
    for _, y in loader:
        count += len(y)
    if loader.device.type == "cuda":
        torch.cuda.synchronize()  # the last batch's augmentation, queued, has run
    return count, time.perf_counter() - start


def images_per_second(source: Path, stats, batch: int, epochs: int, device: str = "cpu") -> float:
    loader = training_loader(source, stats, batch, device)
    counts, seconds = zip(*(epoch_seconds(loader, epoch) for epoch in range(epochs)), strict=True)
    return sum(counts) / sum(seconds)


def device_part(stats, batch: int = 128, reps: int = 5) -> float:
    """Images/s of the loader's device ops alone (colour_shift, views.cut_and_finish: the
    batched ops, or with --compile the one C++ pass) on a batch of whole images in memory."""
    images = torch.randint(0, 256, (batch, 3, SIZE, SIZE), dtype=torch.uint8)
    rows, cols, flips, alpha = augmentation(0, 0, np.arange(batch))
    rows, cols, flips, alpha = map(torch.from_numpy, (*corners("random", rows, cols), flips, alpha))
    spent = []
    for _ in range(reps + 1):
        start = time.perf_counter()
        shift = colour_shift(alpha, stats.eigenvalues, stats.eigenvectors, "paper")
        cut_and_finish(images, rows, cols, flips, "random", stats.mean_crop(), shift, "paper")
        spent.append(time.perf_counter() - start)
    return batch / float(np.median(spent[1:]))


def loader_of(checkout: Path) -> type:
    """PairLoader of another checkout's data/loader.py and data/views.py, loaded beside
    this one as `_against.*` so that the two can run in turns in one process."""
    package = types.ModuleType("_against")
    package.__path__ = []
    sys.modules["_against"] = package
    for name in ("views", "loader"):
        path = checkout / "src" / "split_alexnet" / "data" / f"{name}.py"
        module = types.ModuleType(f"_against.{name}")
        module.__file__ = str(path)
        sys.modules[module.__name__] = module
        text = path.read_text().replace("split_alexnet.data.views", "_against.views")
        exec(compile(text, str(path), "exec"), module.__dict__)
    return sys.modules["_against.loader"].PairLoader


def in_turns(loaders: dict[str, PairLoader], reps: int) -> dict[str, list[float]]:
    """Images/s of each loader over `reps` epochs, one epoch of each in turn, so that a
    machine shared with other jobs slows them alike."""
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    for epoch in range(reps):
        for name, loader in loaders.items():
            count, seconds = epoch_seconds(loader, epoch)
            rates[name].append(count / seconds)
    return rates


def mmap_threshold(nbytes: int) -> None:
    """glibc's M_MMAP_THRESHOLD, now: allocations from `nbytes` up are fresh mmaps (new
    pages, page faults), smaller ones come from the heap and reuse freed memory. The
    trim threshold follows at twice that, as glibc's own adjustment sets it: a free
    block at the heap's top goes back to the system only above it."""
    libc = ctypes.CDLL(None)
    # M_MMAP_THRESHOLD is -3 in malloc.h, M_TRIM_THRESHOLD -1.
    if not (libc.mallopt(-3, nbytes) and libc.mallopt(-1, 2 * nbytes)):
        raise RuntimeError(f"glibc refused an mmap threshold of {nbytes} bytes")


def heap_turns(loader: PairLoader, reps: int) -> dict[str, list[float]]:
    """Images/s of `loader` over `reps` epochs in turns: glibc's threshold at its ceiling,
    where a long-running process's ends up (every float batch of 128 a fresh mmap), and
    256 MB (every batch from the heap, reusing the last one's pages; what
    MALLOC_MMAP_THRESHOLD_=268435456 would do to a whole run)."""
    rates: dict[str, list[float]] = {"glibc": [], "heap": []}
    for epoch in range(reps):
        for name, threshold in (("glibc", GLIBC_MMAP_CEILING), ("heap", HEAP_MMAP_THRESHOLD)):
            mmap_threshold(threshold)
            count, seconds = epoch_seconds(loader, epoch)
            rates[name].append(count / seconds)
    mmap_threshold(int(os.environ.get("MALLOC_MMAP_THRESHOLD_", GLIBC_MMAP_CEILING)))
    return rates


def profile_epoch(source: Path, stats, batch: int, rows: int) -> str:
    """torch.profiler's busiest operators, by input shape, over one epoch from `source`."""
    from torch.profiler import profile

    loader = training_loader(source, stats, batch)
    with profile(record_shapes=True) as prof:
        for _ in loader:
            pass
    table = prof.key_averages(group_by_input_shape=True)
    return table.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=30)


def cut_methods(batch: int = 128, reps: int = 5) -> dict[str, float]:
    """Median ms to cut `batch` random patches three ways (the choice in views.patches)."""
    images = torch.randint(0, 256, (batch, 3, SIZE, SIZE), dtype=torch.uint8)
    rows, cols = torch.randint(0, BORDER + 1, (2, batch, 1))
    r, c = rows + torch.arange(CROP), cols + torch.arange(CROP)  # (N, 224) each
    n, channel = torch.arange(batch).view(-1, 1, 1, 1), torch.arange(3).view(1, 3, 1, 1)
    r4, c4 = r[:, None, :, None], c[:, None, None, :]
    pixel = (r4 * SIZE + c4).view(batch, 1, -1).expand(batch, 3, -1)
    ways = {
        "index_select of 224-byte windows": lambda: patches(images, rows, cols)[:, 0],
        "advanced indexing, per pixel": lambda: images[n, channel, r4, c4],
        "gather, per pixel": lambda: images.flatten(2).gather(2, pixel).view(-1, 3, CROP, CROP),
    }
    first = ways["index_select of 224-byte windows"]()
    times = {}
    for name, way in ways.items():
        assert torch.equal(way(), first), name
        spent = []
        for _ in range(reps):
            start = time.perf_counter()
            way()
            spent.append(time.perf_counter() - start)
        times[name] = 1e3 * float(np.median(spent))
    return times


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def step_seconds(batch: int, steps: int = 3) -> float:
    model = SplitAlexNet.emulated()
    model.train()
    x = torch.randn(batch, 3, 224, 224) * 50
    y = torch.randint(0, 1000, (batch,))
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/split_alexnet_bench"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--profile", type=int, default=0, metavar="ROWS")
    parser.add_argument("--cuts", action="store_true", help="time three ways to cut patches")
    parser.add_argument("--no-thp", action="store_true", help="no huge pages for tensors")
    parser.add_argument("--against", type=Path, metavar="CHECKOUT", help="another loader, in turns")
    parser.add_argument("--reps", type=int, default=8, help="epochs of each loader for --against")
    parser.add_argument("--compile", action="store_true", help="views.compile_finish")
    parser.add_argument(
        "--heap-turns", action="store_true", help="glibc's mmap threshold and 256 MB in turns"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    compile_finish(args.compile)
    embedded = build_embedded_dataset(args.work / "photos")
    cache, _ = preprocess(embedded)
    stats = dataset_stats(cache)
    raw = raw_jpegs(embedded, args.work / "raw500x375", 256)
    raw_stats = dataset_stats(raw)
    cached = images_per_second(cache, stats, 128, 3)
    device = device_part(stats)
    host = 1 / (1 / cached - 1 / device) if device > cached else float("inf")  # the rest
    decoded = images_per_second(raw, raw_stats, 128, 1)
    step = step_seconds(args.batch)
    thp = os.environ.get("THP_MEM_ALLOC_ENABLE", "0")
    heap = os.environ.get("MALLOC_MMAP_THRESHOLD_", "glibc's")
    print(
        f"machine: {cpu_name()}, {torch.get_num_threads()} torch thread, THP {thp}, "
        f"mmap threshold {heap}"
    )
    print(f"cache (uint8 memmap, 1500 images):   {cached:8.0f} images/s per core")
    print(f"  device part alone (cut, reflect, mean, colour): {device:8.0f} images/s per core")
    print(f"  host part, the rest (read, draws, loop):        {host:8.0f} images/s per core")
    print(f"raw 500x375 JPEGs (256 images):      {decoded:8.0f} images/s per core")
    if torch.cuda.is_available():
        into = images_per_second(cache, stats, 128, 3, device="cuda")
        print(f"cache into {torch.cuda.get_device_name()}: {into:8.0f} images/s (1 host core)")
    print(f"emulated SplitAlexNet step at batch {args.batch} (1 thread): {step:.3f} s")
    for name, rate in (("cache", cached), ("raw JPEG", decoded)):
        wait = args.batch / rate
        print(f"  data share of a serial step, {name:8s}: {wait / (wait + step):6.1%}")
    if args.against:
        loaders = {
            "this": training_loader(cache, stats, 128),
            str(args.against): training_loader(cache, stats, 128, kind=loader_of(args.against)),
        }
        rates = in_turns(loaders, args.reps)
        for name, seen in rates.items():
            each = " ".join(f"{rate:.0f}" for rate in seen)
            print(f"  {name}: median {np.median(seen):6.0f} images/s per core (epochs: {each})")
        ours, theirs = (np.array(seen) for seen in rates.values())
        print(f"  median of each turn's ratio, this / against: {np.median(ours / theirs):.3f}")
    if args.heap_turns:
        rates = heap_turns(training_loader(cache, stats, 128), args.reps)
        for name, seen in rates.items():
            each = " ".join(f"{rate:.0f}" for rate in seen)
            print(f"  heap {name}: median {np.median(seen):6.0f} images/s per core ({each})")
        heap, glibc = (np.array(rates[k]) for k in ("heap", "glibc"))
        print(f"  median of each turn's ratio, heap / glibc: {np.median(heap / glibc):.3f}")
    if args.cuts:
        for name, ms in cut_methods().items():
            print(f"  cut 128 patches, {name:34s} {ms:7.1f} ms")
    if args.profile:
        print(profile_epoch(cache, stats, 128, args.profile))


if __name__ == "__main__":
    main()
