#!/usr/bin/env python
"""LearnedCurvature's stall rule, chosen on the validation split: success and force calls per candidate rule.

Usage::

    python benchmarks/learned_curvature_stall.py        # writes docs/data/learned_curvature_stall_rule.md/.json
    python benchmarks/learned_curvature_stall.py --patience 10 none --extra-starts 2 --out /tmp/stall   # quick

:class:`~sb3_crystal.relax.LearnedCurvature` stops a run unconverged after ``patience`` steps without progress
(:class:`~sb3_crystal.relax.RLOptimizer`'s stall rule): without lowering the smallest max force seen by 1 % (the
agents' rule, and LearnedCurvature's before this comparison), or, with ``energy_progress=True``, nor the lowest
energy seen by 1e-4 eV/atom (LearnedCurvature's default since). A longer patience leaves every run that
converges unchanged (the rule only ends runs, it never changes a step), so the candidates differ only on the runs
one of them stops: this script counts those, per validation Al–Fe family of :mod:`sb3_crystal.structures.families`
and per candidate (``--patience``: by the max force, ``none``: never stopped; ``--energy-patience``: by the max
force or the energy), on

- the *baselines' starts*: the starts of ``docs/data/unseen_families_baselines.csv`` (those of
  ``benchmarks/learned_curvature_families.py``, less the cells that matched the shipped agent's training cells);
- *extra starts*: ``--extra-starts`` more starts around each of those cells (of the families named by
  ``--extra-families``, default the random ones, where runs are long enough to stall), distorted as the family's
  own starts (β of the family, no two atoms closer than 1.5 Å) from validation seeds of the family's block that
  its own starts do not use (``family_seed + 5000 + per_cell·j + k`` for cell ``j``). More starts, because the
  baselines' starts alone may not separate the candidates.

On the same starts one more run, never stopped, records the energy and max force after every step, and from it the
*longest streak* of each run: the most consecutive steps without progress before ε was reached, progress being a
smallest max force lowered by 1 % (a patience P ends exactly the runs whose streak is ≥ P, which the table checks
against the runs above), or also a lowest energy lowered by 1e-4 eV/atom (the rule ``RLOptimizer`` applies through a
cell filter, and with ``energy_progress``), to show how close the runs come to each rule.

Fixed cell, LAMMPS Mendelev Al–Fe EAM, ε 0.05 and 0.01 eV/Å, at most 500 force calls; medians over successful runs.
Validation split only: the test splits are for one-time reports. Writes ``<out>.md`` and ``<out>.json`` (per start:
force calls, success, final max force).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from learned_curvature_families import BASELINES, _fmt, _patience, _relative, baseline_rows, starts_of, stats
from unseen_families import FMAXES, MAX_CALLS

from sb3_crystal.benchmark import ForceCallCounter
from sb3_crystal.benchmark.agents import AgentRelaxer, LearnedCurvatureRelaxer
from sb3_crystal.benchmark.classical import ASEOptimizerRelaxer
from sb3_crystal.calculators import make_calculator
from sb3_crystal.relax import LearnedCurvature
from sb3_crystal.relax.batch_runner import load_batch_agent
from sb3_crystal.structures.families import FAMILIES, SEEDS_PER_FAMILY, START_MIN_DISTANCE, family_seed, test_family
from sb3_crystal.structures.geometry import distort, max_force

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "data" / "learned_curvature_stall_rule"
#: Offset of the extra starts' seeds inside a family's seed block (its own starts use the first seeds).
EXTRA_OFFSET = 5_000
#: The stall rule's progress thresholds (RLOptimizer's): relative drop of the smallest max force, and (through a cell
#: filter or with ``energy_progress``) drop of the lowest energy per atom, eV.
MIN_IMPROVEMENT, ENERGY_PROGRESS = 0.01, 1e-4
#: What counts as progress in a streak: the max force alone, or the max force or the energy.
RULES = ("fmax", "fmax or energy")
#: The traced runs' (energy, max force) lists.
TRACES: list[list[tuple[float, float]]] = []


def extra_starts(name: str, cells: set[str], per_cell: int) -> list[Atoms]:
    """``per_cell`` more validation starts around each cell of ``name`` whose name is in ``cells``."""
    spec = FAMILIES[name]
    family = test_family(name, "validation")
    first = family_seed(name, "validation") + EXTRA_OFFSET
    if EXTRA_OFFSET + per_cell * len(family.cells) > SEEDS_PER_FAMILY:
        raise SystemExit(f"--extra-starts {per_cell}: the seeds of {name}'s extra starts leave its seed block")
    out = []
    for j, cell in enumerate(family.cells):
        if cell.info["name"] not in cells:
            continue
        for k in range(per_cell):
            seed = first + per_cell * j + k
            start = distort(cell, spec.amplitude, np.random.default_rng(seed), min_distance=START_MIN_DISTANCE)
            start.calc = None
            start.info = {"name": cell.info["name"], "cell": j, "start_seed": seed}
            out.append(start)
    return out


class TracedLearnedCurvature(LearnedCurvature):
    """:class:`LearnedCurvature` that records (energy, max force) at the start and after every step of each run in
    :data:`TRACES` (one list per run, newest last)."""

    def _before_run(self) -> None:
        super()._before_run()
        energy, forces = self._current()
        self.trace = [(energy, max_force(forces))]
        TRACES.append(self.trace)

    def _check_progress(self) -> None:
        super()._check_progress()
        energy, forces = self._current()
        self.trace.append((energy, max_force(forces)))


def longest_streak(trace: list[tuple[float, float]], fmax: float, n_atoms: int, energy: bool) -> int:
    """Most consecutive steps of a traced run without progress before max force < ``fmax`` (see the docstring)."""
    best_energy, best_fmax = trace[0]
    streak = longest = 0
    for e, f in trace[1:]:
        if f < fmax:
            break
        if f < best_fmax * (1.0 - MIN_IMPROVEMENT):
            best_fmax, best_energy, streak = f, min(best_energy, e), 0
        elif energy and e < best_energy - ENERGY_PROGRESS * n_atoms:
            best_energy, streak = e, 0
        else:
            streak += 1
            longest = max(longest, streak)
    return longest


def label(patience: int | None, energy: bool = False) -> str:
    return f"patience={patience}" + (", fmax or energy" if energy else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    alfe = [name for name, spec in FAMILIES.items() if spec.calculator == "lammps"]
    parser.add_argument("--families", nargs="+", choices=alfe, default=alfe)
    parser.add_argument(
        "--patience", type=_patience, nargs="*", default=[10, 20, 30, 50, None], help="progress = max force ('none': never)"
    )
    parser.add_argument("--energy-patience", type=_patience, nargs="*", default=[], help="progress = max force or energy")
    parser.add_argument("--no-streaks", action="store_true", help="skip the traced runs (the streaks)")
    parser.add_argument("--extra-starts", type=int, default=10, help="more starts per cell (0: the baselines' only)")
    parser.add_argument("--extra-families", nargs="*", default=[n for n in alfe if n.startswith("random_")])
    parser.add_argument(
        "--agent",
        default=None,
        help="the candidates' relaxer: this agent alone through RLOptimizer (a shipped name or an agent folder) "
        "instead of LearnedCurvature (use with --no-streaks: the traced runs are LearnedCurvature's)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if args.agent is not None and not args.no_streaks:
        parser.error("--agent needs --no-streaks (the streaks are traced with LearnedCurvature)")
    command = "python benchmarks/learned_curvature_stall.py " + shlex.join(sys.argv[1:])
    warnings.simplefilter("ignore")
    t_start = time.perf_counter()
    rows = baseline_rows(BASELINES)
    rules = [(p, False) for p in dict.fromkeys(args.patience)] + [(p, True) for p in dict.fromkeys(args.energy_patience)]
    if not rules:
        parser.error("no candidate: give --patience or --energy-patience values")
    if args.agent is None:
        relaxers = {label(p, e): LearnedCurvatureRelaxer(label(p, e), patience=p, energy_progress=e) for p, e in rules}
    else:
        agent = load_batch_agent(args.agent)
        relaxers = {label(p, e): AgentRelaxer(agent, label(p, e), patience=p, energy_progress=e) for p, e in rules}
    traced = ASEOptimizerRelaxer("traced", TracedLearnedCurvature, fmax_independent=True, patience=None)
    counter = ForceCallCounter(make_calculator("lammps"))
    results: dict[str, Any] = {}
    for name in args.families:
        groups = {"baselines' starts": starts_of(name, rows, None, "validation", set(), BASELINES)}
        if args.extra_starts > 0 and name in args.extra_families:
            kept = {s.info["name"] for s in groups["baselines' starts"]}
            groups["extra starts"] = extra_starts(name, kept, args.extra_starts)
        for group, starts in groups.items():
            for key, relaxer in relaxers.items():
                t0 = time.perf_counter()
                runs = [relaxer.relax_thresholds(start, counter, FMAXES, MAX_CALLS) for start in starts]
                for fmax in FMAXES:
                    calls = [int(run[fmax].force_calls) for run in runs]
                    converged = [bool(run[fmax].converged and run[fmax].force_calls <= MAX_CALLS) for run in runs]
                    entry = stats(calls, converged)
                    entry |= {
                        "calls": calls,
                        "converged": converged,
                        "start_seeds": [int(s.info["start_seed"]) for s in starts],
                        "cells": [str(s.info["name"]) for s in starts],
                        "final_fmax": [float(run[fmax].fmax) for run in runs],
                    }
                    results.setdefault(name, {}).setdefault(group, {}).setdefault(key, {})[f"{fmax:g}"] = entry
                done = results[name][group][key]
                summary = {f: f"{sum(done[f'{f:g}']['converged'])}/{len(starts)}" for f in FMAXES}
                print(f"{name:<22s} {group:<17s} {key:<14s} converged {summary} {time.perf_counter() - t0:6.1f} s", flush=True)
            if args.no_streaks:
                continue
            TRACES.clear()
            for start in starts:
                traced.relax_thresholds(start, counter, FMAXES, MAX_CALLS)
            if len(TRACES) != len(starts):
                raise RuntimeError(f"{name}: {len(TRACES)} traced runs for {len(starts)} starts")
            streaks = results[name][group].setdefault("streaks", {})
            for fmax in FMAXES:
                streaks[f"{fmax:g}"] = {
                    rule: [longest_streak(t, fmax, len(a), rule == RULES[1]) for t, a in zip(TRACES, starts, strict=True)]
                    for rule in RULES
                }
    payload = {
        "command": command,
        "minutes": (time.perf_counter() - t_start) / 60,
        "split": "validation",
        "settings": vars(args) | {"out": _relative(args.out), "baselines": _relative(BASELINES)},
        "candidates": list(relaxers),
        "candidate_rules": {label(p, e): {"patience": p, "energy_progress": e} for p, e in rules},
        "results": results,
    }
    payload["summary"] = summary_of(payload)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=1, default=str) + "\n", encoding="utf-8")
    args.out.with_suffix(".md").write_text(markdown(payload), encoding="utf-8")
    print(f"wrote {args.out}.md/.json in {payload['minutes']:.1f} min")


def summary_of(payload: dict[str, Any]) -> dict[str, Any]:
    """Per candidate and ε: runs, failures, and how its force calls compare with the never-stopping candidate's on
    the runs both converged (the rule only ends runs, so they should be equal)."""
    results, candidates = payload["results"], payload["candidates"]
    reference = label(None) if label(None) in candidates else None
    out: dict[str, Any] = {}
    for key in candidates:
        for fmax in FMAXES:
            f = f"{fmax:g}"
            runs = failures = differ = 0
            spent = 0
            for groups in results.values():
                for block in groups.values():
                    mine = block[key][f]
                    runs += mine["n"]
                    failures += mine["failures"]
                    spent += sum(c for c, ok in zip(mine["calls"], mine["converged"], strict=True) if not ok)
                    if reference is not None:
                        theirs = block[reference][f]
                        pairs = zip(mine["calls"], mine["converged"], theirs["calls"], theirs["converged"], strict=True)
                        differ += sum(1 for a, ok, b, ok2 in pairs if ok and ok2 and a != b)
            out.setdefault(key, {})[f] = {
                "runs": runs,
                "failures": failures,
                "calls_on_failures": spent,
                "converged_runs_with_other_calls_than_never_stopping": differ if reference is not None else None,
                "failures_the_streaks_predict": predicted(results, payload["candidate_rules"][key], f),
            }
    return out


def predicted(results: dict[str, Any], rule: dict[str, Any], f: str) -> int | None:
    """Runs whose longest streak (by the candidate's notion of progress) reaches its patience: the failures it
    should have, when every run converges without a stop (``None`` for ``patience=None`` or without streaks)."""
    patience, energy = rule["patience"], rule["energy_progress"]
    if patience is None:
        return None
    count = 0
    for groups in results.values():
        for block in groups.values():
            if "streaks" not in block:
                return None
            count += sum(1 for streak in block["streaks"][f][RULES[int(energy)]] if streak >= patience)
    return count


def markdown(payload: dict[str, Any]) -> str:
    results, candidates = payload["results"], payload["candidates"]
    agent = payload["settings"].get("agent")
    relaxer = "LearnedCurvature(atoms, " if agent is None else f"RLOptimizer(atoms, model=<agent {agent}>, "
    lines = [
        "# LearnedCurvature's stall rule on the validation split"
        if agent is None
        else f"# The stall rule of the agent `{agent}` on the validation split",
        "",
        f"Produced by (from the repository root, {payload['minutes']:.1f} min on this machine's shared 2-core CPU):",
        "",
        "```",
        payload["command"],
        "```",
        "",
        f"Candidates: `{relaxer}patience=P, energy_progress=False)` (*patience=P*: progress = the "
        f"smallest max force lowered by 1 %; `patience=None`: never stopped for a stall) and `{relaxer}"
        "patience=P, energy_progress=True)` (*patience=P, fmax or energy*: or the lowest energy lowered by 1e-4 "
        "eV/atom), everything else as shipped. Fixed cell, LAMMPS Mendelev Al–Fe EAM, success = ε within "
        f"{MAX_CALLS} force calls; median, mean and worst over successful runs. *Baselines' starts*: those of "
        "[unseen_families_baselines.md](unseen_families_baselines.md); *extra starts*: "
        f"{payload['settings']['extra_starts']} more validation starts per cell (see the script's docstring).",
        "",
        "## Summary (every family and start)",
        "",
        "| candidate | ε | runs | failures | failures its streaks predict | force calls spent on failures | "
        "converged runs whose calls differ from patience=None's |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for key, per in payload["summary"].items():
        for f, s in per.items():
            differ = s["converged_runs_with_other_calls_than_never_stopping"]
            guess = s.get("failures_the_streaks_predict")
            lines.append(
                f"| {key} | {f} | {s['runs']} | {s['failures']} | {'–' if guess is None else guess} | "
                f"{s['calls_on_failures']} | {'–' if differ is None else differ} |"
            )
    lines += [
        "",
        "## Longest streaks without progress (one run per start, never stopped)",
        "",
        "Per run, the most consecutive steps before ε without lowering the smallest max force by 1 % (*fmax*: the "
        "agents' rule), or without that and without lowering the lowest energy by 1e-4 eV/atom (*fmax or energy*). "
        "A patience P stops exactly the runs whose streak of its kind is ≥ P.",
        "",
        "| family | starts | ε | fmax: longest | runs ≥ 5 | runs ≥ 10 | runs ≥ 20 | fmax or energy: longest | runs ≥ 5 | "
        "runs ≥ 10 |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    if not any("streaks" in block for groups in results.values() for block in groups.values()):
        lines.append("| not run (`--no-streaks`) | | | | | | | | | |")
    for name, groups in results.items():
        for group, block in groups.items():
            for f, by_rule in block.get("streaks", {}).items():
                a, b = by_rule[RULES[0]], by_rule[RULES[1]]
                lines.append(
                    f"| {name} | {group} ({len(a)}) | {f} | {max(a)} | {sum(x >= 5 for x in a)} | "
                    f"{sum(x >= 10 for x in a)} | {sum(x >= 20 for x in a)} | {max(b)} | {sum(x >= 5 for x in b)} | "
                    f"{sum(x >= 10 for x in b)} |"
                )
    lines += [
        "",
        "## Per family",
        "",
        "| family | starts | candidate | success 0.05 | median | mean | worst | success 0.01 | median | mean | worst |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    failures = []
    for name, groups in results.items():
        for group, block in groups.items():
            for key in candidates:
                cells = []
                for fmax in FMAXES:
                    s = block[key][f"{fmax:g}"]
                    ok = [c for c, good in zip(s["calls"], s["converged"], strict=True) if good]
                    cells += [
                        f"{s['n'] - s['failures']}/{s['n']}",
                        _fmt(s["median"]),
                        _fmt(s["mean"], 2),
                        str(max(ok)) if ok else "–",
                    ]
                    for k, good in enumerate(s["converged"]):
                        if not good:
                            failures.append(
                                f"- {key}, {s['cells'][k]} ({group}, start seed {s['start_seeds'][k]}), ε = {fmax:g}: "
                                f"stopped after {s['calls'][k]} force calls at max force {s['final_fmax'][k]:.3f} eV/Å"
                            )
                n = block[key][f"{FMAXES[0]:g}"]["n"]
                lines.append(f"| {name} | {group} ({n}) | {key} | " + " | ".join(cells) + " |")
    lines += ["", "## Failures", "", *(failures or ["None."]), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
