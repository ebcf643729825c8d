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
from dataclasses import asdict, dataclass
from pathlib import Path

import hydra
import torch
import torch.nn.functional as F
from tqdm import tqdm

from split_alexnet.analysis import conv1_diagnostics, initial_conv1
from split_alexnet.cli import run_command
from split_alexnet.config import TrainConfig, register
from split_alexnet.parallel.layout import Layout, peer_lost, setup_layout
from split_alexnet.training.checkpoint import latest
from split_alexnet.training.evaluation import evaluate
from split_alexnet.training.metrics import topk_wrong
from split_alexnet.training.plots import conv1_kernels, plot_curves, save_filters
from split_alexnet.training.run import (
    PeerLost,
    Run,
    TrainingDiverged,
    check_data_places,
    precision,
    start,
)

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
class Look:
    """What the processes agree on when the loop looks at the device."""

    stopping: bool  # some process was asked to stop: all save and stop at this step
    diverged: bool  # some replica's loss was not finite since the last look
    # For the log, of the last step: the mean over the replicas' equal shards.
    loss: float
    top1_error: float
    # Over the steps since the last look.
    images_per_s: float
    exchange_bytes: int  # per step, received from the other half

    def logged(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if k not in ("stopping", "diverged")}


class Watch:
    """What the steps since the last look say, kept on the device until the loop looks.

    Reading a value back from a GPU waits for every kernel queued before it, so
    the loop looks once per log_every steps and before every save (issue 12): one
    collective and one wait carry the stop request, the non-finite losses, the
    pair's batch checks and the numbers the log shows.
    """

    def __init__(self, run: Run) -> None:
        self.layout, self.loader, self.exchange = run.layout, run.train_loader, run.model.exchange
        self.not_finite = torch.zeros((), dtype=torch.int64, device=run.layout.device)
        self.begin(run.step)

    def begin(self, step: int) -> None:
        """Start a window of steps at `step`."""
        self.step, self.since = step, time.perf_counter()
        self.received = self.exchange.bytes_received

    def add(self, loss: torch.Tensor) -> None:
        self.not_finite += ~torch.isfinite(loss)

    def look(
        self, step: int, stop_requested: bool, loss: torch.Tensor, logits: torch.Tensor,
        labels: torch.Tensor,
    ) -> Look:  # fmt: skip
        wrong = topk_wrong(logits, labels, (1,))[0]
        stop = self.not_finite.new_full((), int(stop_requested))
        flags = self.layout.any(torch.stack([stop, self.not_finite, self.loader.first_mismatch]))
        shown = self.layout.mean_over_replicas(torch.stack([loss, wrong]).to(torch.float64))
        stopping, diverged, mismatch, loss_mean, wrong_mean = torch.cat([flags, shown]).tolist()
        if mismatch >= 0:
            self.loader.check_pair()
        self.not_finite.zero_()
        steps, seconds = step - self.step, time.perf_counter() - self.since
        look = Look(
            bool(stopping), bool(diverged), loss_mean, wrong_mean / len(labels),
            steps * len(labels) * self.layout.dp_size / seconds,
            (self.exchange.bytes_received - self.received) // steps,
        )  # fmt: skip
        self.begin(step)
        return look


def train(cfg: TrainConfig) -> Path:
    """Run (or continue) the training `cfg` describes; returns the run directory."""
    check_data_places(cfg.data)
    layout = setup_layout(cfg.mode.layout, cfg.collective_timeout_s)
    run = None
    try:
        run = start(cfg, layout)
        return _train(run)
    except RuntimeError as error:
        if not peer_lost(error):
            raise
        raise PeerLost(_lost(run, layout, error)) from None
    finally:
        if run is not None:
            run.metrics.close()  # what was logged reaches metrics.jsonl and TensorBoard
        layout.close()


def _lost(run: Run | None, layout: Layout, error: RuntimeError) -> str:
    """The one line a process says when a collective gave up on the others."""
    where = "while starting" if run is None else f"at epoch {run.epoch}, step {run.step}"
    kept = latest(run.run_dir) if run is not None else None
    return (
        f"rank {layout.rank}: a collective gave up on the other processes {where} (one died, "
        f"hangs past collective_timeout_s, or cannot be reached: {str(error).splitlines()[0]}); "
        f"started again with the same run_dir, the run continues from "
        f"{kept or 'its start (no checkpoint yet)'}"
    )


def _train(run: Run) -> Path:
    cfg, layout = run.cfg, run.layout
    stop = StopRequest()
    run_step = step_function(run.net, run.optimizer, layout, cfg.precision)
    # W₀ is a function of the seed (or init_from): a resumed run has it too.
    initial = (
        torch.from_numpy(initial_conv1(run.model.variant, cfg.seed, cfg.init_from)).chunk(2)
        if cfg.conv1_every
        else ()
    )
    if cfg.conv1_every and run.step == 0:
        _record_conv1(run, initial)  # step 0: every curve starts from S(W₀), the null
    watch = Watch(run)
    while not run.finished():
        run.apply_lr()
        run.train_loader.set_epoch(run.epoch, run.batch)
        with tqdm(
            total=len(run.train_loader), initial=run.batch, desc=f"epoch {run.epoch}",
            disable=not layout.is_main, unit="batch", dynamic_ncols=True,
        ) as bar:  # fmt: skip
            watch.begin(run.step)
            for images, labels in run.train_loader:
                loss, logits = run_step(images, labels)
                watch.add(loss)
                run.step, run.batch = run.step + 1, run.batch + 1
                bar.update(1)
                # The epoch's last step is saved once, after validation, not twice.
                end_of_epoch = run.batch == len(run.train_loader)
                periodic = cfg.checkpoint_every and run.step % cfg.checkpoint_every == 0
                save = run.at_step_limit or (periodic and not end_of_epoch)
                logging_step = run.step % cfg.log_every == 0
                conv1_step = cfg.conv1_every and run.step % cfg.conv1_every == 0
                if not (logging_step or save or end_of_epoch or conv1_step):
                    continue
                since = watch.step
                look = watch.look(run.step, stop.requested, loss, logits, labels)
                if look.diverged:
                    raise TrainingDiverged(
                        f"loss is {look.loss} at epoch {run.epoch}, step {run.step} (not finite "
                        f"since step {since + 1} or later): stopping; the last good "
                        f"checkpoint is {latest(run.run_dir) or 'none (no checkpoint yet)'}"
                    )
                bar.set_postfix(loss=f"{look.loss:.3f}", img_s=f"{look.images_per_s:.1f}")
                if logging_step:
                    run.metrics.write(
                        "train", run.step, epoch=run.epoch, lr=run.schedule.lr, **look.logged()
                    )
                if conv1_step:
                    _record_conv1(run, initial)
                if look.stopping or save:
                    run.save()
                if look.stopping:
                    log.info("stopped by signal at step %d; saved in %s", run.step, run.checkpoints)
                    return run.run_dir
                if run.at_step_limit:
                    break
            else:  # the epoch ran to its end
                _end_epoch(run)
    if layout.is_main and (run.run_dir / "metrics.jsonl").exists():
        plot_curves(run.run_dir / "metrics.jsonl", run.run_dir / "curves.png")
    log.info(
        "done: checkpoints %s, metrics %s, TensorBoard %s, curves %s, filters %s",
        run.checkpoints, run.run_dir / "metrics.jsonl", run.run_dir / "tensorboard",
        run.run_dir / "curves.png", run.run_dir / "filters",
    )  # fmt: skip
    return run.run_dir


def _record_conv1(run: Run, initial: tuple[torch.Tensor, ...]) -> None:
    """Figure 3's numbers on conv1 now, against its halves `initial` as the run started
    (issue 16). Every process calls this: gathering conv1 is a collective in a pair."""
    if run.model.variant.halves != 2:
        return  # the one-GPU net has no halves to compare
    numbers = conv1_diagnostics(conv1_kernels(run.model).chunk(2), initial)
    run.metrics.write("conv1", run.step, epoch=run.epoch, **numbers)


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
) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """One training step in precision `name`: its loss and logits, left on the device.

    Nothing here waits for the device. A non-finite loss is found at the loop's
    next look (`Watch`), before any checkpoint could keep what it did.
    """
    dtype, autocast = precision(name)

    def run_step(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # bf16 autocast for the forward only; the loss and the update stay in the weights'
        # dtype (LRN's window sum runs in float32 under autocast, see model/lrn.py).
        with torch.autocast(layout.device.type, autocast or dtype, enabled=autocast is not None):
            logits = net(images.to(dtype))
        loss = F.cross_entropy(logits.to(dtype), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach(), logits.detach()

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
