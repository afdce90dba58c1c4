#!/usr/bin/env python
"""Learned curvature on the evaluation families: a quasi-Newton relaxer whose Hessian is the fitted pair model.

Usage::

    python benchmarks/learned_curvature_families.py                       # every validation family
    python benchmarks/learned_curvature_families.py --families random_4-8_beta0.3 b2_defect_16 --out /tmp/x
    python benchmarks/learned_curvature_families.py --split test --baselines docs/data/unseen_families_test.csv \
        --exclude-cells docs/data/learned_curvature_test_overlap.json --learned-curvature --no-variants \
        --out docs/data/learned_curvature_test                          # the one-time test-split report
    python benchmarks/learned_curvature_families.py --learned-curvature --no-variants --patience 10 20 none \
        --out /tmp/stall                                                # LearnedCurvature's stall rule, validation

The starts are the ones of the baselines' CSV (``docs/data/unseen_families_baselines.csv`` for the validation
families of :mod:`sb3_crystal.structures.families`, less the cells that matched the shipped agent's training set;
``--baselines`` for another run, e.g. ``benchmarks/unseen_families.py --split test``), so the classical optimizers'
force calls are read from that file, measured on the same starts. ``--exclude-cells`` leaves out the cells a
``benchmarks/fit_curvature.py --overlap`` report lists as matching the curvature model's fitting set. Relaxers, at
fixed cell with the LAMMPS Mendelev Al–Fe EAM, to 0.05 and 0.01 eV/Å, at most 500 force calls:

- ``LearnedCurvature`` (``--learned-curvature``): the package's optimizer :class:`~sb3_crystal.relax.LearnedCurvature`
  as shipped (the zero action of a residual agent with ``proposal="curvature"``, through ``RLOptimizer`` with its
  default safeguards and patience), run through the same loop as the classical optimizers; ``--patience 10 30
  none`` runs it once per stall rule instead (``LearnedCurvature (patience=30)``, ``none``: never stopped), to
  choose the rule on the validation split; ``--no-energy-progress`` with the agents' stall rule (progress = a lower
  max force only; LearnedCurvature's default counts a lower energy too);

- ``learned QN (m=k) + TR``: :func:`~sb3_crystal.curvature.curvature_step` with the shipped model as the initial
  Hessian, BFGS-updated by the secant pairs of the last k steps (``--memory``) of a
  :class:`~sb3_crystal.envs.observation.RelaxationHistory`, inside the package's default
  :class:`~sb3_crystal.envs.safeguard.TrustRegion` (every try is a counted force call; rejected tries enter the
  history as the environment records them);
- ``learned Newton + TR``: the same with no secant pairs (k = 0: the model's Newton step alone);
- ``learned adaptive (m=k) + TR``: the pairs only after a step without progress
  (:func:`~sb3_crystal.curvature.wants_secant_pairs`), else the model's Newton step;
- ``exact Newton + TR``: the same step with matscipy's exact EAM Hessian instead of the model, no pairs (families up
  to ``--exact-max-atoms``);
- ``Newton (exact Hessian)``: the baselines' calibration line (:class:`unseen_families.NewtonRelaxer`, no trust
  region), run again here (``--no-variants`` leaves out every relaxer of this list but ``LearnedCurvature``).

A relaxer stops as failed after ``--stall`` consecutive steps whose every try the trust region refused. The
Hessians (model or exact) are not counted as force calls. Writes ``<out>.md``, ``<out>.json`` (per start: force
calls, success, final max force, wall time; the classical optimizers' per-start numbers on the same starts too) and
``<out>.png`` (median force calls per family over the best classical optimizer's).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from unseen_families import FMAXES, MAX_CALLS, NewtonRelaxer

from sb3_crystal.benchmark import ForceCallCounter, Relaxer, RelaxResult
from sb3_crystal.benchmark.agents import AgentRelaxer, LearnedCurvatureRelaxer
from sb3_crystal.calculators import CalculatorSpec, make_calculator, matscipy_eam
from sb3_crystal.curvature import PairCurvatureModel, curvature_step, load_model, secant_pairs, wants_secant_pairs
from sb3_crystal.curvature.fit import exact_hessian
from sb3_crystal.envs.observation import RelaxationHistory
from sb3_crystal.envs.safeguard import TrustRegion
from sb3_crystal.relax.batch_runner import load_batch_agent
from sb3_crystal.structures.families import FAMILIES, SPLITS, test_family
from sb3_crystal.structures.minima import max_force

ROOT = Path(__file__).resolve().parents[1]
BASELINES = ROOT / "docs" / "data" / "unseen_families_baselines.csv"
#: Name of the ``--agent`` relaxer in tables.
AGENT_LABEL = "agent"

DEFAULT_OUT = ROOT / "docs" / "data" / "learned_curvature_families"
#: Issue 13's target: median force calls at most this fraction of the best classical optimizer's, per ε.
TARGETS = {0.05: 0.7, 0.01: 0.8}
TERMS = {"pair": "pair force constants only", "pair + embedding": "pair force constants plus an EAM-like embedding term"}


class CurvatureRelaxer(Relaxer):
    """Quasi-Newton relaxation with :func:`curvature_step` inside a trust region.

    :param model: the Hessian model (ignored with ``exact``).
    :param memory: secant pairs of the history passed to the step (0: the model's Newton step alone).
    :param max_step: longest atomic step, Å.
    :param min_curvature: eigenvalue floor, eV/Å².
    :param exact: use matscipy's exact EAM Hessian instead of the model (calibration).
    :param stall: consecutive fully refused steps after which the run stops unconverged.
    :param name: name in tables.
    """

    fmax_independent = True

    def __init__(
        self,
        model: PairCurvatureModel | None,
        memory: int,
        max_step: float,
        min_curvature: float,
        exact: bool = False,
        stall: int = 10,
        name: str = "learned QN",
        adaptive: bool = False,
    ) -> None:
        self.model = model
        self.memory = memory
        self.max_step = max_step
        self.min_curvature = min_curvature
        self.exact_calc = matscipy_eam() if exact else None
        self.trust_region = TrustRegion()
        self.stall = stall
        self.name = name
        self.adaptive = adaptive

    def relax(self, start: Atoms, calculator: CalculatorSpec | ForceCallCounter, fmax: float, max_steps: int) -> RelaxResult:
        return self.relax_thresholds(start, calculator, [fmax], max_steps)[fmax]

    def _step(self, work: Atoms, forces: np.ndarray, history: RelaxationHistory) -> np.ndarray:
        steps = history.steps(self.memory)
        use = self.memory and (wants_secant_pairs(forces, steps) if self.adaptive else True)
        pairs = secant_pairs(steps) if use else []
        hessian = exact_hessian(self.exact_calc, work) if self.exact_calc is not None else None
        return curvature_step(
            work.numbers,
            work.cell.array,
            work.positions,
            forces,
            pairs,
            self.model,
            self.max_step,
            self.min_curvature,
            hessian,
        )

    def relax_thresholds(
        self, start: Atoms, calculator: CalculatorSpec | ForceCallCounter, fmaxes: Any, max_steps: int
    ) -> dict[float, RelaxResult]:
        counter = calculator if isinstance(calculator, ForceCallCounter) else ForceCallCounter(calculator)
        counter.reset()
        pending = sorted({float(f) for f in fmaxes}, reverse=True)
        results: dict[float, RelaxResult] = {}
        work = start.copy()
        work.calc = None
        t0 = time.perf_counter()
        energy, forces = counter.evaluate(work)
        history = RelaxationHistory(max(self.memory, 1))
        history.reset(work.positions, forces, energy)
        steps, refused_in_row = 0, 0

        def evaluate(shifts: np.ndarray) -> tuple[float, np.ndarray]:
            work.positions = base + shifts
            return counter.evaluate(work)

        while True:
            current = max_force(forces)
            while pending and current < pending[0]:
                target = pending.pop(0)
                results[target] = RelaxResult(
                    target, True, counter.force_calls, steps, current, energy, work.copy(), time.perf_counter() - t0
                )
            if not pending or steps >= max_steps or counter.force_calls >= MAX_CALLS or refused_in_row >= self.stall:
                break
            base = work.positions.copy()
            outcome = self.trust_region.step(self._step(work, forces, history), energy, forces, evaluate)
            TrustRegion.record_rejected(history, outcome, base, energy, forces)
            energy, forces = outcome.energy, outcome.forces
            work.positions = base + outcome.shifts
            if outcome.accepted:
                history.record(work.positions, forces, energy)
                refused_in_row = 0
            else:
                refused_in_row += 1
            steps += 1
        for target in pending:
            results[target] = RelaxResult(
                target, False, counter.force_calls, steps, max_force(forces), energy, work.copy(), time.perf_counter() - t0
            )
        return results


def baseline_rows(path: Path = BASELINES) -> list[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def starts_of(
    name: str,
    rows: list[dict[str, Any]],
    n_cells: int | None,
    split: str = "validation",
    exclude: set[str] = frozenset(),  # type: ignore[assignment]
    baselines: Path = BASELINES,
) -> list[Atoms]:
    """The family's starts that the baselines ran (by start seed), less those of the cells named in ``exclude``."""
    seeds = {int(r["start_seed"]) for r in rows if r["family"] == name}
    count = None if n_cells is None else min(n_cells, FAMILIES[name].n_cells)
    family = test_family(name, split, n_cells=count)
    starts = [s for s in family.starts if int(s.info["start_seed"]) in seeds and s.info["name"] not in exclude]
    if not starts:
        raise RuntimeError(f"{name}: none of its starts is in {_relative(baselines)} (less the excluded cells)")
    return starts


def excluded_cells(path: Path | None) -> tuple[dict[str, list[str]], str]:
    """Cell name -> why, and the command that wrote it, from a ``fit_curvature.py --overlap`` report (``None``:
    nothing excluded)."""
    if path is None:
        return {}, ""
    report = json.loads(Path(path).read_text(encoding="utf-8"))
    if "exclude" not in report:
        raise SystemExit(f"--exclude-cells {path}: no 'exclude' entry (write it with fit_curvature.py --overlap)")
    return dict(report["exclude"]), str(report.get("command", ""))


def classical_on(rows: list[dict[str, Any]], family: str, fmax: float, seeds: list[int]) -> dict[str, Any]:
    """Per classical optimizer, its runs on the given starts (in their order; an optimizer that ran on some of them
    only, as GPMin may, has those) and their statistics."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(r["optimizer"] for r in rows if r["family"] == family):
        mine = {
            int(r["start_seed"]): r
            for r in rows
            if r["family"] == family and r["optimizer"] == name and float(r["fmax"]) == fmax
        }
        picked = [mine[s] for s in seeds if s in mine]
        if not picked:
            continue
        calls = [int(r["force_calls"]) for r in picked]
        success = [r["success"] == "True" for r in picked]
        wall = [float(r["wall_time"]) for r in picked]
        entry = stats(calls, success)
        good = [w for w, ok in zip(wall, success, strict=True) if ok]
        entry["wall_ms_median"] = 1e3 * float(np.median(good)) if good else math.nan
        entry.update(calls=calls, converged=success, wall_s=wall, start_seeds=[int(r["start_seed"]) for r in picked])
        out[name] = entry
    return out


def stats(calls: list[int], converged: list[bool]) -> dict[str, float]:
    ok = np.array([c for c, good in zip(calls, converged, strict=True) if good], dtype=float)
    has = len(ok) > 0
    return {
        "n": len(calls),
        "success": float(np.mean(converged)),
        "failures": int(len(calls) - len(ok)),
        "median": float(np.median(ok)) if has else math.nan,
        "p10": float(np.percentile(ok, 10)) if has else math.nan,
        "p90": float(np.percentile(ok, 90)) if has else math.nan,
        "mean": float(ok.mean()) if has else math.nan,
    }


def best_classical(rows: list[dict[str, Any]], family: str, fmax: float, seeds: set[int]) -> dict[str, Any]:
    """The classical optimizer with the smallest median among those that ran and converged on every one of the
    given starts; and GPMin's median on the starts it ran (the baselines ran it on the first 8 of a family only)."""
    best: dict[str, Any] = {"optimizer": "–", "median": math.nan}
    names = {r["optimizer"] for r in rows if r["family"] == family}
    for name in sorted(names):
        if name.startswith("Newton"):
            continue
        mine = [r for r in rows if r["family"] == family and r["optimizer"] == name and float(r["fmax"]) == fmax]
        mine = [r for r in mine if int(r["start_seed"]) in seeds]
        median = float(np.median([int(r["force_calls"]) for r in mine])) if mine else math.nan
        if name == "GPMin" and mine:
            best["gpmin"] = {"median": median, "n": len(mine), "start_seeds": sorted(int(r["start_seed"]) for r in mine)}
        if len(mine) < len(seeds) or not all(r["success"] == "True" for r in mine):
            continue
        if not median >= best["median"]:  # smaller, or the first one
            best.update(optimizer=name, median=median)
    return best


def _relative(path: Path) -> str:
    """A path relative to the repository when it lies inside it (no machine paths in the written files)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return Path(path).name


def _patience(text: str) -> int | None:
    """A ``--patience`` value: a positive integer, or ``none``."""
    if text.lower() == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"patience must be a positive integer or 'none', got {text!r}")
    return value


def _fmt(value: float, digits: int = 1) -> str:
    return "–" if value != value else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    alfe = [name for name, spec in FAMILIES.items() if spec.calculator == "lammps"]
    parser.add_argument("--families", nargs="+", choices=alfe, default=alfe)
    parser.add_argument("--split", choices=SPLITS, default="validation")
    parser.add_argument("--baselines", type=Path, default=BASELINES, help="the classical optimizers' CSV on this split")
    parser.add_argument("--exclude-cells", type=Path, default=None, help="a fit_curvature.py --overlap report")
    parser.add_argument("--learned-curvature", action="store_true", help="run the shipped LearnedCurvature optimizer")
    parser.add_argument("--no-variants", action="store_true", help="only LearnedCurvature (with --learned-curvature)")
    parser.add_argument(
        "--agent",
        default=None,
        help="also an agent alone through RLOptimizer (default safeguards): a shipped name ('curvature') or an agent "
        "folder; it is the relaxer the target table reports",
    )
    parser.add_argument(
        "--patience",
        type=_patience,
        nargs="+",
        default=None,
        help="with --learned-curvature: one LearnedCurvature per value ('none': never stop), named by it "
        "(default: one, as shipped)",
    )
    parser.add_argument(
        "--no-energy-progress",
        action="store_true",
        help="with --learned-curvature: the max-force stall rule of agents (energy_progress=False), not LearnedCurvature's",
    )
    parser.add_argument("--model", type=Path, default=None, help="curvature model file (default: the shipped one)")
    parser.add_argument("--memory", type=int, nargs="*", default=[0, 2, 8], help="secant pairs (0: the model alone)")
    parser.add_argument("--max-step", type=float, default=0.3)
    parser.add_argument("--min-curvature", type=float, default=0.5)
    parser.add_argument("--stall", type=int, default=10)
    parser.add_argument(
        "--adaptive", type=int, nargs="*", default=[2], help="memories of adaptive variants (pairs only after no progress)"
    )
    parser.add_argument("--exact-max-atoms", type=int, default=16, help="exact-Hessian relaxers up to this size")
    parser.add_argument("--n-cells", type=int, default=None, help="first cells of each family only (quick checks)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--rebuild", type=Path, default=None, help="only rewrite the tables of this finished run's JSON")
    args = parser.parse_args()
    if args.rebuild is not None:
        rebuild(args.rebuild, args.baselines)
        return
    if args.no_variants and not args.learned_curvature:
        parser.error("--no-variants leaves nothing to run without --learned-curvature")
    if args.patience is not None and not args.learned_curvature:
        parser.error("--patience sets LearnedCurvature's stall rule: add --learned-curvature")
    command = "python benchmarks/learned_curvature_families.py " + shlex.join(sys.argv[1:])
    warnings.simplefilter("ignore")
    t_start = time.perf_counter()
    model = load_model(args.model)
    rows = baseline_rows(args.baselines)
    exclude, exclude_command = excluded_cells(args.exclude_cells)
    common = dict(max_step=args.max_step, min_curvature=args.min_curvature, stall=args.stall)
    learned = [
        CurvatureRelaxer(model, m, name="learned Newton + TR" if m == 0 else f"learned QN (m={m}) + TR", **common)
        for m in args.memory
    ] + [CurvatureRelaxer(model, m, name=f"learned adaptive (m={m}) + TR", adaptive=True, **common) for m in args.adaptive]
    exact = [CurvatureRelaxer(None, 0, exact=True, name="exact Newton + TR", **common), NewtonRelaxer()]
    if args.no_variants:
        learned, exact = [], []
    if args.no_energy_progress and not args.learned_curvature:
        parser.error("--no-energy-progress sets LearnedCurvature's stall rule: add --learned-curvature")
    if args.learned_curvature:
        rule: dict[str, Any] = {"energy_progress": False} if args.no_energy_progress else {}
        suffix = ", max-force progress" if args.no_energy_progress else ""
        shipped = [LearnedCurvatureRelaxer(f"LearnedCurvature{f' ({suffix[2:]})' if suffix else ''}", **rule)]
        chosen = [
            LearnedCurvatureRelaxer(f"LearnedCurvature (patience={p}{suffix})", patience=p, **rule)
            for p in dict.fromkeys(args.patience or [])
        ]
        learned = [*(chosen if args.patience is not None else shipped), *learned]
    if args.agent is not None:
        agent = load_batch_agent(args.agent)
        learned = [AgentRelaxer(agent, name=AGENT_LABEL), *learned]
    counter = ForceCallCounter(make_calculator("lammps"))
    results: dict[str, Any] = {}
    classical: dict[str, Any] = {}
    for name in args.families:
        starts = starts_of(name, rows, args.n_cells, args.split, set(exclude), args.baselines)
        seeds = {int(s.info["start_seed"]) for s in starts}
        order = [int(s.info["start_seed"]) for s in starts]
        relaxers = learned + (exact if max(len(s) for s in starts) <= args.exact_max_atoms else [])
        for relaxer in relaxers:
            t0 = time.perf_counter()
            runs = [relaxer.relax_thresholds(start, counter, FMAXES, MAX_CALLS) for start in starts]
            elapsed = time.perf_counter() - t0
            for fmax in FMAXES:
                calls = [int(run[fmax].force_calls) for run in runs]
                converged = [bool(run[fmax].converged and run[fmax].force_calls <= MAX_CALLS) for run in runs]
                entry = stats(calls, converged)
                entry["wall_s_per_run"] = elapsed / len(starts)
                entry["calls"] = calls
                entry["converged"] = converged
                entry["start_seeds"] = order
                entry["cells"] = [str(s.info["name"]) for s in starts]
                entry["final_fmax"] = [float(run[fmax].fmax) for run in runs]
                entry["wall_s"] = [float(run[fmax].wall_time) for run in runs]
                good = [w for w, ok in zip(entry["wall_s"], converged, strict=True) if ok]
                entry["wall_ms_median"] = 1e3 * float(np.median(good)) if good else math.nan
                results.setdefault(f"{name}@{fmax:g}", {})[relaxer.name] = entry
            summary = {f: _fmt(results[f"{name}@{f:g}"][relaxer.name]["median"]) for f in FMAXES}
            print(f"{name:<22s} {relaxer.name:<24s} medians {summary} {elapsed:6.1f} s", flush=True)
        for fmax in FMAXES:
            results[f"{name}@{fmax:g}"]["best classical"] = best_classical(rows, name, fmax, seeds)
            classical[f"{name}@{fmax:g}"] = classical_on(rows, name, fmax, order)
    elapsed = time.perf_counter() - t_start
    settings = vars(args) | {"out": _relative(args.out), "model": _relative(args.model) if args.model else "shipped"}
    settings |= {"baselines": _relative(args.baselines)}
    settings |= {"exclude_cells": _relative(args.exclude_cells) if args.exclude_cells else None}
    payload = {
        "command": command,
        "minutes": elapsed / 60,
        "split": args.split,
        "settings": settings,
        "model_info": model.info,
        "excluded_cells": exclude,
        "excluded_by": exclude_command,
        "results": results,
        "classical": classical,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=1, default=str) + "\n", encoding="utf-8")
    args.out.with_suffix(".md").write_text(markdown(payload, args.families), encoding="utf-8")
    plot_ratios(payload, args.families, args.out.with_suffix(".png"))
    print(f"wrote {args.out}.md/.json/.png in {elapsed / 60:.1f} min")


def _subset_median(entry: dict[str, Any], seeds: list[int]) -> float:
    """Median force calls of a relaxer's successful runs on the given starts (NaN if one of them failed)."""
    wanted = set(seeds)
    picked = [
        (c, ok) for c, ok, s in zip(entry["calls"], entry["converged"], entry["start_seeds"], strict=True) if s in wanted
    ]
    if not picked or not all(ok for _, ok in picked):
        return math.nan
    return float(np.median([c for c, _ in picked]))


def markdown(payload: dict[str, Any], families: list[str]) -> str:
    info = payload["model_info"]
    check = info.get("family_check", {})
    split = payload.get("split", "validation")
    baselines = Path(payload["settings"].get("baselines", _relative(BASELINES))).with_suffix(".md").name
    lines = [
        f"# Learned curvature on the {split} families",
        "",
        f"Split: **{split}**. Produced by (from the repository root, {payload['minutes']:.1f} min on this machine's "
        "shared 2-core CPU):",
        "",
        "```",
        payload["command"],
        "```",
        "",
        f"Same starts as [{baselines}]({baselines}) (its CSV gives the classical "
        "optimizers' force calls); fixed cell, LAMMPS Mendelev Al–Fe EAM, success = ε within "
        f"{MAX_CALLS} force calls. Force calls count every evaluation, trust-region tries included; the model's "
        "and matscipy's Hessians are not counted. Median, p10–p90 and mean over successful runs. *Best classical*: "
        "the smallest median among the classical optimizers that ran and converged on every start of the row "
        "(GPMin ran on the first 8 starts of a family only, so it is shown apart: its median on those starts, and "
        "the relaxer's median on the same starts).",
        "",
        f"Curvature model: `{info.get('command', '?')}` — {TERMS.get(info.get('terms', 'pair + embedding'))}, fitted "
        f"on {info.get('n_fit', '?')} generated training structures ({info.get('atoms', ['?', '?'])[0]}–"
        f"{info.get('atoms', ['?', '?'])[1]} atoms, seeds {info.get('seeds', '?')}). StructureMatcher check of every "
        f"fitting structure against {check.get('family_cells', '?')} validation and test family cells (and of the "
        f"undistorted cell each was made from): {check.get('structures_left_out', '?')} matched and were left out of "
        "the fit" + (f"; not checked: {', '.join(check['not_checked'])}" if check.get("not_checked") else "") + ".",
        "",
    ]
    excluded = payload.get("excluded_cells") or {}
    if payload["settings"].get("exclude_cells"):
        named = "; ".join(f"{cell}: {', '.join(why)}" for cell, why in excluded.items()) or "none"
        lines += [
            f"Cells left out because they match a structure the relaxers were fitted or trained on "
            f"(`{payload['settings']['exclude_cells']}`, "
            f"from `{payload.get('excluded_by', '')}`), with their starts: {named}.",
            "",
        ]
    if payload.get("classical"):
        lines += target_table(payload, families)
    for fmax in FMAXES:
        lines += [
            f"## ε = {fmax:g} eV/Å",
            "",
            "| family | relaxer | n | median | p10–p90 | mean | success | best classical (median) | ratio | "
            "GPMin, first starts: its median / this relaxer's |",
            "|---|---|--:|--:|--:|--:|--:|---|--:|---|",
        ]
        for name in families:
            block = payload["results"].get(f"{name}@{fmax:g}")
            if not block:
                continue
            best = block["best classical"]
            gpmin = best.get("gpmin")
            for relaxer, s in block.items():
                if relaxer == "best classical":
                    continue
                ratio = s["median"] / best["median"] if best["median"] == best["median"] else math.nan
                if gpmin:
                    gp = f"{_fmt(gpmin['median'])} / {_fmt(_subset_median(s, gpmin['start_seeds']))} (n={gpmin['n']})"
                else:
                    gp = "–"
                lines.append(
                    f"| {name} | {relaxer} | {s['n']} | {_fmt(s['median'])} | {_fmt(s['p10'])}–{_fmt(s['p90'])} | "
                    f"{_fmt(s['mean'])} | {s['success']:.0%} | {best['optimizer']} ({_fmt(best['median'])}) | "
                    f"{_fmt(ratio, 2)} | {gp} |"
                )
        lines.append("")
    return "\n".join(lines)


def _main_relaxer(block: dict[str, Any]) -> str:
    """The relaxer a target table reports: the ``--agent``, else the shipped LearnedCurvature, else the adaptive
    variant."""
    names = [k for k in block if k != "best classical"]
    for wanted in (AGENT_LABEL, "LearnedCurvature", "learned adaptive (m=2) + TR"):
        if wanted in names:
            return wanted
    return names[0]


def target_table(payload: dict[str, Any], families: list[str]) -> list[str]:
    """Issue 13's target table (median ratio to the best classical per family and ε, every start converged or
    not), the failures, and every classical optimizer's statistics on the same starts."""
    results, classical = payload["results"], payload["classical"]
    first = results[f"{families[0]}@{FMAXES[0]:g}"]
    relaxer = _main_relaxer(first)
    lines = [
        "## Target (issue 13 §4)",
        "",
        (
            f"*{relaxer}* is the agent `{payload['settings'].get('agent')}` alone through `RLOptimizer` (its default "
            "safeguards: trust region, stall stop). "
            if relaxer == AGENT_LABEL
            else f'*{relaxer}* is the zero action of a residual agent with `proposal="curvature"`: the learned '
            "Hessian's quasi-Newton step in the trust region, no RL policy. "
        )
        + "Target: median force calls ≤ "
        + " and ≤ ".join(f"{TARGETS[f]:g}× the best classical at ε = {f:g} eV/Å" for f in FMAXES)
        + ", every start converged. Medians over successful runs; *success*: converged within "
        f"{MAX_CALLS} force calls / starts; *worst*: the most force calls of a successful run; wall: median seconds "
        "per successful relaxation (shared CPU, indicative only).",
        "",
        f"| family | ε | starts | best classical: median (wall ms) | {relaxer}: median | p10–p90 | worst | success "
        "| wall (ms) | ratio | target | met |",
        "|---|---|--:|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    failures = []
    for name in families:
        for fmax in FMAXES:
            block = results.get(f"{name}@{fmax:g}")
            if not block:
                continue
            s, best = block[relaxer], block["best classical"]
            ok = [c for c, good in zip(s["calls"], s["converged"], strict=True) if good]
            ratio = s["median"] / best["median"] if best["median"] == best["median"] else math.nan
            met = ratio <= TARGETS[fmax] and s["failures"] == 0
            best_wall = classical.get(f"{name}@{fmax:g}", {}).get(best["optimizer"], {}).get("wall_ms_median", math.nan)
            lines.append(
                f"| {name} | {fmax:g} | {s['n']} | {_fmt(best['median'])} {best['optimizer']} ({_fmt(best_wall, 0)}) | "
                f"{_fmt(s['median'])} | {_fmt(s['p10'])}–{_fmt(s['p90'])} | {max(ok) if ok else '–'} | "
                f"{s['n'] - s['failures']}/{s['n']} | {_fmt(s.get('wall_ms_median', math.nan), 0)} | {_fmt(ratio, 2)} | "
                f"≤ {TARGETS[fmax]:g} | {'yes' if met else 'no'} |"
            )
            for k, good in enumerate(s["converged"]):
                if not good:
                    failures.append(
                        f"- {s['cells'][k] if 'cells' in s else name} (start seed {s['start_seeds'][k]}), ε = {fmax:g}: "
                        f"stopped after {s['calls'][k]} force calls at max force {s['final_fmax'][k]:.3f} eV/Å"
                        if "final_fmax" in s
                        else f"- {name} start seed {s['start_seeds'][k]}, ε = {fmax:g}: {s['calls'][k]} force calls"
                    )
    lines += ["", f"Failures of {relaxer}: " + ("none." if not failures else ""), *failures, ""]
    for fmax in FMAXES:
        lines += [
            f"### Every relaxer on the same starts, ε = {fmax:g} eV/Å",
            "",
            "| family | relaxer | n | median | p10–p90 | mean | success | wall (ms) | ratio to best classical |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for name in families:
            key = f"{name}@{fmax:g}"
            if key not in results:
                continue
            best = results[key]["best classical"]["median"]
            rows = {k: v for k, v in results[key].items() if k != "best classical"} | classical.get(key, {})
            for label, s in rows.items():
                ratio = s["median"] / best if best == best and s["median"] == s["median"] else math.nan
                lines.append(
                    f"| {name} | {label} | {s['n']} | {_fmt(s['median'])} | {_fmt(s['p10'])}–{_fmt(s['p90'])} | "
                    f"{_fmt(s['mean'])} | {s['n'] - s['failures']}/{s['n']} | {_fmt(s.get('wall_ms_median', math.nan), 0)} | "
                    f"{_fmt(ratio, 2)} |"
                )
        lines.append("")
    return lines


def plot_ratios(payload: dict[str, Any], families: list[str], path: Path) -> None:
    """Median force calls over the best classical optimizer's, per family and ε (targets dashed); a relaxer that
    failed on a start of the family is drawn hatched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results, classical = payload["results"], payload.get("classical", {})
    labels: list[str] = []
    for key, block in results.items():
        labels += [k for k in [*block, *classical.get(key, {})] if k != "best classical" and k not in labels]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(len(FMAXES), 1, figsize=(max(10, 0.25 * len(families) * len(labels)), 4.2 * len(FMAXES)))
    width = 0.8 / len(labels)
    for ax, fmax in zip(np.atleast_1d(axes), FMAXES, strict=True):
        shown: set[str] = set()
        for i, name in enumerate(families):
            key = f"{name}@{fmax:g}"
            if key not in results:
                continue
            best = results[key]["best classical"]["median"]
            rows = {k: v for k, v in results[key].items() if k != "best classical"} | classical.get(key, {})
            for j, label in enumerate(labels):
                s = rows.get(label)
                if s is None or s["median"] != s["median"] or best != best:
                    continue
                ax.bar(
                    i + (j - (len(labels) - 1) / 2) * width,
                    s["median"] / best,
                    width,
                    color=colours[j % len(colours)],
                    hatch="//" if s["failures"] else None,
                    edgecolor="k" if s["failures"] else None,
                    label=None if label in shown else label,
                )
                shown.add(label)
        ax.axhline(1.0, color="k", lw=0.8)
        target = ", ".join(f"{TARGETS[f]:g}× at {f:g}" for f in FMAXES)
        ax.axhline(TARGETS[fmax], color="r", ls="--", lw=1, label=f"target ({target} eV/Å)")
        ax.set_xticks(range(len(families)), families, rotation=25, ha="right", fontsize="small")
        ax.set_yscale("log")
        ax.set_ylabel("median force calls / best classical")
        ax.set_title(f"ε = {fmax:g} eV/Å, {payload.get('split', 'validation')} split (hatched: not every start converged)")
        ax.grid(True, axis="y", which="both", alpha=0.3)
    handles, names = np.atleast_1d(axes)[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper center", ncol=min(len(names), 6), fontsize="small")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rebuild(path: Path, baselines: Path = BASELINES) -> None:
    """Recompute the best-classical columns (and the classical optimizers' runs, where the JSON has them) of a
    finished run's JSON from the baselines' CSV; rewrite .md/.json (and .png)."""
    payload = json.loads(path.read_text(encoding="utf-8"))
    rows = baseline_rows(ROOT / payload["settings"]["baselines"] if "baselines" in payload["settings"] else baselines)
    families = []
    for key, block in payload["results"].items():
        name, fmax = key.rsplit("@", 1)
        if name not in families:
            families.append(name)
        first = next(v for k, v in block.items() if k != "best classical")
        block["best classical"] = best_classical(rows, name, float(fmax), set(first["start_seeds"]))
        if "classical" in payload:
            payload["classical"][key] = classical_on(rows, name, float(fmax), first["start_seeds"])
    payload["settings"]["out"] = _relative(Path(payload["settings"]["out"]))
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n", encoding="utf-8")
    path.with_suffix(".md").write_text(markdown(payload, families), encoding="utf-8")
    if "classical" in payload:
        plot_ratios(payload, families, path.with_suffix(".png"))


if __name__ == "__main__":
    main()
