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

Each input is also measured as ΔW = W − W₀ (issue 16: an emerging split shows
there first), with ‖W‖/‖W₀‖ and cos(W, W₀) per half, and <name>/delta_{kernels,
ci_by_half}.png. W₀ is conv1 at initialisation: rebuilt from the seed and network
a run checkpoint records, or given as step-0 files in `initial`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from itertools import chain
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
from split_alexnet.analysis.drift import conv1_diagnostics
from split_alexnet.analysis.kernels import load_conv1, recorded_initial_conv1, to_pixel_units
from split_alexnet.cli import run_command
from split_alexnet.training import plots

log = logging.getLogger(__name__)


@dataclass
class Figure3Config:
    checkpoints: list[str] = field(default_factory=list)
    controls: list[str] = field(default_factory=list)
    epochs: list[str] = field(default_factory=list)
    # W₀ (conv1 at step 0): [] rebuilds it from each run checkpoint's recorded seed and
    # network (other files get no ΔW); one file is every input's W₀ (one run's epochs,
    # twins from one initialisation); else one file per input of checkpoints, controls,
    # epochs, in that order.
    initial: list[str] = field(default_factory=list)
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


@dataclass(frozen=True)
class Measured:
    """One input's conv1 in pixel units, its CI and half comparison, on W and on ΔW."""

    kernels: np.ndarray
    ci: np.ndarray
    stats: HalfComparison
    delta: np.ndarray | None = None
    delta_ci: np.ndarray | None = None
    delta_stats: HalfComparison | None = None
    drift: dict[str, float] | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "halves": self.stats.as_dict(),
            "chromatic_index": self.ci.tolist(),
            "frequency_centroid": frequency_centroid(self.kernels).tolist(),
            "delta": None
            if self.delta_stats is None
            else {"halves": self.delta_stats.as_dict(), "chromatic_index": self.delta_ci.tolist()},
            "drift": self.drift,
        }


def _initials(cfg: Figure3Config) -> list[str | None]:
    inputs = len(cfg.checkpoints) + len(cfg.controls) + len(cfg.epochs)
    if len(cfg.initial) in (0, 1):
        return [cfg.initial[0] if cfg.initial else None] * inputs
    if len(cfg.initial) != inputs:
        raise ValueError(
            f"initial: give none, one, or one per input ({inputs}), not {len(cfg.initial)}"
        )
    return list(cfg.initial)


def _measure(path: str, initial: str | None, cfg: Figure3Config) -> Measured:
    kernels = to_pixel_units(load_conv1(path), cfg.std)
    ci = chromatic_index(kernels)
    stats = compare_halves(ci, cfg.permutations, cfg.seed)
    start = load_conv1(initial) if initial else recorded_initial_conv1(path)
    if start is None:
        return Measured(kernels, ci, stats)
    start = to_pixel_units(start, cfg.std)
    if start.shape != kernels.shape:
        raise ValueError(f"{path}: conv1 is {kernels.shape} but its W₀ is {start.shape}")
    delta = kernels - start
    delta_ci = chromatic_index(delta)
    return Measured(
        kernels, ci, stats, delta, delta_ci,
        compare_halves(delta_ci, cfg.permutations, cfg.seed),
        conv1_diagnostics(np.split(kernels, 2), np.split(start, 2)),
    )  # fmt: skip


def _draw(m: Measured, null: np.ndarray, title: str, out: Path, per_kernel: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    scale = "per-kernel symmetric scale" if per_kernel else "one min–max for all"
    note = f"S {m.stats.separation:.3f}, p {m.stats.p_value:.2g}; {pictures.null_note(null)}"
    grid = plots.kernel_grid(plots.scaled(m.kernels, per_kernel))
    plots.save_kernel_figure(grid, f"{title}: conv1 ({scale})\n{note}", out / "kernels.png")
    for part, rgb in zip(
        ("luminance", "chromatic"), pictures.scaled_parts(m.kernels, per_kernel), strict=True
    ):
        plots.save_kernel_figure(
            plots.kernel_grid(rgb), f"{title}: {part} part only\n{note}", out / f"{part}.png"
        )
    pictures.save_ci_by_half(m.ci, m.stats, null, title, out / "ci_by_half.png")
    pictures.save_ci_vs_frequency(
        m.ci, frequency_centroid(m.kernels), m.stats, null, title, out / "ci_vs_frequency.png"
    )
    if m.delta_stats is None:
        return
    d = m.delta_stats
    growth = ", ".join(f"{m.drift[f'norm_growth/half{h}']:.2f}" for h in (0, 1))
    plots.save_kernel_figure(
        plots.kernel_grid(plots.scaled(m.delta, per_kernel)),
        f"{title}: ΔW = W − W₀ ({scale}), ‖W‖/‖W₀‖ {growth}\n"
        f"S {d.separation:.3f}, p {d.p_value:.2g}; {pictures.null_note(null)}",
        out / "delta_kernels.png",
    )
    pictures.save_ci_by_half(
        m.delta_ci, d, null, f"{title}, ΔW = W − W₀", out / "delta_ci_by_half.png"
    )


def _group_summary(entries: list[dict]) -> dict[str, object]:
    s = np.array([e["halves"]["separation"] for e in entries])
    return {
        "separation": s.tolist(),
        "separation_mean": float(s.mean()),
        "separation_sd": float(s.std(ddof=1)) if len(s) > 1 else None,
        "colour_half": [e["halves"]["colour_half"] for e in entries],
    }


def _random_splits(ci: np.ndarray, cfg: Figure3Config) -> np.ndarray:
    # S depends on the CI values only through their ranks, so for untied CIs every
    # input has this same null: the S of random 48/48 splits.
    return separation_null(ci, np.arange(len(ci)) >= len(ci) // 2, cfg.permutations, cfg.seed)[1]


def figure3(cfg: Figure3Config) -> dict[str, object]:
    """Measure and draw every input of `cfg`; write figure3.json and the PNGs; return the JSON."""
    if not (cfg.checkpoints or cfg.controls or cfg.epochs):
        raise ValueError("nothing to analyse: give checkpoints=[…], controls=[…] or epochs=[…]")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, object] = {"config": OmegaConf.to_container(OmegaConf.structured(cfg))}
    initials = _initials(cfg)
    measured: dict[str, dict[str, tuple[str, Measured]]] = {}
    for group, paths in (
        ("grouped", cfg.checkpoints), ("control", cfg.controls), ("epochs", cfg.epochs)
    ):  # fmt: skip
        own, initials = initials[: len(paths)], initials[len(paths) :]
        measured[group] = {
            name: (path, _measure(path, initial, cfg))
            for name, path, initial in zip(_names(list(paths)), paths, own, strict=True)
        }
    # the null comes from a control if there is one, as it always has
    first_name, (_, first) = next(
        chain.from_iterable(measured[g].items() for g in ("control", "grouped", "epochs"))
    )
    null = _random_splits(first.ci, cfg)
    result["random_splits"] = {
        "from": first_name,
        "splits": cfg.permutations,
        "separation_quantiles": dict(
            zip(
                map(str, pictures.NULL_QUANTILES),
                np.quantile(null, pictures.NULL_QUANTILES).tolist(),
                strict=True,
            )
        ),
    }
    entries: dict[str, list[dict]] = {"grouped": [], "control": []}
    for group in entries:
        for name, (path, m) in measured[group].items():
            _draw(m, null, f"{group} {name}", out / group / name, cfg.per_kernel_scale)
            entries[group].append({"name": name, "path": str(path), **m.as_dict()})
            log.info("%s %s: %s", group, name, m.stats)
    result["checkpoints"] = entries["grouped"]
    result["controls"] = entries["control"]
    result["groups"] = {g: _group_summary(e) for g, e in entries.items() if e}
    if result["groups"]:
        observed = {
            f"{g} {e['name']}{label}": part["halves"]["separation"]
            for g in entries
            for e in entries[g]
            for label, part in (("", e), (" ΔW", e["delta"]))
            if part is not None
        }
        pictures.save_split_null(observed, null, out / "random_splits.png")
        pictures.save_separation_by_seed(
            {g: result["groups"][g]["separation"] for g in result["groups"]},
            null,
            out / "separation_by_seed.png",
        )
    if cfg.epochs:
        epochs = measured["epochs"]
        result["epochs"] = [
            {
                "name": n,
                "path": str(p),
                "halves": m.stats.as_dict(),
                "delta": m.as_dict()["delta"],
                "drift": m.drift,
            }
            for n, (p, m) in epochs.items()
        ]
        deltas = [m.delta_stats for _, m in epochs.values()]
        pictures.save_epochs(
            list(epochs),
            [m.stats for _, m in epochs.values()],
            None if None in deltas else deltas,
            null,
            out / "epochs.png",
        )
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
            if e["delta"] is not None:
                d, drift = e["delta"]["halves"], e["drift"]
                print(
                    f"  ΔW: mean CI {d['mean'][0]:.3f} | {d['mean'][1]:.3f}, "
                    f"S {d['separation']:.3f}, p {d['p_value']:.2g}; ‖W‖/‖W₀‖ "
                    f"{drift['norm_growth/half0']:.2f} | {drift['norm_growth/half1']:.2f}, "
                    f"cos(W, W₀) {drift['cos_W_W0/half0']:.2f} | {drift['cos_W_W0/half1']:.2f}"
                )
    print(f"wrote {Path(cfg.out_dir).resolve() / 'figure3.json'}")


if __name__ == "__main__":
    main()
