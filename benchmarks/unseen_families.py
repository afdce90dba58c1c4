#!/usr/bin/env python
"""Classical baselines on the fixed unseen test families (issue 13 §3): force calls to reach ε on the same starts.

Usage::

    python benchmarks/unseen_families.py                  # validation split, every family, every optimizer
    python benchmarks/unseen_families.py --split test     # the final report only (test2: the second one)
    python benchmarks/unseen_families.py --families b2_defect_16 --optimizers BFGS FIRE --out /tmp/x

The families are :mod:`sb3_crystal.structures.families` (cells and starts from seeds reserved for evaluation).
Their cells are first checked against the shipped agent's training cells (the structures of
``benchmarks/train_default_agent.py``, relaxed as its environment relaxes them) with pymatgen's
``StructureMatcher``; matching cells are left out and counted in the output.

Every start is relaxed by each optimizer at fixed cell with the Mendelev Al–Fe EAM (LAMMPS) to ε = 0.05 and
0.01 eV/Å: ASE's BFGS, LBFGS, BFGSLineSearch, FIRE, GPMin (only for cells of at most 20 atoms), PreconLBFGS
with the ``Exp`` preconditioner passed explicitly (ASE's ``precon="auto"`` turns it off below 100 atoms) and
SciPy's CG; optionally (``--newton``) Newton's method with the exact EAM Hessian from matscipy (one counted
force call per step, the Hessian free, steps capped at 0.3 Å per atom) as a calibration line. Force calls are
counted by :class:`~sb3_crystal.benchmark.classical.ForceCallCounter` (new geometries only, line-search trials
included). A run succeeds when it reaches ε within 500 force calls (500 optimizer steps at most). Force-call
statistics are over successful runs; wall time is the median seconds per relaxation to that ε.

Writes ``<out>.md`` (table and command), ``<out>.png`` and ``<out>.csv`` (one row per run).
"""

from __future__ import annotations

import argparse
import csv
import math
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.optimize.precon import Exp, PreconLBFGS

from sb3_crystal.benchmark import OPTIMIZERS, ASEOptimizerRelaxer, ForceCallCounter, Relaxer, RelaxResult
from sb3_crystal.calculators import CalculatorSpec, make_calculator, matscipy_eam
from sb3_crystal.structures import StructureDataset
from sb3_crystal.structures.families import FAMILIES, SPLITS, EvaluationFamily, test_family
from sb3_crystal.structures.minima import max_force

#: The shipped agent's training structures (benchmarks/train_default_agent.py: PROTOTYPES and RANDOM).
TRAINING = ["AlFe-B2", "AlFe-hex", "Al-fcc", "Al-hcp", "Fe-bcc", "Fe-fcc", "Al-I4mmm", "random:count=24,atoms=2-8,seed=0"]
FMAXES = (0.05, 0.01)
MAX_CALLS = 500
GPMIN_MAX_ATOMS = 20
#: GPMin's step cap: each step refits a Gaussian process on every point so far, at a cost growing as
#: (steps·3N)³, so a GPMin run that wanders at 20 atoms can take tens of minutes; past this many steps it fails.
GPMIN_MAX_STEPS = 100
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "data" / "unseen_families_baselines"


class PreconLBFGSExp(PreconLBFGS):
    """ASE's PreconLBFGS with a fresh ``Exp`` preconditioner of its own (the preconditioner keeps state)."""

    def __init__(self, atoms: Atoms, **kwargs: Any) -> None:
        kwargs.setdefault("precon", Exp())
        super().__init__(atoms, **kwargs)


def newton_step(hessian_calc: Any, atoms: Atoms, forces: np.ndarray, max_step: float = 0.3) -> np.ndarray:
    """Newton's step H⁻¹F on the exact Hessian's eigenvectors with |eigenvalue| (a negative curvature is walked down,
    not up; the three zero modes of rigid translation are left out), scaled so that no atom moves more than
    ``max_step`` Å.

    :param hessian_calc: a calculator with ``get_hessian(atoms, format="dense")`` (matscipy's EAM).
    """
    hessian = np.asarray(hessian_calc.get_hessian(atoms, format="dense"), dtype=float)
    values, vectors = np.linalg.eigh(0.5 * (hessian + hessian.T))
    keep = np.argsort(np.abs(values))[3:]  # drop the three translations
    coefficients = vectors[:, keep].T @ forces.ravel()
    step = (vectors[:, keep] @ (coefficients / np.abs(values[keep]))).reshape(-1, 3)
    longest = float(np.linalg.norm(step, axis=1).max())
    return step * (max_step / longest) if longest > max_step else step


class NewtonRelaxer(Relaxer):
    """Newton's method with the exact EAM Hessian (matscipy, not counted) and the counted LAMMPS forces.

    Each step solves H·dx = F on the Hessian's eigenvectors with |eigenvalue| (a negative curvature is walked
    down, not up; the three zero modes of rigid translation are left out) and scales the step so that no atom
    moves more than ``max_step``.
    """

    name = "Newton (exact Hessian)"
    fmax_independent = True

    def __init__(self, max_step: float = 0.3, potential: str | None = None) -> None:
        self.max_step = max_step
        self.hessian_calc = matscipy_eam() if potential is None else matscipy_eam(potential)

    def relax(self, start: Atoms, calculator: CalculatorSpec | ForceCallCounter, fmax: float, max_steps: int) -> RelaxResult:
        return self.relax_thresholds(start, calculator, [fmax], max_steps)[fmax]

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

        def record(target: float, converged: bool, steps: int, energy: float, forces: np.ndarray) -> None:
            final = work.copy()
            results[target] = RelaxResult(
                target, converged, counter.force_calls, steps, max_force(forces), energy, final, time.perf_counter() - t0
            )

        steps = 0
        while True:
            energy, forces = counter.evaluate(work)
            current = max_force(forces)
            while pending and current < pending[0]:
                record(pending.pop(0), True, steps, energy, forces)
            if not pending or steps >= max_steps:
                break
            work.positions = work.positions + newton_step(self.hessian_calc, work, forces, self.max_step)
            steps += 1
        for target in pending:
            record(target, False, steps, energy, forces)
        return results


def make_optimizers(names: list[str], newton: bool) -> list[Relaxer]:
    """The relaxers by name; ``PreconLBFGS`` is built here with ``Exp``, the rest from the package's table."""
    relaxers: list[Relaxer] = []
    for name in names:
        if name == "PreconLBFGS":
            # Its path ignores ε (the Armijo line search does not look at it): one run answers both thresholds.
            relaxers.append(ASEOptimizerRelaxer("PreconLBFGS(Exp)", PreconLBFGSExp, True))
        else:
            relaxers.append(OPTIMIZERS[name]())
    if newton:
        relaxers.append(NewtonRelaxer())
    return relaxers


def run_family(
    family: EvaluationFamily, relaxers: list[Relaxer], newton_max_atoms: int, gpmin_starts: int | None, gpmin_max_atoms: int
) -> list[dict[str, Any]]:
    """One row per (optimizer, start, ε); GPMin on the first ``gpmin_starts`` starts only (``None``: all)."""
    counter = ForceCallCounter(make_calculator("lammps"))
    rows = []
    for relaxer in relaxers:
        if relaxer.name == "GPMin" and family.max_atoms > gpmin_max_atoms:
            continue
        if isinstance(relaxer, NewtonRelaxer) and family.max_atoms > newton_max_atoms:
            continue
        t0 = time.perf_counter()
        starts = family.starts[:gpmin_starts] if relaxer.name == "GPMin" else family.starts
        for start in starts:
            max_steps = GPMIN_MAX_STEPS if relaxer.name == "GPMin" else MAX_CALLS
            results = relaxer.relax_thresholds(start, counter, FMAXES, max_steps)
            for fmax in FMAXES:
                result = results[fmax]
                rows.append(
                    {
                        "family": family.name,
                        "optimizer": relaxer.name,
                        "fmax": fmax,
                        "cell": start.info["name"],
                        "start_seed": start.info["start_seed"],
                        "n_atoms": len(start),
                        "converged": bool(result.converged),
                        "success": bool(result.converged and result.force_calls <= MAX_CALLS),
                        "force_calls": int(result.force_calls),
                        "final_fmax": float(result.fmax),
                        "final_energy": float(result.energy),
                        "wall_time": float(result.wall_time),
                        "error": result.error,
                    }
                )
        print(f"  {relaxer.name:<24s} {time.perf_counter() - t0:7.1f} s", flush=True)
    return rows


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (family, optimizer, ε): runs, success rate, force calls (median, p10, p90, mean) and wall time."""
    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["family"], row["optimizer"], row["fmax"]), []).append(row)
    summary = []
    for (family, optimizer, fmax), members in groups.items():
        calls = np.array([r["force_calls"] for r in members if r["success"]], dtype=float)
        wall = np.array([r["wall_time"] for r in members if r["success"]], dtype=float)
        has = len(calls) > 0
        summary.append(
            {
                "family": family,
                "optimizer": optimizer,
                "fmax": fmax,
                "n": len(members),
                "success": len(calls) / len(members),
                "median": float(np.median(calls)) if has else math.nan,
                "p10": float(np.percentile(calls, 10)) if has else math.nan,
                "p90": float(np.percentile(calls, 90)) if has else math.nan,
                "mean": float(calls.mean()) if has else math.nan,
                "wall_ms": 1e3 * float(np.median(wall)) if has else math.nan,
            }
        )
    return summary


def _number(value: float, digits: int = 1) -> str:
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


def markdown(
    summary: list[dict[str, Any]],
    families: list[EvaluationFamily],
    command: str,
    elapsed: float,
    gpmin_starts: int | None,
    gpmin_max_atoms: int,
) -> str:
    gpmin_text = "starts" if gpmin_starts is None else f"{gpmin_starts} starts"
    lines = [
        "# Classical baselines on the unseen test families",
        "",
        f"Split: **{families[0].split}**. Produced by (from the repository root, {elapsed / 60:.1f} min on this machine's "
        f"shared CPU, {platform.processor() or platform.machine()}):",
        "",
        "```",
        command,
        "```",
        "",
        "Fixed-cell relaxation with the Mendelev Al–Fe EAM (LAMMPS). Force calls: energy+forces evaluations at new "
        f"geometries, the start and line-search trials included. Success: ε reached within {MAX_CALLS} force calls; "
        "median, p10–p90 and mean are over successful runs; wall time is the median per successful relaxation "
        "(the optimizer's own cost included). GPMin runs only on families of at most "
        f"{gpmin_max_atoms} atoms, on the first {gpmin_text} of each (its Gaussian-process fit costs seconds "
        "per relaxation at 16–20 atoms; the column n says how many runs a row holds), and stops after "
        f"{GPMIN_MAX_STEPS} steps (a run not converged by then fails: its fit grows as (steps·3N)³). "
        "PreconLBFGS(Exp): `PreconLBFGS(atoms, precon=Exp())`, μ estimated by ASE at the start (its extra force "
        "call counted). Newton (exact Hessian): calibration only, the matscipy EAM Hessian "
        "is not counted, steps capped at 0.3 Å per atom.",
        "",
        "## Families",
        "",
        "| family | cells | starts | atoms | description | left out |",
        "|---|--:|--:|--:|---|---|",
    ]
    for family in families:
        sizes = sorted({len(start) for start in family.starts})
        span = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]}"
        left = "; ".join(family.dropped) if family.dropped else "none"
        lines.append(
            f"| {family.name} | {len(family.cells)} | {len(family.starts)} | {span} | {family.description} | {left} |"
        )
    for fmax in FMAXES:
        lines += [
            "",
            f"## ε = {fmax:g} eV/Å",
            "",
            "| family | optimizer | n | median | p10–p90 | mean | success | wall (ms) | ratio to best median |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for family in families:
            block = [s for s in summary if s["family"] == family.name and s["fmax"] == fmax]
            classical = [s for s in block if not s["optimizer"].startswith("Newton") and s["success"] == 1.0]
            best = min((s["median"] for s in classical), default=math.nan)
            for s in block:
                ratio = s["median"] / best if best == best and s["median"] == s["median"] else math.nan
                lines.append(
                    f"| {family.name} | {s['optimizer']} | {s['n']} | {_number(s['median'])} | "
                    f"{_number(s['p10'])}–{_number(s['p90'])} | {_number(s['mean'])} | {s['success']:.0%} | "
                    f"{_number(s['wall_ms'])} | {_number(ratio, 2)} |"
                )
    lines += [
        "",
        "Ratio to best: median force calls over the smallest median among the classical optimizers that "
        "converged on every start of the family (Newton excluded).",
        "",
    ]
    return "\n".join(lines)


def plot(summary: list[dict[str, Any]], families: list[EvaluationFamily], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    optimizers = list(dict.fromkeys(s["optimizer"] for s in summary))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(len(FMAXES), 1, figsize=(max(10, 1.3 * len(families) * len(optimizers) / 4), 4.2 * len(FMAXES)))
    width = 0.8 / len(optimizers)
    for ax, fmax in zip(np.atleast_1d(axes), FMAXES, strict=True):
        for j, optimizer in enumerate(optimizers):
            for i, family in enumerate(families):
                found = [
                    s for s in summary if s["family"] == family.name and s["optimizer"] == optimizer and s["fmax"] == fmax
                ]
                if not found or math.isnan(found[0]["median"]):
                    continue
                s = found[0]
                x = i + (j - (len(optimizers) - 1) / 2) * width
                ax.bar(x, s["median"], width, color=colours[j % len(colours)], label=optimizer if i == 0 else None)
                ax.errorbar(x, s["median"], yerr=[[s["median"] - s["p10"]], [s["p90"] - s["median"]]], color="k", lw=0.8)
        ax.set_xticks(range(len(families)), [f.name for f in families], rotation=25, ha="right", fontsize="small")
        ax.set_yscale("log")
        ax.set_ylabel("force calls (median, p10–p90)")
        ax.set_title(f"ε = {fmax:g} eV/Å, {families[0].split} split")
        ax.grid(True, axis="y", which="both", alpha=0.3)
    handles, labels = np.atleast_1d(axes)[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 8), fontsize="small")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=SPLITS, default="validation")
    # the Al–Fe families (this script relaxes with the LAMMPS EAM; the Cu–Au ones are EMT's)
    alfe = [name for name, spec in FAMILIES.items() if spec.calculator == "lammps"]
    parser.add_argument("--families", nargs="+", choices=alfe, default=alfe)
    choices = ["BFGS", "LBFGS", "BFGSLineSearch", "FIRE", "GPMin", "PreconLBFGS", "CG"]
    parser.add_argument("--optimizers", nargs="+", choices=choices, default=choices)
    parser.add_argument("--newton", action="store_true", help="add Newton's method with the exact EAM Hessian")
    parser.add_argument("--gpmin-max-atoms", type=int, default=GPMIN_MAX_ATOMS, help="GPMin only on families up to this size")
    parser.add_argument("--newton-max-atoms", type=int, default=8, help="Newton only on families up to this size")
    parser.add_argument(
        "--gpmin-starts",
        type=int,
        default=8,
        help="GPMin on the first starts of each family only (0: all); it costs seconds per run",
    )
    parser.add_argument("--n-cells", type=int, default=None, help="first cells of each family only (quick checks)")
    parser.add_argument("--no-training-check", action="store_true", help="skip the StructureMatcher check")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output path without suffix")
    args = parser.parse_args(argv)
    command = "python benchmarks/unseen_families.py " + shlex.join(sys.argv[1:] if argv is None else argv)

    t_start = time.perf_counter()
    training = None
    if not args.no_training_check:
        training = list(StructureDataset(TRAINING, saddles="escape"))
        print(f"training cells for the overlap check: {len(training)}", flush=True)
    relaxers = make_optimizers(args.optimizers, args.newton)
    families, rows = [], []
    for name in args.families:
        t0 = time.perf_counter()
        n_cells = None if args.n_cells is None else min(args.n_cells, FAMILIES[name].n_cells)
        family = test_family(name, args.split, training=training, n_cells=n_cells)
        families.append(family)
        print(f"{name}: {len(family.cells)} cells, {len(family.starts)} starts, built in {time.perf_counter() - t0:.1f} s")
        for note in family.dropped:
            print(f"  left out: {note}")
        rows += run_family(family, relaxers, args.newton_max_atoms, args.gpmin_starts or None, args.gpmin_max_atoms)
    elapsed = time.perf_counter() - t_start
    summary = summarize(rows)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv"), "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out.with_suffix(".md").write_text(
        markdown(summary, families, command, elapsed, args.gpmin_starts or None, args.gpmin_max_atoms), encoding="utf-8"
    )
    plot(summary, families, out.with_suffix(".png"))
    print(f"wrote {out}.md/.png/.csv in {elapsed / 60:.1f} min")


if __name__ == "__main__":
    main()
