"""Trained curvature-residual agents against their zero action on validation families, start by start.

    python pipelines/eval_curvature_agents.py runs/curvature_s0/final_agent runs/curvature_s1/final_agent \
        --families random_4-8_beta0.3 random_4-8_beta0.5 b2_defect_16 --out docs/data/curvature_agent_families

Every agent and the zero action (:class:`~sb3_crystal.relax.LearnedCurvature`'s step: the residual agent with a zero
correction, built with the first agent's settings) relax the same starts through
:class:`~sb3_crystal.relax.RLOptimizer` with its default safeguards, to each ``--fmax``, at most 500 force calls.
Reported per family and threshold: success, median, p10–p90 and mean force calls (over converged runs) and the
per-start difference to the zero action. Validation split only: the test split is for the final report.
Writes ``<out>.md`` and ``<out>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from sb3_crystal.relax import load_agent
from sb3_crystal.structures.families import FAMILIES, test_family

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_history_agent import relax_starts, zero_action_agent


def stats(rows: list[dict]) -> dict:
    calls = np.array([r["force_calls"] for r in rows if r["converged"]], dtype=float)
    found = len(calls) > 0
    return {
        "success": float(np.mean([r["converged"] for r in rows])),
        "median": float(np.median(calls)) if found else float("nan"),
        "p10": float(np.percentile(calls, 10)) if found else float("nan"),
        "p90": float(np.percentile(calls, 90)) if found else float("nan"),
        "mean": float(calls.mean()) if found else float("nan"),
        "n": len(rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("agents", nargs="+", type=Path, help="agent folders (save_agent)")
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES), default=["random_4-8_beta0.3"])
    parser.add_argument("--n-cells", type=int, default=None, help="first cells of each family only")
    parser.add_argument("--fmax", type=float, nargs="+", default=[0.05, 0.01])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    agents = {str(path): load_agent(path) for path in args.agents}
    first = next(iter(agents.values()))
    results: dict = {}
    for name in args.families:
        family = test_family(name, "validation", n_cells=args.n_cells)
        # the zero action's policy has a fixed number of slots; TFN actors take any number
        zero = zero_action_agent(max(first.n_max, family.max_atoms), first.env_settings)
        relaxers = {"zero action": zero, **agents}
        for fmax in args.fmax:
            key = f"{name} @ {fmax}"
            results[key] = {}
            for label, agent in relaxers.items():  # TFN actors take any number of atom slots
                rows = relax_starts(agent, family.starts, fmax, 500)
                results[key][label] = stats(rows) | {"calls": [r["force_calls"] for r in rows]}
                summary = results[key][label]
                print(f"{key:32s} {label:50s} success {summary['success']:.0%} mean {summary['mean']:.2f}", flush=True)
    lines = [
        "# Curvature-residual agents against their zero action (validation)",
        "",
        "`python pipelines/eval_curvature_agents.py " + " ".join(sys.argv[1:]) + "`",
        "",
        "| family @ fmax | relaxer | success | median (p10–p90) | mean | starts: fewer / more calls than zero action |",
        "|---|---|---|---|---|---|",
    ]
    for key, by_relaxer in results.items():
        zero = by_relaxer.get("zero action")
        for label, s in by_relaxer.items():
            versus = "—"
            if zero is not None and label != "zero action":
                diff = np.array(s["calls"]) - np.array(zero["calls"])
                versus = f"{int((diff < 0).sum())} / {int((diff > 0).sum())}"
            spread = f"{s['median']:g} ({s['p10']:g}–{s['p90']:g})"
            lines.append(f"| {key} | {label} | {s['success']:.0%} | {spread} | {s['mean']:.2f} | {versus} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
