"""Everything a training run sets up before its first step, and where it stands.

`start(cfg, layout)` gives a `Run`: the run directory and its logs, the data
(embedded set, cache, mean/PCA), the two loaders, the network in this
process's layout, the optimiser and ε schedule, and the position to continue
from when the run directory already holds a checkpoint.
"""

from __future__ import annotations

import fcntl
import logging
import socket
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn
from torch.optim import Optimizer

from split_alexnet.cli import UserError
from split_alexnet.config import DataConfig, OptimConfig, TrainConfig, variant_options
from split_alexnet.data import (
    DataError,
    DatasetStats,
    PairLoader,
    build_embedded_dataset,
    dataset_stats,
)
from split_alexnet.data.preprocess import default_cache, preprocess
from split_alexnet.data.views import compile_finish
from split_alexnet.model.lrn import compile_lrn
from split_alexnet.model.lrn_pool import fuse_lrn_pool
from split_alexnet.model.split import SplitAlexNet
from split_alexnet.model.table import Variant
from split_alexnet.parallel.layout import Layout
from split_alexnet.training.checkpoint import latest, load_halves, load_run, save_checkpoint
from split_alexnet.training.files import discard_partial
from split_alexnet.training.metrics import MetricsLog
from split_alexnet.training.optim import PaperSGD, param_groups
from split_alexnet.training.schedule import (
    FixedEpochsSchedule,
    PlateauSchedule,
    Schedule,
    colour_noise_at,
    set_lr,
)

log = logging.getLogger("split_alexnet")
REFERENCE_BATCH = 128  # Sec. 5: the batch the paper's ε = 0.01 belongs to
LOCK_NAME = ".preparing.lock"  # held by whoever builds a data place (`_preparing`)
# precision → (dtype of weights, velocities and input; autocast dtype of the forward or None).
# fp64 exists to compare layouts and changes exactly: float64 has no near-ties in max-pool
# windows for another CPU's rounding to flip (issue 14).
PRECISIONS: dict[str, tuple[torch.dtype, torch.dtype | None]] = {
    "fp32": (torch.float32, None),
    "fp64": (torch.float64, None),
    "bf16": (torch.float32, torch.bfloat16),
}


class TrainingDiverged(UserError):
    """The loss is not finite: stop, keeping the last good checkpoint."""


class PeerLost(UserError):
    """A collective gave up on another process: it died, hangs, or cannot be reached.

    Not the user's doing and perhaps gone on the next try: exit status 1, which
    torchrun --max-restarts answers by starting the processes again.
    """

    status = 1


def precision(name: str) -> tuple[torch.dtype, torch.dtype | None]:
    """The weights' dtype and the forward's autocast dtype (None: no autocast) of `name`."""
    if name not in PRECISIONS:
        raise ValueError(f"precision must be {', '.join(PRECISIONS)}, not {name!r}")
    return PRECISIONS[name]


def setup_logging(run_dir: Path, layout: Layout) -> None:
    """Every process logs to run_dir/logs/rank<N>.log; only the main process to the console."""
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter(
        f"%(asctime)s rank{layout.rank} %(levelname)s %(name)s: %(message)s", "%H:%M:%S"
    )
    handlers: list[logging.Handler] = [logging.FileHandler(logs / f"rank{layout.rank}.log")]
    if layout.is_main:
        handlers.append(logging.StreamHandler(sys.stdout))
    root = logging.getLogger()
    for handler in handlers:
        handler.setFormatter(fmt)
        root.addHandler(handler)
    root.setLevel(logging.INFO)


def data_places(cfg: DataConfig) -> tuple[Path, Path, Path | None]:
    """(root, the source the loaders read, where the mean/PCA go) for `cfg`."""
    root = Path(cfg.embedded_dir) if cfg.root is None else Path(cfg.root)
    cache = Path(cfg.cache_dir) if cfg.cache_dir else default_cache(root)
    if cfg.use_cache:
        return root, cache, None  # the statistics live in the cache
    return root, root, Path(cfg.cache_dir) if cfg.cache_dir else None


def check_data_places(cfg: DataConfig) -> None:
    """A one-line DataError, before any process group starts, if the data root is missing
    or the place its cache and statistics go cannot be written."""
    root, source, stats = data_places(cfg)
    if cfg.root is not None and not root.is_dir():
        raise DataError(f"data root {root} does not exist or is not a directory")
    place = stats or (source if cfg.use_cache else root)
    try:
        place.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=place):
            pass
    except OSError as error:
        raise DataError(
            f"cannot write the data cache in {place} ({error.strerror or error}): "
            "set data.cache_dir to a writable folder"
        ) from None


def open_data(cfg: DataConfig, layout: Layout, seed: int) -> tuple[Path, DatasetStats]:
    """The source the loaders read (the uint8 cache, or raw folders) and its mean/PCA.

    The main process builds the embedded set, the cache and the statistics once;
    the others wait for it as long as it takes, then read what it wrote.
    """
    root, source, stats_dir = data_places(cfg)
    if cfg.root is not None and not root.is_dir():
        raise DataError(f"data root {root} does not exist or is not a directory")
    if layout.is_main:
        with _preparing(stats_dir or source):
            if cfg.root is None:
                build_embedded_dataset(root, cfg.name)
            if cfg.use_cache:
                preprocess(root, source, stats_subset=cfg.stats_subset, stats_seed=seed)
            else:
                dataset_stats(source, subset=cfg.stats_subset, seed=seed, where=stats_dir)
    layout.wait_for_main()
    check_same_data(layout, stats_dir or source)
    return source, dataset_stats(source, subset=cfg.stats_subset, seed=seed, where=stats_dir)


@contextmanager
def _preparing(place: Path) -> Iterator[None]:
    """Held while this process builds what the loaders read into `place`: runs started
    together on one machine (launch/figure3_experiment.sh's) would otherwise build the
    same folders at once. A place this process cannot write is only read: no lock."""
    try:
        place.mkdir(parents=True, exist_ok=True)
        lock = open(place / LOCK_NAME, "w")  # noqa: SIM115  (held across the yield)
    except OSError:
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def check_same_data(layout: Layout, place: Path) -> None:
    """Every process sees the data the main process prepared in `place`, or all stop
    with one line naming those that do not (issue 12: a cache on one node's local disk).

    Compared: the names and sizes of the files in `place` (the cache's manifests,
    its image arrays, the mean/PCA), not their 150 GB of contents.
    """
    files = sorted(p for p in place.glob("*") if p.is_file() and p.name != LOCK_NAME)
    mine = [(p.name, p.stat().st_size) for p in files]
    seen = layout.gather((socket.gethostname(), mine))
    main = seen[0][1]
    others = [f"rank {rank} on {host}" for rank, (host, view) in enumerate(seen) if view != main]
    if others:
        raise DataError(
            f"{', '.join(others)} do not see the data that rank 0 prepared in "
            f"{layout.broadcast(str(place))}: put "
            "data.cache_dir on storage every node shares, or run split-alexnet-preprocess with "
            "the same arguments on every node before training"
        )


def make_loader(
    data: DataConfig,
    source: Path,
    stats: DatasetStats,
    layout: Layout,
    seed: int,
    *,
    split: str,
    batch_size: int,
    views: str,
    image_size: int,
) -> PairLoader:
    """This process's loader of `split` for a net reading `image_size` pixels: random crops
    for "train", fixed views otherwise."""
    train = views == "random"
    return PairLoader(
        source, split, batch_size, train=train, views=views, stats=stats,  # type: ignore[arg-type]
        seed=seed, colour_noise=data.colour_noise if train else "off",  # type: ignore[arg-type]
        group=layout.mp_group, replica=layout.dp_rank, replicas=layout.dp_size,
        num_workers=data.num_workers, checksum_every=data.checksum_every, device=layout.device,
        image_size=image_size, grey=data.grey,
    )  # fmt: skip


def make_optimizer(model: SplitAlexNet, cfg: OptimConfig) -> Optimizer:
    groups = param_groups(model, cfg.preset, cfg.lr, cfg.weight_decay)
    if cfg.name == "paper":
        return PaperSGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.name == "torch_sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    raise ValueError(f"optim.name must be paper or torch_sgd, not {cfg.name!r}")


def scaled_lr(cfg: OptimConfig, global_batch: int) -> OptimConfig:
    """The linear scaling rule, opt-in: ε·B/128 for a global batch B (the paper's ε is for 128)."""
    if not cfg.scale_lr_with_batch:
        return cfg
    return OmegaConf.merge(cfg, {"lr": cfg.lr * global_batch / REFERENCE_BATCH})  # type: ignore[return-value]


def make_schedule(cfg: OptimConfig) -> Schedule:
    if cfg.schedule == "plateau":
        return PlateauSchedule(cfg.lr, patience=cfg.patience, max_reductions=cfg.max_reductions)
    if cfg.schedule == "fixed":
        return FixedEpochsSchedule(cfg.lr, epochs=tuple(cfg.reduce_at))
    raise ValueError(f"optim.schedule must be plateau or fixed, not {cfg.schedule!r}")


@dataclass
class Run:
    """A run's parts and its position: the next step reads batch `batch` of epoch `epoch`."""

    cfg: TrainConfig
    layout: Layout
    run_dir: Path
    model: SplitAlexNet  # this process's halves
    net: nn.Module  # what the step runs: the model, or its data-parallel wrapper
    optimizer: Optimizer
    schedule: Schedule
    train_loader: PairLoader
    val_loader: PairLoader
    metrics: MetricsLog
    epoch: int = 0
    batch: int = 0
    step: int = 0

    @property
    def checkpoints(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def at_step_limit(self) -> bool:
        return self.cfg.max_steps is not None and self.step >= self.cfg.max_steps

    def finished(self) -> bool:
        return (
            self.epoch >= self.cfg.epochs
            or self.at_step_limit
            or self.schedule.finished(self.epoch)
        )

    def apply_lr(self) -> None:
        """This epoch's ε in every group and its colour noise (the schedule; the 2012 log)."""
        optim = self.cfg.optim
        set_lr(self.optimizer, self.schedule.lr, epoch=self.epoch, group_lr=optim.group_lr)
        self.train_loader.colour_noise = colour_noise_at(
            self.cfg.data.colour_noise, optim.colour_noise_off_at, self.epoch
        )

    def save(self) -> None:
        """A checkpoint that resumes at (epoch, batch). No global RNG state is saved: every
        random draw of a run is a function of (seed, epoch, index) (data/views.py) or of
        the dropout layers' draw counts, which travel with the halves."""
        state = {
            "epoch": self.epoch, "batch": self.batch, "schedule": self.schedule.state_dict(),
            "config": OmegaConf.to_yaml(self.cfg),
        }  # fmt: skip
        save_checkpoint(
            self.checkpoints, self.step, self.model, self.optimizer, self.layout, state,
            self.cfg.keep_checkpoints,
        )  # fmt: skip


def start(cfg: TrainConfig, layout: Layout) -> Run:
    """Set up (or continue) the run `cfg` describes in this process's `layout`."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.compile_lrn:
        compile_lrn(True)
    fuse_lrn_pool(cfg.fuse_lrn_pool)
    if cfg.compile_data:
        compile_finish(True)
    torch.backends.cudnn.benchmark = cfg.cudnn_benchmark and layout.device.type == "cuda"
    run_dir = Path(str(layout.broadcast(str(Path(cfg.run_dir).resolve()))))
    setup_logging(run_dir, layout)
    if layout.is_main:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
        for path in discard_partial(run_dir / "checkpoints"):  # a process killed mid-save
            log.info("removed the partial file %s", path)
    pair_batch = layout.pair_batch(cfg.data.batch_size)
    dtype, _ = precision(cfg.precision)
    source, stats = open_data(cfg.data, layout, seed=cfg.seed)
    loaders = {
        split: make_loader(
            cfg.data,
            source,
            stats,
            layout,
            cfg.seed,
            split=split,
            batch_size=cfg.data.batch_size,
            views=views,
            image_size=cfg.model.image_size,
        )
        for split, views in (("train", "random"), ("val", cfg.data.val_views))
    }
    variant = Variant(**variant_options(cfg.model, loaders["train"].num_classes))
    model = layout.build(variant, cfg.seed, cfg.channels_last, dtype)
    optim_cfg = scaled_lr(cfg.optim, cfg.data.batch_size)
    run = Run(
        cfg, layout, run_dir, model, layout.replicate(model), make_optimizer(model, optim_cfg),
        make_schedule(optim_cfg), loaders["train"], loaders["val"],
        MetricsLog(run_dir, layout.is_main),
    )  # fmt: skip
    previous = latest(run_dir) if cfg.resume else None
    if previous is not None:
        state = load_run(previous)
        load_halves(previous, model, run.optimizer)
        run.schedule.load_state_dict(state["schedule"])
        position = state["epoch"], state["batch"], state["step"]
        run.epoch, run.batch, run.step = position
        log.info("resuming from %s: epoch %d, batch %d, step %d", previous, *position)
    elif cfg.init_from:
        init = torch.load(cfg.init_from, map_location=layout.device, weights_only=True)
        model.load_reference_state_dict(init)
        log.info("initialised from the reference-layout dict %s", cfg.init_from)
    # Lines logged after the position this run starts from (all of them when no checkpoint
    # survives) are logged again as the steps are run again: each step is logged once.
    dropped = run.metrics.rewind(run.epoch, run.step)
    if dropped:
        log.info("metrics.jsonl: moved %d line(s) logged after step %d to %s", dropped, run.step,
                 run.metrics.rewound.name)  # fmt: skip
    log.info(
        "%s: %d process(es), %d pair(s) of batch %d, device %s; %s: %d classes, "
        "%d train / %d val batches; run directory %s",
        layout.mode, layout.world, layout.dp_size, pair_batch, layout.device, cfg.data.name,
        run.train_loader.num_classes, len(run.train_loader), len(run.val_loader), run_dir,
    )  # fmt: skip
    return run
