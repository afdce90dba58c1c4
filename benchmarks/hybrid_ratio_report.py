"""Hybrid ÷ best classical optimizer, per structure and start set, from benchmark ``runs.csv`` files.

    python benchmarks/hybrid_ratio_report.py \\
        --set "validation (seeds 100–119)=results/hybrid_finisher_search/runs.csv,results/finisher_search_auto/runs.csv" \\
        --set "reported (seeds 0–9)=results/unseen_pretrained/runs.csv,results/unseen_reported_auto/runs.csv" \\
        --set "fresh (seeds 1000–1029)=results/unseen_fresh30/runs.csv,results/unseen_fresh30_auto/runs.csv" \\
        --hybrid "BFGSLineSearch finisher=RL+BFGSLineSearch@0.1;hybrid, default (BFGSLineSearch)" \\
        --hybrid "auto finisher=RL+auto@0.1;hybrid, default (auto)" --out docs/data/unseen_hybrid_ratios

Each ``--set`` names the CSVs of one set of starts (``sb3-crystal benchmark`` or ``hybrid_finisher_search.py``
output); each ``--hybrid`` a label and the optimizer names it has in those files. The ratio is the hybrid's median
force calls to ε ÷ the smallest median of the issue's classical baselines present in the set (a failed run counts
as infinitely many calls). A further column pools every set. Writes ``<out>.md`` (table) and ``<out>.png``.
"""

from __future__ import annotations

import argparse
import csv
import math
import shlex
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

BASELINES = ("BFGS", "LBFGS", "BFGSLineSearch", "FIRE", "GPMin", "CG")


def structure_label(row: dict[str, str]) -> str:
    """Formula (atoms), the same for a structure however its file path was spelled."""
    return f"{row['formula']} ({row['n_atoms']})"


def read_runs(paths: list[Path], fmax: float) -> dict[tuple[str, str], dict[int, float]]:
    """(structure, optimizer) → {start seed: force calls} at ``fmax`` (first occurrence of a start wins)."""
    runs: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for path in paths:
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                if not math.isclose(float(row["fmax"]), fmax):
                    continue
                calls = float(row["force_calls"]) if row["converged"] == "True" else math.inf
                runs[(structure_label(row), row["optimizer"])].setdefault(int(row["start_seed"]), calls)
    return runs


def ratios(runs: dict[tuple[str, str], dict[int, float]], names: list[str]) -> dict[str, float]:
    """Per structure: median force calls of the runs under any of ``names`` ÷ the best baseline's median."""
    out = {}
    for structure in sorted({s for s, _ in runs}):
        best = min(float(np.median(list(runs[(structure, b)].values()))) for b in BASELINES if (structure, b) in runs)
        starts: dict[int, float] = {}
        for name in names:  # one hybrid may go by several names (files from different scripts)
            starts.update(runs.get((structure, name), {}))
        if starts:
            out[structure] = float(np.median(list(starts.values()))) / best
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", action="append", required=True, metavar="LABEL=CSV[,CSV...]")
    parser.add_argument("--hybrid", action="append", required=True, metavar="LABEL=NAME[;NAME...]")
    parser.add_argument("--fmax", type=float, default=0.05)
    parser.add_argument("--out", type=Path, required=True, help="output path without suffix")
    args = parser.parse_args()
    sets = {label: [Path(p) for p in paths.split(",")] for label, paths in (s.split("=", 1) for s in args.set)}
    hybrids = {label: names.split(";") for label, names in (h.split("=", 1) for h in args.hybrid)}
    for label, paths in sets.items():
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise SystemExit(f"set {label!r}: no such file {', '.join(missing)}")
    per_set = {label: read_runs(paths, args.fmax) for label, paths in sets.items()}
    pooled: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for runs in per_set.values():
        for key, starts in runs.items():
            pooled[key].update(starts)
    columns = {**per_set, "all sets pooled": pooled}
    table = {(h, c): ratios(runs, names) for h, names in hybrids.items() for c, runs in columns.items()}
    structures = sorted({s for r in table.values() for s in r})
    header = ["hybrid", "start set", "worst", *structures]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (hybrid, column), values in table.items():
        if not values:
            raise SystemExit(f"no runs of {hybrid!r} ({', '.join(hybrids[hybrid])}) in the set {column!r}")
        cells = [("**{:.2f}**" if values[s] > 1.2 else "{:.2f}").format(values[s]) if s in values else "–" for s in structures]
        lines.append(f"| {hybrid} | {column} | {max(values.values()):.2f} | " + " | ".join(cells) + " |")
    text = (
        f"Median force calls to {args.fmax:g} eV/Å ÷ the best classical baseline's median ({', '.join(BASELINES)}, "
        "those present in the set); bold: above 1.2. A structure's starts under one seed are counted once (the first "
        f"file listed wins).\n\n`{shlex.join(['python', 'benchmarks/hybrid_ratio_report.py', *sys.argv[1:]])}`\n\n"
        + "\n".join(lines)
        + "\n"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    print(text)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(hybrids), figsize=(6 * len(hybrids), 4), sharey=True, squeeze=False)
    x = np.arange(len(structures))
    width = 0.8 / len(columns)
    for axis, hybrid in zip(axes[0], hybrids, strict=True):
        for k, column in enumerate(columns):
            values = [table[(hybrid, column)].get(s, np.nan) for s in structures]
            axis.bar(x + (k - (len(columns) - 1) / 2) * width, values, width, label=column)
        axis.axhline(1.2, color="red", linestyle="--", linewidth=1, label="target 1.2×")
        axis.axhline(1.0, color="grey", linewidth=0.5)
        axis.set_xticks(x, structures, rotation=45, ha="right")
        axis.set_title(f"hybrid, {hybrid}")
    axes[0][0].set_ylabel("hybrid ÷ best classical (median force calls)")
    axes[0][-1].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(args.out.with_suffix(".png"), dpi=120)


if __name__ == "__main__":
    main()
