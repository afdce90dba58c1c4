#!/usr/bin/env python
"""Learned curvature on the validation families: a quasi-Newton relaxer whose Hessian is the fitted pair model.

Usage::

    python benchmarks/learned_curvature_families.py                       # every validation family
    python benchmarks/learned_curvature_families.py --families random_4-8_beta0.3 b2_defect_16 --out /tmp/x

The starts are the ones of ``docs/data/unseen_families_baselines.csv`` (the validation families of
:mod:`sb3_crystal.structures.families`, less the cells that matched the shipped agent's training set), so the
classical optimizers' force calls are read from that file, measured on the same starts. Relaxers, at fixed cell with
the LAMMPS Mendelev Al–Fe EAM, to 0.05 and 0.01 eV/Å, at most 500 force calls:

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
  region), run again here.

A relaxer stops as failed after ``--stall`` consecutive steps whose every try the trust region refused. The
Hessians (model or exact) are not counted as force calls. Writes ``<out>.md`` and ``<out>.json``.
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
from sb3_crystal.calculators import CalculatorSpec, make_calculator, matscipy_eam
from sb3_crystal.curvature import PairCurvatureModel, curvature_step, load_model, secant_pairs, wants_secant_pairs
from sb3_crystal.curvature.fit import exact_hessian
from sb3_crystal.envs.observation import RelaxationHistory
from sb3_crystal.envs.safeguard import TrustRegion
from sb3_crystal.structures.families import FAMILIES, test_family
from sb3_crystal.structures.minima import max_force

ROOT = Path(__file__).resolve().parents[1]
BASELINES = ROOT / "docs" / "data" / "unseen_families_baselines.csv"
DEFAULT_OUT = ROOT / "docs" / "data" / "learned_curvature_families"
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


def starts_of(name: str, rows: list[dict[str, Any]], n_cells: int | None) -> list[Atoms]:
    """The family's starts that the baselines ran (by start seed)."""
    seeds = {int(r["start_seed"]) for r in rows if r["family"] == name}
    count = None if n_cells is None else min(n_cells, FAMILIES[name].n_cells)
    family = test_family(name, "validation", n_cells=count)
    starts = [s for s in family.starts if int(s.info["start_seed"]) in seeds]
    if not starts:
        raise RuntimeError(f"{name}: none of its starts is in {BASELINES}")
    return starts


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


def _fmt(value: float, digits: int = 1) -> str:
    return "–" if value != value else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    parser.add_argument("--model", type=Path, default=None, help="curvature model file (default: the shipped one)")
    parser.add_argument("--memory", type=int, nargs="+", default=[0, 2, 8], help="secant pairs (0: the model alone)")
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
        rebuild(args.rebuild)
        return
    command = "python benchmarks/learned_curvature_families.py " + shlex.join(sys.argv[1:])
    warnings.simplefilter("ignore")
    t_start = time.perf_counter()
    model = load_model(args.model)
    rows = baseline_rows()
    common = dict(max_step=args.max_step, min_curvature=args.min_curvature, stall=args.stall)
    learned = [
        CurvatureRelaxer(model, m, name="learned Newton + TR" if m == 0 else f"learned QN (m={m}) + TR", **common)
        for m in args.memory
    ] + [CurvatureRelaxer(model, m, name=f"learned adaptive (m={m}) + TR", adaptive=True, **common) for m in args.adaptive]
    exact = [CurvatureRelaxer(None, 0, exact=True, name="exact Newton + TR", **common), NewtonRelaxer()]
    counter = ForceCallCounter(make_calculator("lammps"))
    results: dict[str, Any] = {}
    for name in args.families:
        starts = starts_of(name, rows, args.n_cells)
        seeds = {int(s.info["start_seed"]) for s in starts}
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
                entry["start_seeds"] = [int(s.info["start_seed"]) for s in starts]
                results.setdefault(f"{name}@{fmax:g}", {})[relaxer.name] = entry
            summary = {f: _fmt(results[f"{name}@{f:g}"][relaxer.name]["median"]) for f in FMAXES}
            print(f"{name:<22s} {relaxer.name:<24s} medians {summary} {elapsed:6.1f} s", flush=True)
        for fmax in FMAXES:
            results[f"{name}@{fmax:g}"]["best classical"] = best_classical(rows, name, fmax, seeds)
    elapsed = time.perf_counter() - t_start
    payload = {
        "command": command,
        "minutes": elapsed / 60,
        "settings": vars(args) | {"out": _relative(args.out), "model": _relative(args.model) if args.model else "shipped"},
        "model_info": model.info,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=1, default=str) + "\n", encoding="utf-8")
    args.out.with_suffix(".md").write_text(markdown(payload, args.families), encoding="utf-8")
    print(f"wrote {args.out}.md/.json in {elapsed / 60:.1f} min")


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
    lines = [
        "# Learned curvature on the validation families",
        "",
        f"Split: **validation**. Produced by (from the repository root, {payload['minutes']:.1f} min on this machine's "
        "shared 2-core CPU):",
        "",
        "```",
        payload["command"],
        "```",
        "",
        "Same starts as [unseen_families_baselines.md](unseen_families_baselines.md) (its CSV gives the classical "
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


def rebuild(path: Path) -> None:
    """Recompute the best-classical columns of a finished run's JSON from the baselines' CSV; rewrite .md/.json."""
    payload = json.loads(path.read_text(encoding="utf-8"))
    rows = baseline_rows()
    families = []
    for key, block in payload["results"].items():
        name, fmax = key.rsplit("@", 1)
        if name not in families:
            families.append(name)
        first = next(v for k, v in block.items() if k != "best classical")
        block["best classical"] = best_classical(rows, name, float(fmax), set(first["start_seeds"]))
    payload["settings"]["out"] = _relative(Path(payload["settings"]["out"]))
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n", encoding="utf-8")
    path.with_suffix(".md").write_text(markdown(payload, families), encoding="utf-8")


if __name__ == "__main__":
    main()
