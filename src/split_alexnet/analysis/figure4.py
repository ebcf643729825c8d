"""Figure 4: images whose fc7 activations are close, and how often the nearest shares the class.

    split-alexnet-figure4 checkpoint=run/final.pt train_dir=data/train query_dir=data/val

Both folders are ImageNet-layout (<dir>/<class>/<image>). Every image's
4096-d fc7 output (the last hidden layer, eval mode) is computed; each query
retrieves the `neighbours` nearest gallery (train_dir) images by Euclidean
distance (never itself, if query_dir is train_dir). Writes into out_dir
figure4.json (agreement and every query's neighbours) and neighbours.png (the
first `shown` queries, each followed by its neighbours). Defaults:
conf/figure4.yaml.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import hydra
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from split_alexnet.analysis import images
from split_alexnet.analysis.kernels import load_reference_state
from split_alexnet.analysis.neighbours import nearest, nearest_class_agreement
from split_alexnet.cli import run_command
from split_alexnet.data.scaled import scaled_input
from split_alexnet.model.reference_dict import variant_of_shapes
from split_alexnet.model.split import SplitAlexNet


@dataclass
class Figure4Config:
    checkpoint: str = MISSING
    train_dir: str = MISSING
    query_dir: str = MISSING
    # Per-channel (R, G, B) mean to subtract; None: the per-pixel mean image of train_dir.
    mean: list[float] | None = None
    neighbours: int = 6
    shown: int = 8
    batch_size: int = 16
    out_dir: str = "figure4"


ConfigStore.instance().store(name="figure4_schema", node=Figure4Config)


@torch.no_grad()
def fc7_features(
    model: SplitAlexNet, paths: Sequence[Path], mean: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """(N, 4096) fc7 activations of the centre crops of `paths`, model in eval mode, at the
    network's input size (the scaled experiment's net reads them 2×2-averaged, as in training)."""
    model.eval()
    size = model.variant.image_size
    return torch.cat(
        [
            model.activations(scaled_input(b - mean, size), "fc7")
            for b in images.batches(paths, batch_size)
        ]
    )


def _save_grid(
    queries: Sequence[tuple[Path, str]],
    gallery: Sequence[tuple[Path, str]],
    indices: torch.Tensor,
    distances: torch.Tensor,
    path: Path,
) -> None:
    rows, cols = len(queries), 1 + indices.shape[1]
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows), squeeze=False)
    for r, (query, label) in enumerate(queries):
        cells = [(query, f"query\n{label}", "black")]
        for i, d in zip(indices[r].tolist(), distances[r].tolist(), strict=True):
            g_path, g_label = gallery[i]
            cells.append((g_path, f"{g_label}\nd={d:.3g}", "green" if g_label == label else "red"))
        for ax, (image, text, colour) in zip(axes[r], cells, strict=False):
            ax.imshow(images.centre_crop(image).permute(1, 2, 0).numpy())
            ax.set_title(text, fontsize=7, color=colour)
        for ax in axes[r]:
            ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def figure4(cfg: Figure4Config) -> dict[str, object]:
    """Extract fc7 for both folders, retrieve neighbours, write figure4.json and neighbours.png."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = load_reference_state(cfg.checkpoint)
    model = SplitAlexNet.emulated(variant_of_shapes(state))
    model.load_reference_state_dict(state)
    gallery = images.image_folder(cfg.train_dir)
    queries = images.image_folder(cfg.query_dir)
    g_paths = [p for p, _ in gallery]
    if cfg.mean is None:
        mean = images.mean_image(g_paths, cfg.batch_size)
    else:
        mean = torch.tensor(cfg.mean, dtype=torch.float32).view(3, 1, 1)
    g_features = fc7_features(model, g_paths, mean, cfg.batch_size)
    q_features = fc7_features(model, [p for p, _ in queries], mean, cfg.batch_size)
    row = {p.resolve(): i for i, p in enumerate(g_paths)}
    exclude = [row.get(p.resolve()) for p, _ in queries]
    indices, distances = nearest(q_features, g_features, cfg.neighbours, exclude)
    classes = sorted({c for _, c in gallery} | {c for _, c in queries})
    agreement = nearest_class_agreement(
        indices, [classes.index(c) for _, c in queries], [classes.index(c) for _, c in gallery]
    )
    result = {
        "config": OmegaConf.to_container(OmegaConf.structured(cfg)),
        "gallery_images": len(gallery),
        "query_images": len(queries),
        "nearest_shares_class": agreement,
        "queries": [
            {
                "path": str(q_path),
                "class": q_class,
                "neighbours": [
                    {"path": str(gallery[i][0]), "class": gallery[i][1], "distance": d}
                    for i, d in zip(indices[q].tolist(), distances[q].tolist(), strict=True)
                ],
            }
            for q, (q_path, q_class) in enumerate(queries)
        ],
    }
    shown = min(cfg.shown, len(queries))
    _save_grid(queries[:shown], gallery, indices[:shown], distances[:shown], out / "neighbours.png")
    (out / "figure4.json").write_text(json.dumps(result, indent=1))
    return result


@hydra.main(version_base=None, config_path="pkg://split_alexnet.conf", config_name="figure4")
def main(cfg: Figure4Config) -> None:
    run_command(lambda: _report(figure4(OmegaConf.to_object(cfg)), cfg))


def _report(result: dict, cfg: Figure4Config) -> None:
    print(
        f"nearest neighbour shares the query's class for {result['nearest_shares_class']:.1%} "
        f"of {result['query_images']} queries ({result['gallery_images']} gallery images)"
    )
    print(f"wrote {Path(cfg.out_dir).resolve() / 'figure4.json'}")


if __name__ == "__main__":
    main()
