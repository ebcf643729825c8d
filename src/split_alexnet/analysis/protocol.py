"""The Figure 3 protocol's report: the table per run and S against steps (issue 16).

    python -m split_alexnet.analysis.protocol runs/figure3-…   # launch/figure3_experiment.sh

Reads, under the protocol's directory, each run's config.yaml and metrics.jsonl
(the conv1 records training writes every `conv1_every` steps, from step 0) and
the Figure 3 tool's figure3.json files (the permutation p on each run's last
checkpoint). Writes protocol.md (one row per run) and separation_by_step.png.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from omegaconf import OmegaConf

from split_alexnet.analysis import pictures
from split_alexnet.training.metrics import read_metrics

KIND_COLOURS = {"grouped": "tab:red", "ungrouped": "tab:blue", "grey input": "tab:grey"}


@dataclass(frozen=True)
class ProtocolRun:
    """One run of the protocol: what it trained, and its conv1 and validation records."""

    name: str
    kind: str  # grouped | ungrouped | grey input
    seed: int
    conv1: list[dict]
    val: list[dict]


def read_run(run_dir: Path) -> ProtocolRun:
    cfg = OmegaConf.load(run_dir / "config.yaml")
    if cfg.data.get("grey", False):
        kind = "grey input"
    else:
        kind = "grouped" if cfg.model.connectivity == "paper" else "ungrouped"
    records = read_metrics(run_dir / "metrics.jsonl")
    return ProtocolRun(
        run_dir.name,
        kind,
        int(cfg.seed),
        [r for r in records if r["kind"] == "conv1"],
        [r for r in records if r["kind"] == "val"],
    )


def permutation_tests(root: Path) -> tuple[dict[str, dict], dict[str, float]]:
    """Every run's Figure 3 entry (on its last checkpoint) by run name, and the null's quantiles.

    A run tested more than once (continued, or trained again) is reported from its
    latest test: the files are read oldest first.
    """
    entries: dict[str, dict] = {}
    quantiles: dict[str, float] = {}
    for path in sorted(root.glob("figure3*/figure3.json"), key=lambda p: p.stat().st_mtime):
        result = json.loads(path.read_text())
        for entry in result["checkpoints"] + result["controls"]:
            tested = Path(entry["path"])  # a run folder, or a conv1 file saved in one
            entries[tested.name if tested.is_dir() else tested.parent.name] = entry
        quantiles = quantiles or result["random_splits"]["separation_quantiles"]
    return entries, quantiles


def _cell(entry: dict | None, part: str, key: str, fmt: str) -> str:
    if entry is None or (part == "delta" and entry["delta"] is None):
        return "–"
    halves = (entry["delta"] if part == "delta" else entry)["halves"]
    return format(halves[key], fmt)


def table(runs: list[ProtocolRun], tests: dict[str, dict]) -> str:
    """Markdown: steps, growth and mean CI per half, AUC, S and p on W and ΔW, colour half."""
    head = (
        "| run | kind | seed | steps | ‖W‖/‖W₀‖ half 0 / 1 | mean CI half 0 / 1 | AUC | "
        "S (W) | p (W) | S (ΔW) | p (ΔW) | colour half | val top-1 error |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for run in runs:
        last = run.conv1[-1]
        entry = tests.get(run.name)
        error = f"{100 * run.val[-1]['top1_error']:.1f} %" if run.val else "–"
        rows.append(
            f"| {run.name} | {run.kind} | {run.seed} | {last['step']} | "
            f"{last['norm_growth/half0']:.2f} / {last['norm_growth/half1']:.2f} | "
            f"{last['mean_CI/W/half0']:.3f} / {last['mean_CI/W/half1']:.3f} | "
            f"{_cell(entry, 'W', 'auc', '.3f')} | {last['S/W']:.3f} | "
            f"{_cell(entry, 'W', 'p_value', '.2g')} | {last['S/dW']:.3f} | "
            f"{_cell(entry, 'delta', 'p_value', '.2g')} | "
            f"{_cell(entry, 'W', 'colour_half', 'd')} | {error} |"
        )
    return head + "\n".join(rows) + "\n"


def plot_separation(runs: list[ProtocolRun], quantiles: dict[str, float], out: Path) -> None:
    """S on W and on ΔW against steps, one line per run coloured by kind, over the null."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, key, title in zip(axes, ("S/W", "S/dW"), ("W", "ΔW = W − W₀"), strict=True):
        if quantiles:
            pictures.shade_quantiles(ax, quantiles["0.95"], quantiles["0.99"])
        seen = set()
        for run in runs:
            label = None if run.kind in seen else run.kind
            seen.add(run.kind)
            steps = [r["step"] for r in run.conv1]
            ax.plot(steps, [r[key] for r in run.conv1], color=KIND_COLOURS[run.kind],
                    lw=1.2, alpha=0.8, label=label)  # fmt: skip
        ax.set(title=f"separation S of the halves' chromatic index, on {title}",
               xlabel="step", ylim=(0, 1))  # fmt: skip
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("S = |2·AUC − 1|")
    axes[0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def report(root: Path) -> str:
    """Write protocol.md and separation_by_step.png into `root`; return the table."""
    runs = [read_run(p.parent) for p in sorted(root.glob("*/metrics.jsonl"))]
    runs = [run for run in runs if run.conv1]
    if not runs:
        raise ValueError(f"{root}: no run with conv1 records (train with conv1_every > 0)")
    tests, quantiles = permutation_tests(root)
    text = table(runs, tests)
    (root / "protocol.md").write_text(text)
    plot_separation(runs, quantiles, root / "separation_by_step.png")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="the protocol's directory (one folder per run)")
    print(report(parser.parse_args().root))


if __name__ == "__main__":
    main()
