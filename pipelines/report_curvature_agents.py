"""Tabulate and plot runs of ``train_curvature_agent.py``: learning curves against the zero action, per run.

    python pipelines/report_curvature_agents.py runs/curvature_s0 runs/curvature_s1 --out docs/data/curvature_agent_rl

Each run folder holds the ``result.json`` that ``train_curvature_agent.py`` writes. The table gives, per run, the
command, the seed, the training budget and CPU time, and at every evaluation the agent's success and mean / median
force calls on the validation starts next to the zero action's on the same starts; the PNG draws the mean force calls
against training steps. Writes ``<out>.md`` and ``<out>.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def load(folder: Path) -> dict:
    path = folder / "result.json"
    if not path.exists():
        raise SystemExit(f"{path}: no result.json (is the run finished?)")
    return json.loads(path.read_text())


def table(runs: dict[str, dict]) -> str:
    lines = [
        "| run | command | steps | CPU time | zero action: success, mean (median) "
        "| agent at each evaluation: steps → success, mean (median) |",
        "|---|---|---|---|---|---|",
    ]
    for name, run in runs.items():
        zero = run["zero_action"]
        zero_text = "—" if zero is None else f"{zero['success']:.0%}, {zero['mean_calls']:.2f} ({zero['median_calls']:g})"
        curve = "; ".join(
            f"{c['timesteps']} → {c['success']:.0%}, {c['mean_calls']:.2f} ({c['median_calls']:g})" for c in run["curve"]
        )
        steps = run["curve"][-1]["timesteps"]
        lines.append(f"| {name} | `{run['command']}` | {steps} | {run['train_cpu_s'] / 60:.0f} min | {zero_text} | {curve} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="output stem (.md and .png are added)")
    args = parser.parse_args()
    runs = {folder.name: load(folder) for folder in args.runs}
    first = next(iter(runs.values()))
    text = [
        f"# RL on top of the learned curvature: {len(runs)} runs",
        "",
        f"Validation family `{first['family']}`, {first['eval_starts']} starts, fmax {first['args']['fmax']} eV/Å, "
        "agent through `RLOptimizer` (default safeguards); written by `python pipelines/report_curvature_agents.py "
        + " ".join(str(r) for r in args.runs)
        + f" --out {args.out}`.",
        "",
        table(runs),
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(text))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.6))
    for name, run in runs.items():
        steps = [c["timesteps"] for c in run["curve"]]
        (line,) = axes.plot(steps, [c["mean_calls"] for c in run["curve"]], "o-", label=name)
        if run["zero_action"] is not None:
            axes.axhline(run["zero_action"]["mean_calls"], color=line.get_color(), ls=":", lw=1)
    axes.set_xlabel("training steps")
    axes.set_ylabel("mean force calls (validation)")
    axes.set_title("dotted: each run's zero action")
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(args.out.with_suffix(".png"), dpi=120)
    print(f"wrote {args.out.with_suffix('.md')} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
