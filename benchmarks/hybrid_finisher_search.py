"""Search for a hybrid that stays within 1.2× of the best classical optimizer on every unseen structure.

Issue 6 asks the hybrid (shipped Al–Fe agent, then a classical optimizer) for ≤ 1.2× the best classical optimizer's
median force calls on structures the agent never saw. The default hybrid misses that on one cell of nine. This
script runs the candidate hybrids (finisher, handover and warm-start variants) and the classical optimizers they
must be compared with on *validation* starts (seeds 100–119; the reported ones are seeds 0–9), and writes the ratio
of each to the best of BFGSLineSearch and GPMin alone (the best two of the issue's baselines on these cells) with
its worst case. GPMin variants with other settings are run alone as well: a finisher that is a retuned classical
optimizer must beat that optimizer too.

    python benchmarks/hybrid_finisher_search.py --out results/hybrid_finisher_search [--write-docs]
    python benchmarks/hybrid_finisher_search.py --agent <agent folder> --hybrids "hybrid, default (BFGSLineSearch)" \
        --classical-from results/hybrid_finisher_search/runs.csv --out results/<name>    # another agent, same starts

About 30 minutes on the 2-core CPU (GPMin with hyperparameter fitting is most of it).
"""

from __future__ import annotations

import argparse
import csv
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from ase.optimize import BFGSLineSearch, GPMin
from ase.optimize.precon import PreconLBFGS

from sb3_crystal.benchmark.agents import HybridRelaxer
from sb3_crystal.benchmark.classical import ASEOptimizerRelaxer
from sb3_crystal.benchmark.harness import run_benchmark, structure_name, write_csv
from sb3_crystal.calculators import make_calculator
from sb3_crystal.relax import load_default_agent
from sb3_crystal.relax.agent_io import load_model
from sb3_crystal.structures.dataset import load_structures, with_two_atoms_at_least
from sb3_crystal.structures.minima import relaxed_minimum

ROOT = Path(__file__).resolve().parents[1]
STRUCTURES = [
    str(ROOT / "docs/data/unseen_random_cells.extxyz"),
    "Al-bcc",
    "Fe-hcp",
    str(ROOT / "../shared/paper_structures/AlFe7.csv"),
]
BASELINES = ("BFGSLineSearch", "GPMin")
#: (name, optimizer class, its keyword arguments) of classical optimizers run alone.
CLASSICAL: list[tuple[str, type, dict[str, Any]]] = [
    ("BFGSLineSearch", BFGSLineSearch, {}),
    ("GPMin", GPMin, {}),
    ("GPMin (fitted length scale)", GPMin, {"update_hyperparams": True}),
    ("GPMin (prior: mean energy)", GPMin, {"update_prior_strategy": "average"}),
    ("PreconLBFGS (Exp)", PreconLBFGS, {"precon": "Exp"}),
]
#: (name, HybridRelaxer keyword arguments) of the candidate hybrids; the first is the package default.
HYBRIDS: list[tuple[str, dict[str, Any]]] = [
    ("hybrid, default (auto)", {}),
    ("hybrid, default (BFGSLineSearch)", {"finisher": BFGSLineSearch}),
    ("hybrid, BFGSLineSearch, switch_fmax 3", {"finisher": BFGSLineSearch, "switch_fmax": 3.0}),
    ("hybrid, BFGSLineSearch, ≤ 1 agent step", {"finisher": BFGSLineSearch, "max_agent_steps": 1}),
    ("hybrid, BFGSLineSearch, patience 2", {"finisher": BFGSLineSearch, "patience": 2}),
    ("hybrid, BFGSLineSearch, patience 3", {"finisher": BFGSLineSearch, "patience": 3}),
    ("hybrid, GPMin", {"finisher": GPMin}),
    ("hybrid, GPMin, no warm start", {"finisher": GPMin, "warm_start": False}),
    ("hybrid, GPMin, ≤ 1 agent step, no warm start", {"finisher": GPMin, "max_agent_steps": 1, "warm_start": False}),
    ("hybrid, GPMin (fitted length scale)", {"finisher": GPMin, "finisher_kwargs": {"update_hyperparams": True}}),
    ("hybrid, GPMin (prior: mean energy)", {"finisher": GPMin, "finisher_kwargs": {"update_prior_strategy": "average"}}),
    ("hybrid, PreconLBFGS (Exp)", {"finisher": PreconLBFGS, "finisher_kwargs": {"precon": "Exp"}}),
]


def classical_rows(path: Path, seed: int, n_starts: int) -> list[dict[str, Any]]:
    """The classical optimizers' rows of an earlier ``runs.csv`` on the same starts (seeds seed … seed+n_starts−1)."""
    names = {name for name, _, _ in CLASSICAL}
    with open(path, newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["optimizer"] in names]
    rows = [row for row in rows if seed <= int(row["start_seed"]) < seed + n_starts]
    rows = [dict(row, converged=row["converged"] == "True") for row in rows]
    missing = names - {row["optimizer"] for row in rows}
    if missing:
        raise SystemExit(f"{path} lacks runs of {sorted(missing)} on seeds {seed}–{seed + n_starts - 1}")
    return rows


def ratio_table(rows: list[dict[str, Any]], baselines: tuple[str, ...] = BASELINES) -> tuple[list[str], list[list[Any]]]:
    """Per relaxer: worst ratio and the ratio per structure of its median force calls (a failed run counts as
    ``inf``) to the smallest median of ``baselines``."""
    calls: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        value = float(row["force_calls"]) if row["converged"] else math.inf
        calls.setdefault((row["structure"], row["optimizer"]), []).append(value)
    structures = list(dict.fromkeys(row["structure"] for row in rows))
    relaxers = list(dict.fromkeys(row["optimizer"] for row in rows))
    median = {key: float(np.median(values)) for key, values in calls.items()}
    best = {s: min(median[(s, b)] for b in baselines) for s in structures}
    table = []
    for relaxer in relaxers:
        ratios = [median[(s, relaxer)] / best[s] for s in structures]
        table.append([relaxer, max(ratios), *ratios])
    return structures, table


def markdown(structures: list[str], table: list[list[Any]], header: str) -> str:
    lines = [header, "", "| relaxer | worst | " + " | ".join(structures) + " |", "|---" * (len(structures) + 2) + "|"]
    for name, worst, *ratios in table:
        cells = [f"**{r:.2f}**" if r > 1.2 else f"{r:.2f}" for r in ratios]
        lines.append(f"| {name} | {worst:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-starts", type=int, default=20)
    parser.add_argument("--seed", type=int, default=100, help="validation starts: seeds seed … seed+n_starts−1")
    parser.add_argument("--out", type=Path, default=Path("results/hybrid_finisher_search"))
    parser.add_argument("--write-docs", action="store_true", help="write docs/data/hybrid_finisher_search.md")
    parser.add_argument("--agent", type=Path, default=None, help="agent folder or SB3 zip (default: the shipped agent)")
    parser.add_argument(
        "--hybrids", nargs="+", default=None, metavar="NAME", help="only these candidate hybrids (names as in the table)"
    )
    parser.add_argument(
        "--classical-from", type=Path, default=None, help="reuse the classical runs of an earlier runs.csv (same starts)"
    )
    args = parser.parse_args()
    known = [name for name, _ in HYBRIDS]
    unknown = sorted(set(args.hybrids or ()) - set(known))
    if unknown:
        raise SystemExit(f"unknown hybrids {unknown}; known: {known}")

    start = time.time()
    calc = make_calculator("lammps")
    minima = []
    for spec in STRUCTURES:
        for atoms in map(with_two_atoms_at_least, load_structures(spec)):
            minimum, _ = relaxed_minimum(atoms, calc)
            minimum.info["source"] = atoms.info["source"]
            minima.append(minimum)
    # file:index sources are long; a structure is its prototype name or its formula in the table
    names = [
        str(m.info["source"]) if "/" not in str(m.info["source"]) else m.get_chemical_formula(mode="metal") for m in minima
    ]
    agent = load_default_agent() if args.agent is None else load_model(args.agent, allow_pickle=True)  # a zip you trained
    relaxers: list[Any] = []
    if args.classical_from is None:
        relaxers += [ASEOptimizerRelaxer(name, cls, **kwargs) for name, cls, kwargs in CLASSICAL]
    relaxers += [HybridRelaxer(agent, name=name, **kwargs) for name, kwargs in HYBRIDS if name in (args.hybrids or known)]
    rows = run_benchmark(
        minima,
        relaxers,
        beta=0.5,
        fmaxes=(0.05,),
        n_starts=args.n_starts,
        seed=args.seed,
        calculator=calc,
        min_distance=1.5,
        polish_fmax=None,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, args.out / "runs.csv")
    if args.classical_from is not None:
        rows = classical_rows(args.classical_from, args.seed, args.n_starts) + rows
    structures, table = ratio_table(rows)
    labels = dict(zip([structure_name(m) for m in minima], names, strict=True))
    header = (
        f"Median force calls to 0.05 eV/Å ÷ the smaller median of BFGSLineSearch and GPMin alone; {args.n_starts} "
        f"starts per structure (seeds {args.seed}–{args.seed + args.n_starts - 1}, β 0.5 Å), "
        f"{'shipped Al–Fe agent' if args.agent is None else f'agent {args.agent}'}; "
        f"bold: above 1.2. `{shlex.join(['python', 'benchmarks/hybrid_finisher_search.py', *sys.argv[1:]])}`, "
        f"{time.time() - start:.0f} s."
    )
    text = markdown([labels[s] for s in structures], table, header)
    (args.out / "ratios.md").write_text(text)
    print(text)
    if args.write_docs:
        (ROOT / "docs/data/hybrid_finisher_search.md").write_text("# Hybrid finisher search (validation starts)\n\n" + text)


if __name__ == "__main__":
    main()
