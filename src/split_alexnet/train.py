"""Train the paper's network: one half per process under torchrun, or both halves in one.

    torchrun --standalone --nproc_per_node=2 -m split_alexnet.train   # a pair: launch/cpu_pair.sh
    torchrun --standalone --nproc_per_node=8 -m split_alexnet.train   # 4 pairs: docs/scaling.md
    python -m split_alexnet.train mode=emulate                          # both halves here
    python -m split_alexnet.train data=imagenet data.root=/data/imagenet optim=code2012

Everything a run writes goes to run_dir: checkpoints/, metrics.jsonl,
tensorboard/, curves.png, filters/epochNNN.png, logs/rankN.log, config.yaml.
Stopped by SIGTERM or Ctrl-C, a run saves and exits; started again with the
same run_dir it continues exactly where it stopped.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
import torch.nn.functional as F
from tqdm import tqdm

from split_alexnet.cli import run_command
from split_alexnet.config import TrainConfig, register
from split_alexnet.parallel.layout import Layout, setup_layout
from split_alexnet.training.checkpoint import latest
from split_alexnet.training.evaluation import evaluate
from split_alexnet.training.metrics import topk_wrong
from split_alexnet.training.plots import plot_curves, save_filters
from split_alexnet.training.run import Run, TrainingDiverged, check_data_places, precision, start

log = logging.getLogger("split_alexnet")


class StopRequest:
    """SIGTERM or Ctrl-C asks the run to save at the next step boundary and exit."""

    def __init__(self) -> None:
        self.requested = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True


@dataclass(frozen=True)
class Step:
    loss: torch.Tensor  # this replica's mean loss over its shard
    wrong: int  # top-1 misses in the shard
    stopping: bool  # some process was asked to stop: all save and stop after this step
    diverged: bool  # some replica's loss is not finite: nobody updated


def train(cfg: TrainConfig) -> Path:
    """Run (or continue) the training `cfg` describes; returns the run directory."""
    check_data_places(cfg.data)
    layout = setup_layout(cfg.mode.layout, cfg.collective_timeout_s)
    try:
        return _train(start(cfg, layout))
    finally:
        layout.close()


def _train(run: Run) -> Path:
    cfg, layout = run.cfg, run.layout
    stop = StopRequest()
    run_step = step_function(run.net, run.optimizer, layout, cfg.precision)
    while not run.finished():
        run.apply_lr()
        run.train_loader.set_epoch(run.epoch, run.batch)
        with tqdm(
            total=len(run.train_loader), initial=run.batch, desc=f"epoch {run.epoch}",
            disable=not layout.is_main, unit="batch", dynamic_ncols=True,
        ) as bar:  # fmt: skip
            for images, labels in run.train_loader:
                started, received = time.perf_counter(), run.model.exchange.bytes_received
                step = run_step(images, labels, stop.requested)
                if step.diverged:
                    raise TrainingDiverged(
                        f"loss is {step.loss.item()} at epoch {run.epoch}, step {run.step}: "
                        f"stopping; the last good checkpoint is "
                        f"{latest(run.run_dir) or 'none (no checkpoint yet)'}"
                    )
                run.step, run.batch = run.step + 1, run.batch + 1
                images_per_s = len(labels) * layout.dp_size / (time.perf_counter() - started)
                bar.update(1)
                bar.set_postfix(loss=f"{step.loss.item():.3f}", img_s=f"{images_per_s:.1f}")
                if run.step % cfg.log_every == 0:
                    # Equal shards: the replicas' mean loss is the global batch's loss.
                    mine = torch.tensor([step.loss.item(), step.wrong], dtype=torch.float64)
                    loss, wrong = layout.mean_over_replicas(mine.to(layout.device)).tolist()
                    run.metrics.write(
                        "train", run.step, epoch=run.epoch, loss=loss,
                        top1_error=wrong / len(labels), lr=run.schedule.lr,
                        images_per_s=images_per_s,
                        exchange_bytes=run.model.exchange.bytes_received - received,
                    )  # fmt: skip
                # The epoch's last step is saved once, after validation, not twice.
                periodic = cfg.checkpoint_every and run.step % cfg.checkpoint_every == 0
                periodic = periodic and run.batch < len(run.train_loader)
                if step.stopping or run.at_step_limit or periodic:
                    run.save()
                if step.stopping:
                    log.info("stopped by signal at step %d; saved in %s", run.step, run.checkpoints)
                    return run.run_dir
                if run.at_step_limit:
                    break
            else:  # the epoch ran to its end
                _end_epoch(run)
    if layout.is_main and (run.run_dir / "metrics.jsonl").exists():
        plot_curves(run.run_dir / "metrics.jsonl", run.run_dir / "curves.png")
    run.metrics.close()
    log.info(
        "done: checkpoints %s, metrics %s, TensorBoard %s, curves %s, filters %s",
        run.checkpoints, run.run_dir / "metrics.jsonl", run.run_dir / "tensorboard",
        run.run_dir / "curves.png", run.run_dir / "filters",
    )  # fmt: skip
    return run.run_dir


def _end_epoch(run: Run) -> None:
    """Validate, let the schedule see the error, draw conv1, and save at the epoch boundary."""
    result = evaluate(run.model, run.val_loader, run.layout)
    run.schedule.step(result["top1_error"])
    run.metrics.write("val", run.step, epoch=run.epoch, lr=run.schedule.lr, **result)
    log.info(
        "epoch %d: validation top-1 error %.2f %%, top-5 error %.2f %% (%d images, %s); ε %g",
        run.epoch, 100 * result["top1_error"], 100 * result["top5_error"], result["images"],
        run.cfg.data.val_views, run.schedule.lr,
    )  # fmt: skip
    if run.cfg.filters_every_epoch:
        path = run.run_dir / "filters" / f"epoch{run.epoch:03d}.png"
        save_filters(run.model, path, run.epoch, run.layout.is_main)
    run.epoch, run.batch = run.epoch + 1, 0
    run.save()


def step_function(
    net: torch.nn.Module, optimizer: torch.optim.Optimizer, layout: Layout, name: str
) -> Callable[[torch.Tensor, torch.Tensor, bool], Step]:
    """One training step in precision `name`; every process of the run gets the same verdict."""
    dtype, autocast = precision(name)

    def run_step(images: torch.Tensor, labels: torch.Tensor, stop_requested: bool) -> Step:
        # bf16 autocast for the forward only; the loss and the update stay in the weights'
        # dtype (LRN's window sum runs in float32 under autocast, see model/lrn.py).
        with torch.autocast(layout.device.type, autocast or dtype, enabled=autocast is not None):
            logits = net(images.to(dtype))
        loss = F.cross_entropy(logits.to(dtype), labels)
        # One collective for both verdicts. No replica runs the backward (a DDP collective)
        # unless every replica's loss is finite.
        stopping, diverged = layout.any(stop_requested, not torch.isfinite(loss).item())
        if not diverged:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        wrong = int(topk_wrong(logits.detach(), labels, (1,))[0])
        return Step(loss.detach(), wrong, stopping, diverged)

    return run_step


register()


def check(cfg: TrainConfig) -> None:
    """What can be told wrong before any process starts: the data places, the precision."""
    check_data_places(cfg.data)
    precision(cfg.precision)
    print(f"checked: data {cfg.data.root or cfg.data.embedded_dir}, precision {cfg.precision}")


@hydra.main(version_base=None, config_path="pkg://split_alexnet.conf", config_name="train")
def main(cfg: TrainConfig) -> None:
    run_command(lambda: check(cfg) if cfg.check_only else train(cfg))


if __name__ == "__main__":
    main()
