"""Throughput of the paper's training pipeline, per CPU core, and the share of a step spent on data.

    .venv/bin/python bench/bench_data.py [--work DIR] [--batch 32]

Measures, in one process with one torch thread and no loader workers (so the
figure is per core): read + random crop + reflection + colour noise + mean
subtraction, from the uint8 cache and from raw 500×375 JPEGs (decode + rescale
to 256 as well). Then one emulated SplitAlexNet training step (forward,
backward) at --batch, to give the share of a serial step spent waiting for data.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image, read_file, write_jpeg
from torchvision.transforms.v2 import functional as F

from split_alexnet import SplitAlexNet
from split_alexnet.data import PairLoader, build_embedded_dataset, dataset_stats, preprocess


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


def images_per_second(source: Path, stats, batch: int, epochs: int) -> float:
    loader = PairLoader(source, "train", batch, train=True, views="random", stats=stats, seed=0)
    for _ in loader:  # warm the page cache and the allocator
        break
    count, start = 0, time.perf_counter()
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for _, y in loader:
            count += len(y)
    return count / (time.perf_counter() - start)


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
    args = parser.parse_args()
    torch.set_num_threads(1)
    embedded = build_embedded_dataset(args.work / "photos")
    cache, _ = preprocess(embedded)
    stats = dataset_stats(cache)
    raw = raw_jpegs(embedded, args.work / "raw500x375", 256)
    raw_stats = dataset_stats(raw)
    cached = images_per_second(cache, stats, 128, 3)
    decoded = images_per_second(raw, raw_stats, 128, 1)
    step = step_seconds(args.batch)
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, {torch.get_num_threads()} torch thread")
    print(f"cache (uint8 memmap, 1500 images):   {cached:8.0f} images/s per core")
    print(f"raw 500x375 JPEGs (256 images):      {decoded:8.0f} images/s per core")
    print(f"emulated SplitAlexNet step at batch {args.batch} (1 thread): {step:.3f} s")
    for name, rate in (("cache", cached), ("raw JPEG", decoded)):
        wait = args.batch / rate
        print(f"  data share of a serial step, {name:8s}: {wait / (wait + step):6.1%}")


if __name__ == "__main__":
    main()
