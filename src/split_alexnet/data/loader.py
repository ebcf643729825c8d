"""One batch for the pair: both halves of the split network get byte-identical inputs.

Batch b of an epoch is a fixed slice of a permutation that depends only on
(seed, epoch); `replicas` data-parallel replicas each take a contiguous shard of
it (so the union over replicas is the same global batch whatever their number).
Inside a model-parallel pair, rank 0 reads the first half of the shard and rank
1 the second; the pair all-gathers the whole uint8 256×256 images, so no image
is read or decoded twice. Both ranks then cut the patches, reflect them,
subtract the mean and add the colour noise on their own device (issue 15),
from draws that are functions of (seed, epoch, sample index) alone, so the
corners, flips and α are computed by each rank, never sent. A checksum of the
finished batch is compared across the pair every `checksum_every` batches.

Whole images cost the gather 3·256² = 196,608 bytes a sample instead of a
patch's 3·224² = 150,528 (1.31×; ten test views: 1/7.7 of the ten patches),
12.6 MB received per rank for a batch of 128: the price of moving every
per-pixel step off the host, which then only reads (and pins) the images.

A corrupt file in a raw folder is found by whichever rank decodes it; its
validity bit travels with the gathered images, so both ranks drop the same row.
That rank logs it once (`report_skip`); `skipped` counts it every epoch.

Nothing in an iteration from the cache waits for the device (issue 12): the
workers hand over pinned host tensors (images, labels, corners, flips,
colour-noise draws) that are copied without blocking, so the host reads batch
b+1 while the device works on batch b, and the pair check records its verdict
on the device for whoever looks next (`check_pair`). Raw folders read each
valid bit back, one wait per batch, because a file is found unreadable only
when read.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from split_alexnet.cli import UserError
from split_alexnet.data.folder import CROP, SIZE, UnreadableImage, report_skip
from split_alexnet.data.scaled import check_image_size, scaled_input
from split_alexnet.data.source import CacheSource, FolderSource, open_source
from split_alexnet.data.stats import DatasetStats
from split_alexnet.data.views import (
    ColourNoise,
    Views,
    augmentation,
    colour_shift,
    corners,
    cut_and_finish,
)
from split_alexnet.parallel.collectives import gather_pair


class PairMismatchError(UserError):
    """The two ranks of a model-parallel pair hold different batches."""


class _Epoch:
    """The deterministic plan of one epoch: which samples form each shard half."""

    def __init__(self, n, batch_size, drop_last, order, replica, replicas, part, parts):
        self.n, self.batch_size, self.drop_last, self.order = n, batch_size, drop_last, order
        self.replica, self.replicas, self.part, self.parts = replica, replicas, part, parts

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def shard(self, b: int) -> np.ndarray:
        """This replica's sample indices of global batch b."""
        batch = self.order[b * self.batch_size : (b + 1) * self.batch_size]
        return np.array_split(batch, self.replicas)[self.replica]

    def part_of(self, b: int) -> tuple[np.ndarray, int]:
        """This rank's share of the shard, and the padded length every rank sends."""
        shard = self.shard(b)
        return np.array_split(shard, self.parts)[self.part], math.ceil(len(shard) / self.parts)


class _Decode(Dataset):
    """Batch b → this rank's whole 256×256 images, padded to the pair's common length, their
    valid bits, the decode errors, and the whole shard's labels, patch corners, reflections
    and colour-noise draws (functions of the sample indices, so no rank sends them)."""

    def __init__(self, source, plan: _Epoch, views: Views, seed: int, epoch: int) -> None:
        self.source, self.plan, self.views, self.seed, self.epoch = source, plan, views, seed, epoch

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, b: int):
        indices, length = self.plan.part_of(b)
        shard = self.plan.shard(b)
        images = torch.empty((length, 3, SIZE, SIZE), dtype=torch.uint8)
        valid = torch.zeros(length, dtype=torch.uint8)
        dest, ok = images.numpy(), valid.numpy()
        errors = []
        for k, i in enumerate(indices):
            try:
                dest[k] = self.source.image(int(i))  # from the cache: one contiguous read
                ok[k] = 1
            except UnreadableImage as error:
                errors.append((error.path, error.why))
        dest[ok == 0] = 0  # unread rows (padding, unreadable files) travel as zeros
        labels = torch.from_numpy(self.source.labels[shard])
        rows, cols, flips, alpha = augmentation(self.seed, self.epoch, shard)
        draws = (*corners(self.views, rows, cols), flips, alpha)
        return images, valid, errors, labels, tuple(map(torch.from_numpy, draws))


class PairLoader:
    """Batches of (images, labels) for one rank of a model-parallel pair.

    images: float32 (N, 3, 224, 224), or (N, 10, 3, 224, 224) for views="ten"
    (order: views.TEN_VIEW_OFFSETS, then the same five reflected), in 0–255
    units minus the mean image's central crop; at `image_size` 112 or in `grey`,
    the scaled Figure 3 experiment's input (data/scaled.py); labels: int64 (N,). Both on
    `device` (the pair's collective device: CPU for gloo, the current CUDA
    device for NCCL).

    batch_size is the global batch (the paper's 128), split over `replicas`.
    """

    def __init__(
        self,
        source: Path,
        split: str,
        batch_size: int,
        *,
        train: bool,
        views: Views,
        stats: DatasetStats,
        seed: int,
        colour_noise: ColourNoise = "paper",
        group: dist.ProcessGroup | None = None,
        replica: int = 0,
        replicas: int = 1,
        num_workers: int = 0,
        checksum_every: int = 0,
        drop_last: bool | None = None,
        device: torch.device | str = "cpu",
        image_size: int = CROP,
        grey: bool = False,
    ) -> None:
        if views not in ("random", "center", "ten"):
            raise ValueError(f"views must be 'random', 'center' or 'ten', got {views!r}")
        if colour_noise not in ("paper", "code", "off"):
            raise ValueError(f"colour_noise must be 'paper', 'code' or 'off', got {colour_noise!r}")
        if batch_size < replicas or not 0 <= replica < replicas:
            raise ValueError(f"replica {replica} of {replicas} with global batch {batch_size}")
        self.source: FolderSource | CacheSource = open_source(Path(source), split)
        self.split, self.batch_size, self.train, self.views = split, batch_size, train, views
        self.seed, self.colour_noise, self.group = seed, colour_noise, group
        self.replica, self.replicas, self.num_workers = replica, replicas, num_workers
        self.checksum_every = checksum_every
        check_image_size(image_size)
        self.image_size, self.grey = image_size, grey
        self.drop_last = train if drop_last is None else drop_last
        self.device = torch.device(device)
        if group is not None:
            if dist.get_world_size(group) != 2:
                raise ValueError("the model-parallel group of a pair must have 2 ranks")
            self.part, self.parts = dist.get_rank(group), 2
        else:
            self.part, self.parts = 0, 1
        self.mean_crop = stats.mean_crop().to(self.device)
        self.eigenvalues = stats.eigenvalues.to(self.device)
        self.eigenvectors = stats.eigenvectors.to(self.device)
        self.skipped: dict[str, int] = {}  # unreadable file → times skipped
        # epoch·2³² + batch of the first batch the pair disagreed on; -1: none yet.
        self.first_mismatch = torch.full((), -1, dtype=torch.int64, device=self.device)
        self.epoch, self.start_batch = 0, 0
        if len(self) == 0:
            raise ValueError(f"{len(self.source)} images make no batch of {batch_size}")

    @property
    def classes(self) -> tuple[str, ...]:
        return self.source.classes

    @property
    def num_classes(self) -> int:
        return len(self.source.classes)

    def __len__(self) -> int:
        """Batches per epoch."""
        return len(self._plan(None))

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """The next iteration yields batches start_batch.. of `epoch` (exact resume)."""
        self.epoch, self.start_batch = epoch, start_batch

    def iter_from(self, batch_index: int):
        self.start_batch = batch_index
        return iter(self)

    def order(self, epoch: int) -> np.ndarray:
        """Sample indices of the epoch in batch order: shuffled by (seed, epoch) when training."""
        n = len(self.source)
        if not self.train:
            return np.arange(n)
        return np.random.Generator(np.random.PCG64([self.seed, epoch])).permutation(n)

    def _plan(self, epoch: int | None) -> _Epoch:
        return _Epoch(
            len(self.source), self.batch_size, self.drop_last,
            self.order(epoch) if epoch is not None else None,
            self.replica, self.replicas, self.part, self.parts,
        )  # fmt: skip

    def __iter__(self):
        epoch, start = self.epoch, self.start_batch
        self.start_batch = 0
        plan = self._plan(epoch)
        decode = _Decode(self.source, plan, self.views, self.seed, epoch)
        batches = DataLoader(
            decode,
            batch_size=None,
            sampler=range(start, len(plan)),
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        for b, (images, valid, errors, labels, draws) in zip(
            range(start, len(plan)), batches, strict=True
        ):
            shard = plan.shard(b)
            images = self._gather(images.to(self.device, non_blocking=True))[: len(shard)]
            for path, why in errors:
                report_skip(path, why)
            if self.source.may_fail:
                keep = self._gather(valid.to(self.device))[: len(shard)].bool().cpu()
                if not bool(keep.all()):
                    for i in shard[~keep.numpy()]:
                        name = self.source.files[int(i)]
                        self.skipped[name] = self.skipped.get(name, 0) + 1
                    images, labels = images[keep.to(self.device)], labels[keep]
                    draws = tuple(d[keep] for d in draws)
                    if len(labels) == 0:
                        continue
            labels = labels.to(self.device, non_blocking=True)
            rows, cols, flips, alpha = (d.to(self.device, non_blocking=True) for d in draws)
            shift = None
            if self.train and self.colour_noise != "off":
                shift = colour_shift(alpha, self.eigenvalues, self.eigenvectors, self.colour_noise)
            images = cut_and_finish(
                images,
                rows,
                cols,
                flips,
                self.views,
                self.mean_crop,
                shift,
                self.colour_noise if self.train else "off",
            )
            images = scaled_input(images, self.image_size, self.grey)
            if self.group is not None and self.checksum_every and b % self.checksum_every == 0:
                self._compare_pair(images, labels, epoch, b)
            yield images, labels

    def _gather(self, part: torch.Tensor) -> torch.Tensor:
        return part if self.group is None else gather_pair(part, self.group)

    def _compare_pair(self, images: torch.Tensor, labels: torch.Tensor, epoch: int, b: int):
        mine = torch.cat([batch_checksum(images), labels])
        both = gather_pair(mine, self.group).view(2, -1)
        differ = (both[0] != both[1]).any() & (self.first_mismatch < 0)
        self.first_mismatch = torch.where(differ, (epoch << 32) + b, self.first_mismatch)

    def check_pair(self) -> None:
        """Raise if the two halves of the pair held different batches (one wait for the device)."""
        first = int(self.first_mismatch)
        if first >= 0:
            raise PairMismatchError(
                f"the two halves of the pair got different batches at epoch {first >> 32}, "
                f"batch {first & 0xFFFFFFFF} (split {self.split!r}): stopping"
            )


def batch_checksum(images: torch.Tensor) -> torch.Tensor:
    """int64 (N,): the sum of each sample's float32 bit patterns, exact and order-sensitive."""
    return images.flatten(1).view(torch.int32).sum(1, dtype=torch.int64)
