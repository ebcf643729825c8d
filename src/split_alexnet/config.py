"""The schema of every run: Hydra merges conf/*.yaml into these, so a typo fails at start-up.

Defaults are the paper's numbers (shared/PAPER.md); conf/ groups select the
data set, the network variant, the optimiser preset and the process layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, make_dataclass
from typing import Any, get_type_hints

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from split_alexnet.model.table import Variant


@dataclass
class DataConfig:
    name: str = "embedded"
    # None: the embedded photo set, built on first use under `embedded_dir`.
    root: str | None = None
    embedded_dir: str = "${oc.env:SPLIT_ALEXNET_CACHE,.cache/split_alexnet}/embedded"
    # Read the uint8 cache that split-alexnet-preprocess writes (written on first use).
    use_cache: bool = True
    # Where the cache and the mean/PCA go; None: <root>/cache-256, beside the images.
    # Set it when the data root is read-only (an ImageNet mount).
    cache_dir: str | None = None
    batch_size: int = 128  # Sec. 5; the global batch over all data-parallel replicas
    num_workers: int = 0
    colour_noise: str = "paper"  # paper | code (÷1.1, convdata.py) | off
    val_views: str = "center"  # center | ten (Sec. 4.1: four corners, centre, reflections)
    stats_subset: int | None = None  # images for the mean/PCA; None: the whole train split
    checksum_every: int = 50  # steps between checks that both halves hold the same batch
    # R = G = B = luminance in every input pixel: the Figure 3 control no kernel can
    # find colour in (data/scaled.py). Not the paper's input.
    grey: bool = False


# The `model` group's schema is Variant's fields, types and defaults, except that
# num_classes None is the data set's count, made even (variant_options). image_size is
# Sec. 4.1's 224 unless the scaled Figure 3 experiment asks for 112 (data/scaled.py).
# OmegaConf checks the choices against Variant's Enums, so a misspelt option fails at
# start-up.
_VARIANT_TYPES = get_type_hints(Variant)
ModelConfig = make_dataclass(
    "ModelConfig",
    [
        (f.name, _VARIANT_TYPES[f.name], f.default)
        for f in fields(Variant)
        if f.name != "num_classes"
    ]
    + [("num_classes", int | None, None)],
    namespace={"__module__": __name__, "__doc__": "Variant's fields as conf/model/ sets them."},
)


@dataclass
class GroupLrConfig:
    """From `epoch` on, the parameter group `group` trains with ε `lr` (schedule.set_lr)."""

    epoch: int = MISSING
    group: str = MISSING  # optim.preset code2012: weights | biases | conv1.weight | conv1.bias
    lr: float = MISSING


@dataclass
class OptimConfig:
    name: str = "paper"  # paper (ε inside the velocity, weights.cu) | torch_sgd
    preset: str = "paper"  # paper | code2012 (bias ε ×2, no bias decay, conv1 group)
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0005
    schedule: str = "plateau"  # plateau (Sec. 5) | fixed (the 2012 log's epochs)
    patience: int = 2  # epochs without a lower validation error before ε ÷ 10
    max_reductions: int = 3
    reduce_at: list[int] = field(default_factory=lambda: [25, 51, 79])
    # The 2012 log's hand-made changes (conf/optim/code2012.yaml): single groups' ε, each held
    # from its epoch on whatever the schedule does, and colour noise off from an epoch on.
    group_lr: list[GroupLrConfig] = field(default_factory=list)
    colour_noise_off_at: int | None = None
    scale_lr_with_batch: bool = False  # linear scaling: ε·data.batch_size/128 (Goyal et al. 2017)


@dataclass
class ModeConfig:
    layout: str = "auto"  # auto (a pair under torchrun, else emulate) | distributed | emulate


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    mode: ModeConfig = field(default_factory=ModeConfig)
    seed: int = 0
    epochs: int = 90  # Sec. 5: "roughly 90 cycles"
    max_steps: int | None = None  # stop (with a checkpoint) after this many steps in all
    run_dir: str = "runs/${now:%Y%m%d-%H%M%S}"
    resume: bool = True  # continue from run_dir's last checkpoint if it has one
    init_from: str | None = None  # a reference-layout state dict to start from
    checkpoint_every: int = 0  # steps between mid-epoch checkpoints; 0: at epoch ends only
    keep_checkpoints: int = 3
    # Steps between looks at the device (log line, stop and divergence checks): each look
    # waits for the GPU once; the steps between run without a host sync (issue 12).
    log_every: int = 1
    filters_every_epoch: bool = True
    # Steps between Figure 3's numbers on conv1 (S, the chromatic index per half, growth
    # and angle from the initial weights, on W and ΔW) in metrics and TensorBoard; 0: never.
    conv1_every: int = 0
    threads: int | None = None  # torch intra-op threads per process; None: torch's default
    # fp32 | fp64 (exact layout comparisons) | bf16 (autocast of the forward, for GPUs)
    precision: str = "fp32"
    # NHWC weights and activations: oneDNN's brg convolutions without the 34 reorders a
    # step NCHW pays, 0.86–0.93 of the NCHW step on CPU (issue 15, docs/performance.md);
    # the layout cuDNN's tensor cores want. Checkpoints load in either layout.
    channels_last: bool = True
    # Seconds any collective may wait for a peer before the run stops with an error;
    # None: torch's default (10 min NCCL, 30 min gloo). Data preparation waits longer.
    collective_timeout_s: float | None = None
    compile_lrn: bool = False  # torch.compile LRN's kernels: a one-off compile, then ~4x faster
    # conv1's and conv2's ReLU + LRN + max-pool as one C++ kernel on the CPU: built once
    # (~10 s), 2-3x faster than the stages apart, a byte per pooled value kept instead of
    # LRN's three maps and max-pool's indices (model/lrn_pool.py, docs/performance.md).
    fuse_lrn_pool: bool = True
    # The loader's CPU work in one pass: training's random views as one C++ kernel (cut,
    # reflect, float, mean, colour), other views' float passes torch.compile'd into one
    # loop; bit-identical, ~1.4x the compiled loop's images/s (docs/data.md); nothing on a GPU.
    compile_data: bool = False
    cudnn_benchmark: bool = True  # let cuDNN time its convolution algorithms once per shape
    # Only compose the config and check the data places, then exit 0 (or 2 with one line).
    # The launchers run this before torchrun, which would retry a deterministic error.
    check_only: bool = False


@dataclass
class EvaluateConfig:
    mode: ModeConfig = field(default_factory=ModeConfig)
    checkpoint: str = MISSING  # a run directory (its newest checkpoint) or a run-step*.pt file
    views: str = "center"  # center | ten (Sec. 4.1: four corners, centre, reflections)
    # The data set is the one the run trained on (its saved config); data_root moves it.
    data_root: str | None = None
    batch_size: int = 128
    out: str | None = None  # JSON with the errors; None: beside the checkpoint


@dataclass
class ExportConfig:
    checkpoint: str = MISSING  # a run directory (its newest checkpoint) or a run-step*.pt file
    out: str = MISSING  # the reference-layout state dict (Caffe's blob layout), torch.save'd


def register() -> None:
    """Make the schemas available to the defaults lists of conf/*.yaml."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    store.store(name="evaluate_schema", node=EvaluateConfig)
    store.store(name="export_schema", node=ExportConfig)


def variant_options(model: Any, num_classes: int) -> dict[str, Any]:
    """Variant keyword options from a ModelConfig, with the data set's class count."""
    options = {key: getattr(model, key) for key in ModelConfig.__dataclass_fields__}
    if options["num_classes"] is None:
        # Two halves of fc8 need an even count; a spare logit is never a target.
        odd = num_classes % 2 == 1 and not model.one_gpu
        options["num_classes"] = num_classes + 1 if odd else num_classes
    return options
