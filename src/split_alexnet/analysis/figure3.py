"""Figure 3: are one half's conv1 kernels grey and the other's coloured?

    split-alexnet-figure3 'checkpoints=[seed0.pt,seed1.pt]' 'controls=[ctrl0.pt]' out_dir=fig3
    split-alexnet-figure3 'checkpoints=[tests/data/caffenet_conv1_rendered.npy]'
    split-alexnet-figure3 'epochs=[run/epoch01.pt,run/epoch02.pt,...]' 'std=[58.4,57.1,57.4]'

checkpoints: the grouped model, one file per seed; controls: the ungrouped
variant (connectivity="always"), one per seed; epochs: one run's checkpoints
in epoch order. Files are read by `kernels.load_conv1`. Writes into out_dir
figure3.json (every number), per checkpoint <group>/<name>/{kernels,luminance,
chromatic,ci_by_half,ci_vs_frequency}.png, and separation_by_seed.png,
random_splits.png, epochs.png where they apply. Defaults: conf/figure3.yaml.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import numpy as np
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from split_alexnet.analysis import pictures
from split_alexnet.analysis.colour import (
    HalfComparison,
    chromatic_index,
    compare_halves,
    frequency_centroid,
    separation_null,
)
from split_alexnet.analysis.kernels import load_conv1, to_pixel_units
from split_alexnet.cli import run_command
from split_alexnet.training import plots

log = logging.getLogger(__name__)


@dataclass
class Figure3Config:
    checkpoints: list[str] = field(default_factory=list)
    controls: list[str] = field(default_factory=list)
    epochs: list[str] = field(default_factory=list)
    # Per-channel (R, G, B) std the net's input was divided by; None: pixel units already.
    std: list[float] | None = None
    per_kernel_scale: bool = False
    permutations: int = 10_000
    seed: int = 0
    out_dir: str = "figure3"


ConfigStore.instance().store(name="figure3_schema", node=Figure3Config)


def _names(paths: list[str]) -> list[str]:
    stems = [Path(p).stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    return [f"{i:02d}_{s}" for i, s in enumerate(stems)]


def _measure(path: str, cfg: Figure3Config) -> tuple[np.ndarray, np.ndarray, HalfComparison]:
    kernels = to_pixel_units(load_conv1(path), cfg.std)
    ci = chromatic_index(kernels)
    return kernels, ci, compare_halves(ci, cfg.permutations, cfg.seed)


def _draw(
    kernels: np.ndarray,
    ci: np.ndarray,
    stats: HalfComparison,
    title: str,
    out: Path,
    per_kernel: bool,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    scale = "per-kernel symmetric scale" if per_kernel else "one min–max for all"
    grid = plots.kernel_grid(plots.scaled(kernels, per_kernel))
    plots.save_kernel_figure(grid, f"{title}: conv1 ({scale})", out / "kernels.png")
    for part, rgb in zip(
        ("luminance", "chromatic"), pictures.scaled_parts(kernels, per_kernel), strict=True
    ):
        plots.save_kernel_figure(
            plots.kernel_grid(rgb), f"{title}: {part} part only", out / f"{part}.png"
        )
    pictures.save_ci_by_half(ci, stats, title, out / "ci_by_half.png")
    pictures.save_ci_vs_frequency(
        ci, frequency_centroid(kernels), title, out / "ci_vs_frequency.png"
    )


def _group_summary(entries: list[dict]) -> dict[str, object]:
    s = np.array([e["halves"]["separation"] for e in entries])
    return {
        "separation": s.tolist(),
        "separation_mean": float(s.mean()),
        "separation_sd": float(s.std(ddof=1)) if len(s) > 1 else None,
        "colour_half": [e["halves"]["colour_half"] for e in entries],
    }


def figure3(cfg: Figure3Config) -> dict[str, object]:
    """Measure and draw every input of `cfg`; write figure3.json and the PNGs; return the JSON."""
    if not (cfg.checkpoints or cfg.controls or cfg.epochs):
        raise ValueError("nothing to analyse: give checkpoints=[…], controls=[…] or epochs=[…]")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, object] = {"config": OmegaConf.to_container(OmegaConf.structured(cfg))}
    entries: dict[str, list[dict]] = {"grouped": [], "control": []}
    for group, paths in (("grouped", cfg.checkpoints), ("control", cfg.controls)):
        for name, path in zip(_names(list(paths)), paths, strict=True):
            kernels, ci, stats = _measure(path, cfg)
            _draw(kernels, ci, stats, f"{group} {name}", out / group / name, cfg.per_kernel_scale)
            entries[group].append(
                {
                    "name": name,
                    "path": str(path),
                    "halves": stats.as_dict(),
                    "chromatic_index": ci.tolist(),
                    "frequency_centroid": frequency_centroid(kernels).tolist(),
                }
            )
            log.info("%s %s: %s", group, name, stats)
    result["checkpoints"] = entries["grouped"]
    result["controls"] = entries["control"]
    result["groups"] = {g: _group_summary(e) for g, e in entries.items() if e}
    if entries["grouped"] or entries["control"]:
        # S depends on the CI values only through their ranks, so for untied
        # CIs every checkpoint has this same null: the S of random 48/48 splits.
        first = (entries["control"] or entries["grouped"])[0]
        ci = np.array(first["chromatic_index"])
        _, null = separation_null(
            ci, np.arange(len(ci)) >= len(ci) // 2, cfg.permutations, cfg.seed
        )
        q = (0.5, 0.95, 0.99)
        result["random_splits"] = {
            "from": first["name"],
            "splits": cfg.permutations,
            "separation_quantiles": dict(
                zip(map(str, q), np.quantile(null, q).tolist(), strict=True)
            ),
        }
        observed = {
            f"{g} {e['name']}": e["halves"]["separation"] for g in entries for e in entries[g]
        }
        pictures.save_split_null(observed, null, out / "random_splits.png")
        pictures.save_separation_by_seed(
            {g: result["groups"][g]["separation"] for g in result["groups"]},
            out / "separation_by_seed.png",
        )
    if cfg.epochs:
        names = _names(list(cfg.epochs))
        stats = [_measure(p, cfg)[2] for p in cfg.epochs]
        result["epochs"] = [
            {"name": n, "path": str(p), "halves": s.as_dict()}
            for n, p, s in zip(names, cfg.epochs, stats, strict=True)
        ]
        pictures.save_epochs(names, stats, out / "epochs.png")
    (out / "figure3.json").write_text(json.dumps(result, indent=1))
    return result


@hydra.main(version_base=None, config_path="pkg://split_alexnet.conf", config_name="figure3")
def main(cfg: Figure3Config) -> None:
    run_command(lambda: _report(figure3(OmegaConf.to_object(cfg)), cfg))


def _report(result: dict, cfg: Figure3Config) -> None:
    for group in ("checkpoints", "controls"):
        for e in result[group]:
            h = e["halves"]
            print(
                f"{group} {e['name']}: mean CI {h['mean'][0]:.3f} | {h['mean'][1]:.3f}, "
                f"AUC {h['auc']:.3f}, S {h['separation']:.3f}, p {h['p_value']:.2g}, "
                f"colour half {h['colour_half']}"
            )
    print(f"wrote {Path(cfg.out_dir).resolve() / 'figure3.json'}")


if __name__ == "__main__":
    main()
