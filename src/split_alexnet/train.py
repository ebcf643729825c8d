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
from pathlib import Path

import hydra
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from tqdm import tqdm

from split_alexnet.checkpoint import discard_partial, rng_state
from split_alexnet.config import OptimConfig, TrainConfig, register, variant_options
from split_alexnet.data import PairLoader
from split_alexnet.evaluation import evaluate
from split_alexnet.layers import Variant
from split_alexnet.layout import Layout, setup_layout
from split_alexnet.lrn import compile_lrn
from split_alexnet.metrics import MetricsLog, plot_curves, topk_wrong
from split_alexnet.optim import PaperSGD, param_groups
from split_alexnet.resume import latest, load_halves, load_run, save_halves, save_run
from split_alexnet.runs import TrainingDiverged, open_data, run_command, save_filters, setup_logging
from split_alexnet.schedule import FixedEpochsSchedule, PlateauSchedule, freeze_group, set_lr
from split_alexnet.split import SplitAlexNet

log = logging.getLogger("split_alexnet")
REFERENCE_BATCH = 128  # Sec. 5: the batch the paper's ε = 0.01 belongs to
# precision → (dtype of weights, velocities and input; autocast dtype of the forward or None).
# fp64 exists to compare layouts and changes exactly: float64 has no near-ties in max-pool
# windows for another CPU's rounding to flip (issue 14).
PRECISIONS: dict[str, tuple[torch.dtype, torch.dtype | None]] = {
    "fp32": (torch.float32, None),
    "fp64": (torch.float64, None),
    "bf16": (torch.float32, torch.bfloat16),
}


class StopRequest:
    """SIGTERM or Ctrl-C asks the run to save at the next step boundary and exit."""

    def __init__(self) -> None:
        self.requested = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True


def make_optimizer(model: SplitAlexNet, cfg: OptimConfig) -> torch.optim.Optimizer:
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


def make_schedule(cfg: OptimConfig) -> PlateauSchedule | FixedEpochsSchedule:
    if cfg.schedule == "plateau":
        return PlateauSchedule(cfg.lr, patience=cfg.patience, max_reductions=cfg.max_reductions)
    if cfg.schedule == "fixed":
        return FixedEpochsSchedule(cfg.lr, epochs=tuple(cfg.reduce_at))
    raise ValueError(f"optim.schedule must be plateau or fixed, not {cfg.schedule!r}")


def apply_lr(optimizer: torch.optim.Optimizer, cfg: OptimConfig, lr: float, epoch: int) -> None:
    set_lr(optimizer, lr)
    if cfg.freeze_conv1_at is not None and epoch >= cfg.freeze_conv1_at:
        # The 2012 code set conv1's ε to 0 late in training (PAPER.md, code-only details).
        freeze_group(optimizer, "conv1.weight")
        freeze_group(optimizer, "conv1.bias")


def train(cfg: TrainConfig) -> Path:
    """Run (or continue) the training `cfg` describes; returns the run directory."""
    layout = setup_layout(cfg.mode.layout)
    try:
        return _train(cfg, layout)
    finally:
        layout.close()


def _train(cfg: TrainConfig, layout: Layout) -> Path:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.compile_lrn:
        compile_lrn(True)
    run_dir = Path(str(layout.broadcast(str(Path(cfg.run_dir).resolve()))))
    setup_logging(run_dir, layout)
    if layout.is_main:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    layout.pair_batch(cfg.data.batch_size)
    dtype, _ = precision(cfg.precision)
    source, stats = open_data(cfg.data, layout, seed=cfg.seed)

    def loader(split: str, train: bool, views: str) -> PairLoader:
        return PairLoader(
            source, split, cfg.data.batch_size, train=train, views=views, stats=stats,  # type: ignore[arg-type]
            seed=cfg.seed, colour_noise=cfg.data.colour_noise, group=layout.mp_group,  # type: ignore[arg-type]
            replica=layout.dp_rank, replicas=layout.dp_size, num_workers=cfg.data.num_workers,
            checksum_every=cfg.data.checksum_every, device=layout.device,
        )  # fmt: skip

    train_loader = loader("train", True, "random")
    val_loader = loader("val", False, cfg.data.val_views)
    variant = Variant(**variant_options(cfg.model, train_loader.num_classes))
    model = layout.build(variant, cfg.seed, cfg.channels_last, dtype)
    net = layout.replicate(model)
    optim_cfg = scaled_lr(cfg.optim, cfg.data.batch_size)
    optimizer = make_optimizer(model, optim_cfg)
    schedule = make_schedule(optim_cfg)
    checkpoints = run_dir / "checkpoints"
    if layout.is_main:
        for path in discard_partial(checkpoints):  # a process killed mid-save left it
            log.info("removed the partial file %s", path)
    epoch, start_batch, step = 0, 0, 0
    previous = latest(run_dir) if cfg.resume else None
    if previous is not None:
        state = load_run(previous)
        load_halves(previous, model, optimizer, layout.device)
        schedule.load_state_dict(state["schedule"])
        epoch, start_batch, step = state["epoch"], state["batch"], state["step"]
        log.info(
            "resuming from %s: epoch %d, batch %d, step %d", previous, epoch, start_batch, step
        )
    elif cfg.init_from:
        model.load_reference_state_dict(torch.load(cfg.init_from, weights_only=True))
        log.info("initialised from the reference-layout dict %s", cfg.init_from)
    log.info(
        "%s: %d process(es), %d pair(s), device %s; %s: %d classes, %d train / %d val batches; "
        "run directory %s",
        layout.mode, layout.world, layout.dp_size, layout.device, cfg.data.name,
        train_loader.num_classes, len(train_loader), len(val_loader), run_dir,
    )  # fmt: skip

    metrics = MetricsLog(run_dir, layout.is_main)
    stop = StopRequest()

    def save(next_epoch: int, next_batch: int) -> None:
        if layout.writes_halves:
            save_halves(checkpoints, step, model, optimizer, layout.device)
        layout.barrier()
        if layout.is_main:
            state = {
                "epoch": next_epoch, "batch": next_batch, "lr": schedule.lr,
                "schedule": schedule.state_dict(), "rng": rng_state(),
                "config": OmegaConf.to_yaml(cfg), "world": layout.world,
            }  # fmt: skip
            save_run(checkpoints, step, state, cfg.keep_checkpoints, variant.halves)
        layout.barrier()

    def finished() -> bool:
        done = epoch >= cfg.epochs or (cfg.max_steps is not None and step >= cfg.max_steps)
        return done or (isinstance(schedule, FixedEpochsSchedule) and schedule.finished(epoch))

    run_step = _step_function(net, optimizer, layout, cfg.precision)
    while not finished():
        apply_lr(optimizer, cfg.optim, schedule.lr, epoch)
        train_loader.set_epoch(epoch, start_batch)
        bar = tqdm(
            total=len(train_loader), initial=start_batch, desc=f"epoch {epoch}",
            disable=not layout.is_main, unit="batch", dynamic_ncols=True,
        )  # fmt: skip
        for batch, (images, labels) in enumerate(train_loader, start=start_batch):
            started = time.perf_counter()
            bytes_before = getattr(model.exchange, "bytes_received", 0)
            loss, wrong = run_step(images, labels)
            stopping, diverged = layout.any(stop.requested, not torch.isfinite(loss).item())
            if diverged:
                raise TrainingDiverged(
                    f"loss is {loss.item()} at epoch {epoch}, step {step}: stopping; "
                    f"the last good checkpoint is {latest(run_dir) or 'none (no checkpoint yet)'}"
                )
            step += 1
            seconds = time.perf_counter() - started
            global_batch = len(labels) * layout.dp_size
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{global_batch / seconds:.1f}")
            if step % cfg.log_every == 0:
                # Equal shards: the replicas' mean loss is the global batch's loss.
                mine = torch.tensor([loss.item(), wrong], dtype=torch.float64, device=layout.device)
                mean_loss, mean_wrong = layout.mean_over_replicas(mine).tolist()
                metrics.write(
                    "train", step, epoch=epoch, loss=mean_loss, top1_error=mean_wrong / len(labels),
                    lr=schedule.lr, images_per_s=global_batch / seconds,
                    exchange_bytes=getattr(model.exchange, "bytes_received", 0) - bytes_before,
                )  # fmt: skip
            limit = cfg.max_steps is not None and step >= cfg.max_steps
            periodic = cfg.checkpoint_every and step % cfg.checkpoint_every == 0
            if stopping or limit or periodic:
                save(epoch, batch + 1)
            if stopping:
                bar.close()
                log.info("stopped by signal at step %d; checkpoint saved in %s", step, checkpoints)
                return run_dir
            if limit:
                break
        bar.close()
        if cfg.max_steps is not None and step >= cfg.max_steps:
            break
        result = evaluate(model, val_loader, layout)
        schedule.step(result["top1_error"])
        metrics.write("val", step, epoch=epoch, lr=schedule.lr, **result)
        log.info(
            "epoch %d: validation top-1 error %.2f %%, top-5 error %.2f %% (%d images, %s); ε %g",
            epoch, 100 * result["top1_error"], 100 * result["top5_error"], result["images"],
            cfg.data.val_views, schedule.lr,
        )  # fmt: skip
        if cfg.filters_every_epoch:
            save_filters(model, run_dir / "filters" / f"epoch{epoch:03d}.png", epoch, layout)
        epoch, start_batch = epoch + 1, 0
        save(epoch, 0)
    if layout.is_main and (run_dir / "metrics.jsonl").exists():
        plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")
    metrics.close()
    log.info(
        "done: checkpoints %s, metrics %s, TensorBoard %s, curves %s, filters %s",
        checkpoints, run_dir / "metrics.jsonl", run_dir / "tensorboard",
        run_dir / "curves.png", run_dir / "filters",
    )  # fmt: skip
    return run_dir


def precision(name: str) -> tuple[torch.dtype, torch.dtype | None]:
    """The weights' dtype and the forward's autocast dtype (None: no autocast) of `name`."""
    if name not in PRECISIONS:
        raise ValueError(f"precision must be {', '.join(PRECISIONS)}, not {name!r}")
    return PRECISIONS[name]


def _step_function(
    net: torch.nn.Module, optimizer: torch.optim.Optimizer, layout: Layout, name: str
) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, int]]:
    dtype, autocast = precision(name)

    def run_step(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
        # bf16 autocast for the forward only; the loss and the update stay in the weights'
        # dtype (LRN's window sum runs in float32 under autocast, see lrn.py).
        images = images.to(dtype)
        with torch.autocast(layout.device.type, autocast or dtype, enabled=autocast is not None):
            logits = net(images)
        loss = F.cross_entropy(logits.to(dtype), labels)
        if layout.all_finite(loss):
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        wrong = int(topk_wrong(logits.detach(), labels, (1,))[0])
        return loss.detach(), wrong

    return run_step


register()


@hydra.main(version_base=None, config_path="pkg://split_alexnet.conf", config_name="train")
def main(cfg: TrainConfig) -> None:
    run_command(lambda: train(cfg))


if __name__ == "__main__":
    main()
