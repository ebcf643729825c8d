"""The parts of a run around the loop: its logs, its data on disk, its filter pictures."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from split_alexnet.config import DataConfig
from split_alexnet.data import (
    DataError,
    DatasetStats,
    PairMismatchError,
    build_embedded_dataset,
    dataset_stats,
)
from split_alexnet.data.preprocess import default_cache, preprocess
from split_alexnet.layout import Layout
from split_alexnet.split import SplitAlexNet


class TrainingDiverged(RuntimeError):
    """The loss is not finite: stop, keeping the last good checkpoint."""


def run_command(command: Callable[[], object]) -> None:
    """Run a user command; a bad input or a stopped run is one line, not a traceback.

    DataError, CheckpointError, LayoutError and bad options are ValueErrors.
    """
    try:
        command()
    except (ValueError, TrainingDiverged, PairMismatchError) as error:
        if logging.getLogger().handlers:
            logging.getLogger("split_alexnet").error("%s", error)
        else:
            print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


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


def open_data(cfg: DataConfig, layout: Layout, seed: int) -> tuple[Path, DatasetStats]:
    """The source the loaders read (the uint8 cache, or raw folders) and its mean/PCA.

    The main process builds the embedded set, the cache and the statistics once;
    the others wait, then read what it wrote.
    """
    if cfg.root is None:
        root = Path(cfg.embedded_dir)
        if layout.is_main:
            build_embedded_dataset(root)
    else:
        root = Path(cfg.root)
        if not root.is_dir():
            raise DataError(f"data root {root} does not exist or is not a directory")
    source = default_cache(root) if cfg.use_cache else root
    if layout.is_main:
        if cfg.use_cache:
            preprocess(root, source, stats_subset=cfg.stats_subset, stats_seed=seed)
        else:
            dataset_stats(source, subset=cfg.stats_subset, seed=seed)
    layout.barrier()
    return source, dataset_stats(source, subset=cfg.stats_subset, seed=seed)


def conv1_kernels(model: SplitAlexNet) -> torch.Tensor:
    """All 96 conv1 kernels, half 0's first, in every process (a collective in a pair)."""
    parts = [half.layer("conv1").weight.detach() for half in model.halves.values()]
    with torch.no_grad():
        return model.exchange.gather(parts, dim=0).cpu()


def save_filters(model: SplitAlexNet, path: Path, epoch: int, layout: Layout) -> None:
    """The Figure 3 picture of this epoch's conv1 kernels: one min–max for all channels."""
    kernels = conv1_kernels(model)
    if not layout.is_main:
        return
    from split_alexnet.analysis import pictures

    path.parent.mkdir(parents=True, exist_ok=True)
    grid = pictures.kernel_grid(pictures.scaled(kernels.double().numpy(), per_kernel=False))
    pictures.save_kernel_figure(grid, f"conv1 after epoch {epoch}", path)
