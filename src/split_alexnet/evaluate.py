"""Top-1 and top-5 error of a checkpoint on its data set's validation split.

    python -m split_alexnet.evaluate checkpoint=runs/r1 views=ten        # both halves here
    torchrun --standalone --nproc_per_node=2 -m split_alexnet.evaluate checkpoint=runs/r1

Under torchrun each process holds one half (mode=auto picks the pair, as train
does); the main process alone writes the result: the errors, which set they are
on (the paper's Table 1 is ILSVRC-2010's test set, Table 2 ILSVRC-2012's
validation set; class folders say "folder"), and each class's errors under its
WordNet id and name. It prints the classes with the highest top-1 error.

The data set, its mean and colour statistics are the run's own (its saved
config); data_root points at the same data set elsewhere.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import OmegaConf

from split_alexnet.cli import run_command
from split_alexnet.config import DataConfig, EvaluateConfig, register
from split_alexnet.data import PairLoader
from split_alexnet.parallel.layout import setup_layout
from split_alexnet.training.checkpoint import load_halves, load_run, resolve, variant_of
from split_alexnet.training.evaluation import evaluate
from split_alexnet.training.run import make_loader, open_data

log = logging.getLogger("split_alexnet")


def by_class(loader: PairLoader, counts: list[list[int]]) -> list[dict]:
    """Each class's errors under its folder name (the WordNet id) and human name."""
    names = loader.source.names or (None,) * loader.num_classes
    rows = zip(loader.classes, names, counts, strict=True)
    return [
        {"class": wnid, "name": name, "images": seen,
         "top1_error": wrong1 / seen if seen else None,
         "top5_error": wrong5 / seen if seen else None}
        for wnid, name, (wrong1, wrong5, seen) in rows
    ]  # fmt: skip


def hardest(per_class: list[dict], shown: int = 5) -> str:
    """The classes with the highest top-1 error, one a line."""
    seen = sorted((c for c in per_class if c["images"]), key=lambda c: -c["top1_error"])
    lines = [
        f"  {c['class']}" + (f" ({c['name']})" if c["name"] else "")
        + f": top-1 error {100 * c['top1_error']:.1f} % of {c['images']}"
        for c in seen[:shown]
    ]  # fmt: skip
    return "\n".join([f"the {len(lines)} classes with the highest top-1 error:", *lines])


def evaluate_checkpoint(cfg: EvaluateConfig) -> dict[str, Any]:
    run_path = resolve(Path(cfg.checkpoint))
    run_state = load_run(run_path)
    run_config = OmegaConf.create(run_state["config"])
    trained = OmegaConf.merge(OmegaConf.structured(DataConfig), run_config.data)
    if cfg.data_root is not None:
        trained.root = cfg.data_root
    seed = int(run_config.seed)
    layout = setup_layout(cfg.mode.layout)
    try:
        if layout.is_main:
            logging.basicConfig(level=logging.INFO, format="%(message)s")
        model = layout.build(variant_of(run_path), seed)
        load_halves(run_path, model, None)
        source, stats = open_data(trained, layout, seed)  # type: ignore[arg-type]
        loader = make_loader(
            trained, source, stats, layout, seed,  # type: ignore[arg-type]
            split="val", batch_size=cfg.batch_size, views=cfg.views,
            image_size=model.variant.image_size,
        )  # fmt: skip
        result = evaluate(model, loader, layout, by_class=True)
        result = {
            **result, "views": cfg.views, "step": run_state["step"], "processes": layout.world,
            "set": loader.source.set_name, "per_class": by_class(loader, result["per_class"]),
        }  # fmt: skip
        if layout.is_main:
            out = (
                Path(cfg.out)
                if cfg.out
                else run_path.with_name(f"eval-step{run_state['step']:08d}-{cfg.views}.json")
            )
            out.write_text(json.dumps({**result, "checkpoint": str(run_path)}, indent=2) + "\n")
            log.info(
                "%s: top-1 error %.2f %%, top-5 error %.2f %% over %d images of %s (%s); "
                "written to %s", run_path, 100 * result["top1_error"], 100 * result["top5_error"],
                result["images"], result["set"], cfg.views, out,
            )  # fmt: skip
            log.info("%s", hardest(result["per_class"]))
        return result
    finally:
        layout.close()


register()


@hydra.main(version_base=None, config_path="pkg://split_alexnet.conf", config_name="evaluate")
def main(cfg: EvaluateConfig) -> None:
    run_command(lambda: evaluate_checkpoint(cfg))


if __name__ == "__main__":
    main()
