"""Figure 3's protocol on one GPU (issue 16): grouped and ungrouped twins in one loop.

    python launch/figure3_one_gpu.py --minutes 4.5 --out runs/figure3-gpu      # ~10 min
    python launch/figure3_one_gpu.py --grey --out runs/figure3-gpu-grey          # the control
    python launch/figure3_one_gpu.py --device cpu --minutes 0.2 --every 2        # a CPU look

The paper's network at its 224 pixels (or --image-size 112) and its ungrouped twin
(conv2/4/5 read both halves) start from the same weights of the same seed and
train on the same batches, one step of each in turn, each until it has used its
--minutes of compute. The batches come from the uint8 cache with their crops,
reflections and colour noise made on the device (data/loader.py), and ε is held
constant (no plateau cuts: issue 16). Every --every steps each twin's conv1 is
measured (S, CI per half, growth and angle from W₀, on W and ΔW) into its run
folder's metrics.jsonl and TensorBoard, and its weights are saved (conv1-stepNNNNNN.pt). At the
end: the Figure 3 tool's permutation test on both, the protocol's table and its
S-against-steps plot (analysis/protocol.py).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from split_alexnet.analysis import conv1_diagnostics, figure3, initial_conv1
from split_alexnet.analysis.protocol import report
from split_alexnet.config import TrainConfig
from split_alexnet.model.table import Variant
from split_alexnet.parallel.layout import Layout
from split_alexnet.train import step_function
from split_alexnet.training.metrics import MetricsLog
from split_alexnet.training.plots import conv1_kernels
from split_alexnet.training.run import make_loader, make_optimizer, open_data

TWINS = {"paper": "paper", "ungrouped": "always"}  # run name → model.connectivity


class Twin:
    """One network of the pair, its optimiser, its clock and its records."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, layout: Layout, classes: int) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
        self.run_dir, self.layout = run_dir, layout
        self.variant = Variant(
            connectivity=cfg.model.connectivity, image_size=cfg.model.image_size,
            num_classes=classes + classes % 2,
        )  # fmt: skip
        self.model = layout.build(self.variant, cfg.seed)
        self.step = step_function(
            self.model, make_optimizer(self.model, cfg.optim), layout, cfg.precision
        )
        self.initial = torch.from_numpy(initial_conv1(self.variant, cfg.seed)).chunk(2)
        self.metrics = MetricsLog(run_dir, True)
        self.steps, self.seconds = 0, 0.0

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        start = time.perf_counter()
        self.step(images, labels)
        if self.layout.device.type == "cuda":
            # Each twin's clock holds its own kernels only: the two share one stream.
            torch.cuda.synchronize()
        self.steps += 1
        self.seconds += time.perf_counter() - start

    def record(self) -> None:
        """Figure 3's numbers and the weights now."""
        kernels = conv1_kernels(self.model)
        numbers = conv1_diagnostics(kernels.chunk(2), self.initial)
        self.metrics.write("conv1", self.steps, seconds=self.seconds, **numbers)
        # A state dict of conv1 alone: what the Figure 3 tool reads (analysis/kernels.py).
        torch.save({"conv1.weight": kernels.double()}, self.conv1_file(self.steps))

    def conv1_file(self, step: int) -> Path:
        return self.run_dir / f"conv1-step{step:06d}.pt"


def config(args: argparse.Namespace, connectivity: str) -> TrainConfig:
    cfg = OmegaConf.structured(TrainConfig)
    cfg.merge_with({
        "seed": args.seed, "conv1_every": args.every,
        "model": {"connectivity": connectivity, "image_size": args.image_size},
        "data": {"name": args.data, "root": args.root, "batch_size": args.batch,
                 "grey": args.grey, "num_workers": args.workers,
                 "embedded_dir": str(Path(args.cache) / args.data)},
        "optim": {"lr": args.lr, "schedule": "fixed", "reduce_at": []},
    })  # fmt: skip
    return cfg  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=4.5, help="compute per twin")
    parser.add_argument("--every", type=int, default=500, help="steps between records")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.01, help="constant ε (Sec. 5's at 128)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--data", default="photos_grey", help="an embedded set (data/photos.py)")
    parser.add_argument("--grey", action="store_true", help="R = G = B input: the null control")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--root", default=None, help="an ImageNet-layout folder instead")
    parser.add_argument("--workers", type=int, default=4 if torch.cuda.is_available() else 0)
    parser.add_argument("--cache", default=".cache/split_alexnet")
    parser.add_argument("--out", type=Path, default=Path("runs/figure3-one-gpu"))
    args = parser.parse_args()
    layout = Layout("emulate", torch.device(args.device))
    if layout.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    configs = {name: config(args, c) for name, c in TWINS.items()}
    data = configs["paper"].data
    source, stats = open_data(data, layout, seed=args.seed)
    loader = make_loader(
        data, source, stats, layout, args.seed, split="train", batch_size=args.batch,
        views="random", image_size=args.image_size,
    )  # fmt: skip
    suffix = "-grey" if args.grey else ""
    twins = {
        name: Twin(cfg, args.out / f"{name}{suffix}-seed{args.seed}", layout, loader.num_classes)
        for name, cfg in configs.items()
    }
    for twin in twins.values():
        twin.record()  # step 0: W₀, the null
    budget, epoch = 60 * args.minutes, 0
    while any(t.seconds < budget for t in twins.values()):
        loader.set_epoch(epoch)
        for images, labels in loader:
            for twin in twins.values():
                if twin.seconds < budget:
                    twin.train_step(images, labels)
                    if twin.steps % args.every == 0:
                        twin.record()
            if all(t.seconds >= budget for t in twins.values()):
                break
        epoch += 1
    for name, twin in twins.items():
        if twin.steps % args.every:
            twin.record()
        twin.metrics.close()
        print(f"{name}: {twin.steps} steps in {twin.seconds:.0f} s of compute")
    paper, ungrouped = (twins[name] for name in TWINS)
    figure3.figure3(
        figure3.Figure3Config(
            checkpoints=[str(paper.conv1_file(paper.steps))],
            controls=[str(ungrouped.conv1_file(ungrouped.steps))],
            initial=[str(paper.conv1_file(0))],
            out_dir=str(args.out / f"figure3{suffix}-seed{args.seed}"),
        )
    )
    print(report(args.out))


if __name__ == "__main__":
    main()
