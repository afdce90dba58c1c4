#!/usr/bin/env python
# ruff: noqa: E402  (the thread settings below come before numpy is imported)
"""Variable-cell relaxation benchmark (issue 15 §1): force calls to relax atoms and cell through ``FrechetCellFilter``.

Usage::

    python benchmarks/cell_relaxation.py                          # the documented run (about 15 min on 2 cores)
    python benchmarks/cell_relaxation.py --groups b2_2 --starts-per-cell 2 --out results/cell_quick   # a quick look
    python benchmarks/cell_relaxation.py --split test             # the one-time test-split report

**Starts.** Fixed before the run and drawn from the *validation* split only
(:func:`sb3_crystal.structures.families.test_family`), or with ``--split test`` from the *test* split only (the same
recipe with the test split's cells and master seeds; for the final report, never for choosing anything):

- ``random_4-8``: the first cells of ``random_4-8_beta0.3`` (random Al–Fe cells of 4–8 atoms, fixed-cell minima);
- ``b2_defect_16`` and ``bcc_solid_solution_16``: the first cells of those families (ideal sites);
- ``b2_2`` and ``b2_16``: B2 AlFe, the 2-atom cell and the 2×2×2 supercell of 16 atoms, at the potential's
  lattice constant (:class:`~sb3_crystal.structures.generators.SolidSolutionGenerator`).

Each cell gets ``--starts-per-cell`` starts: a volume change ``v ~ U(−5 %, +5 %)``, a symmetric shear with
off-diagonal strains ``ε_yz, ε_xz, ε_xy ~ U(−3 %, +3 %)`` (the deformation ``s·(I + ε)`` with ``s`` chosen so that
the volume changes by exactly ``v``; atoms follow the cell), then a rattle ``0.05·U(−1, 1)`` Å per coordinate
(:func:`~sb3_crystal.structures.geometry.distort`, no two atoms closer than 1.5 Å). Start ``k`` of cell ``j`` of a
group draws ``v``, then ``ε``, then the rattle from ``default_rng(SeedSequence(S, spawn_key=(15, g, j, k)))``, where
``S`` is the validation (or test) master seed of the group's family (:func:`~sb3_crystal.structures.families.family_seed`;
``b2_defect_16``'s for the two B2 groups) and ``g`` is 0 for a family's own cells, 1 for ``b2_2`` and 2 for
``b2_16``; the spawn key keeps these draws apart from the family's own cells and starts, which use other keys.

**Optimizers**, all on ``FrechetCellFilter(atoms)`` with ASE's defaults: FIRE, BFGS, BFGSLineSearch, LBFGS,
GPMin (cells of at most 20 atoms), and the package's :class:`~sb3_crystal.relax.RLOptimizer` (the agent alone)
and :class:`~sb3_crystal.relax.HybridOptimizer` (agent, then a classical finisher; its defaults) with two agents:
the zero-action residual agent (``zero_action_agent`` of ``pipelines/train_history_agent.py``: the observation's
L-BFGS proposal, trust region on) and the shipped default agent (what ``model=None`` loads, loaded once). Through
a filter these move the atoms with the agent and the cell with an L-BFGS step (:mod:`sb3_crystal.relax.filters`).
:class:`~sb3_crystal.relax.LearnedCurvature` moves atoms and cell together with the learned Hessian's step in the
filter's coordinates (:func:`sb3_crystal.curvature.cell_curvature_step`, the shipped cell model).

**Counting.** The structure's calculator is one :class:`~sb3_crystal.calculators.ForceCallCounter` around the
LAMMPS Mendelev Al–Fe EAM, reset before each run: a force call is one energy+forces+stress evaluation at a
geometry not seen before (the start and line-search trials included). A run succeeds when every row of the
filter's generalised forces (atoms in eV/Å, cell rows in the filter's units) is at most ``--fmax`` within
``--max-calls`` force calls; a failure (budget spent, agent stalled, optimizer error) counts in the statistics at
the budget, so medians and means never drop a start.

**Test split.** Before any relaxation every cell is compared with pymatgen's ``StructureMatcher`` (the settings of
``fit_curvature.py``'s check) with the shipped curvature models' fitting structures, rebuilt by
``benchmarks/fit_curvature.py`` (:func:`check_cells`, under a minute); a matching cell is left out of the run and
named on the page, which also lists the cells matching the validation split's cells and every failed run.

Writes ``<out>.md`` (tables, command, seeds), ``<out>.csv`` (one row per run) and ``<out>.png``; by default
``docs/data/cell_relaxation`` (validation) or ``docs/data/cell_relaxation_test`` (test).
"""

from __future__ import annotations

import os

# One BLAS/OpenMP thread, set before numpy loads: the filter's 3×3 matrix functions (expm, logm) on a
# multithreaded BLAS only spin, 20–40× slower on a shared CPU, and the EAM cells are small.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse
import csv
import math
import platform
import shlex
import sys
import time
import warnings
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS, FIRE, LBFGS, BFGSLineSearch, GPMin
from ase.optimize.optimize import Optimizer

from sb3_crystal.benchmark.classical import RELAXATION_FAILURES
from sb3_crystal.calculators import ForceCallCounter, make_calculator
from sb3_crystal.relax import CrystalAgent, HybridOptimizer, LearnedCurvature, RLOptimizer
from sb3_crystal.relax.agent_io import load_default_agent
from sb3_crystal.structures.families import SPLITS, START_MIN_DISTANCE, family_seed, test_family, training_matches
from sb3_crystal.structures.generators import SolidSolutionGenerator
from sb3_crystal.structures.geometry import distort

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines"))  # the shipped agents' training pipelines
from train_history_agent import zero_action_agent

#: Spawn-key prefix of this benchmark's start draws (the issue's number).
SPAWN_PREFIX = 15
FMAX = 0.05
MAX_CALLS = 500
GPMIN_MAX_ATOMS = 20
VOLUME_CHANGE = 0.05
SHEAR = 0.03
RATTLE = 0.05
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "data" / "cell_relaxation"
DEFAULT_TEST_OUT = DEFAULT_OUT.with_name("cell_relaxation_test")

CLASSICAL: dict[str, type[Optimizer]] = {
    "FIRE": FIRE,
    "BFGS": BFGS,
    "BFGSLineSearch": BFGSLineSearch,
    "LBFGS": LBFGS,
    "GPMin": GPMin,
}
#: The package's relaxers: (name, optimizer class, agent key, extra arguments). "patience off" is the agent alone
#: without its stall stop (``patience=None``), to tell the stall rule's failures from the method's.
PACKAGE: tuple[tuple[str, type, str, dict[str, Any]], ...] = (
    ("RL (zero-action)", RLOptimizer, "zero", {}),
    ("RL (zero-action, patience off)", RLOptimizer, "zero", {"patience": None}),
    ("Hybrid (zero-action)", HybridOptimizer, "zero", {}),
    ("RL (shipped agent)", RLOptimizer, "shipped", {}),
    ("Hybrid (shipped agent)", HybridOptimizer, "shipped", {}),
    ("LearnedCurvature", LearnedCurvature, "", {}),
)
OPTIMIZER_NAMES: tuple[str, ...] = (*CLASSICAL, *(entry[0] for entry in PACKAGE))


@dataclass(frozen=True)
class Group:
    """A set of cells whose starts the tables summarise together.

    :param name: group name (a table row).
    :param family: the validation family whose master seed the starts derive from.
    :param variant: second entry of the spawn key (0: the family's own cells; 1, 2: the B2 cells).
    :param description: one line for the table of starts.
    :param n_cells: cells taken (the family's first cells; 1 for the B2 cells).
    """

    name: str
    family: str
    variant: int
    description: str
    n_cells: int


GROUPS: dict[str, Group] = {
    group.name: group
    for group in (
        Group("random_4-8", "random_4-8_beta0.3", 0, "random Al–Fe cells, 4–8 atoms, fixed-cell minima", 8),
        Group("b2_defect_16", "b2_defect_16", 0, "B2 AlFe 2×2×2, one vacancy or antisite, ideal sites", 6),
        Group("bcc_solid_solution_16", "bcc_solid_solution_16", 0, "bcc Fe–Al, Al 0.1–0.5, 2×2×2, ideal sites", 6),
        Group("b2_2", "b2_defect_16", 1, "B2 AlFe, 2 atoms, the potential's lattice constant", 1),
        Group("b2_16", "b2_defect_16", 2, "B2 AlFe 2×2×2, 16 atoms, the potential's lattice constant", 1),
    )
}


def group_cells(group: Group, n_cells: int | None = None, split: str = "validation") -> list[Atoms]:
    """The cells of a group (the first ``n_cells``, default the group's), each with ``info["name"]``.

    :param split: the family split the cells come from (the B2 cells have no random draw: the same in both).
    """
    count = group.n_cells if n_cells is None else min(int(n_cells), group.n_cells)
    if group.variant == 0:
        cells = test_family(group.family, split, n_cells=count).cells
    else:
        size = 1 if group.name == "b2_2" else 2
        cell = SolidSolutionGenerator("b2", size=size, rattle=0.0).ideal(np.random.default_rng(0))  # no random draw
        cell.info["name"] = f"{group.name}[0]"
        cells = [cell]
    return [cell for cell in cells[:count]]


def strained_start(cell: Atoms, rng: np.random.Generator) -> tuple[Atoms, float, np.ndarray]:
    """A start: ``cell`` under a random volume change and symmetric shear, then rattled.

    :return: the start (no calculator), the volume change and the off-diagonal strains (yz, xz, xy).
    """
    volume_change = float(rng.uniform(-VOLUME_CHANGE, VOLUME_CHANGE))
    shear = rng.uniform(-SHEAR, SHEAR, 3)
    strain = np.eye(3)
    strain[1, 2] = strain[2, 1] = shear[0]
    strain[0, 2] = strain[2, 0] = shear[1]
    strain[0, 1] = strain[1, 0] = shear[2]
    scale = ((1.0 + volume_change) / np.linalg.det(strain)) ** (1.0 / 3.0)
    strained = cell.copy()
    strained.calc = None
    strained.set_cell(np.array(cell.cell) @ (scale * strain), scale_atoms=True)
    start = distort(strained, RATTLE, rng, min_distance=START_MIN_DISTANCE)
    return start, volume_change, shear


def group_starts(group: Group, starts_per_cell: int, n_cells: int | None = None, split: str = "validation") -> list[Atoms]:
    """The starts of a group (see the module docstring), with ``info`` naming cell, seed, volume change and shear.

    :param split: ``"validation"`` or ``"test"``: the split of the cells and of the master seed ``S``.
    """
    base = family_seed(group.family, split)
    starts = []
    for j, cell in enumerate(group_cells(group, n_cells, split)):
        for k in range(starts_per_cell):
            key = (SPAWN_PREFIX, group.variant, j, k)
            start, volume_change, shear = strained_start(
                cell, np.random.default_rng(np.random.SeedSequence(base, spawn_key=key))
            )
            start.info = {
                "group": group.name,
                "cell": cell.info.get("name", f"{group.name}[{j}]"),
                "start": k,
                "seed": f"{base}/{'.'.join(map(str, key))}",
                "volume_change": volume_change,
                "max_shear": float(np.abs(shear).max()),
            }
            starts.append(start)
    return starts


def fitting_sets(left_out: bool = False) -> list[tuple[str, Atoms]]:
    """The structures the shipped curvature models were fitted to, as ``benchmarks/fit_curvature.py`` builds them,
    each named: the atoms-only model's (``alfe_pair_model.json``: the distorted structures), the cell model's
    (``alfe_cell_model.json``: the same structures under their homogeneous deformations) and the undistorted cells
    both were made from (the fit's own family check compares those too).

    :param left_out: instead, the structures the fits left out (their family check against the validation and
        test family cells, recorded in each model's ``info``), to show that check at work. Without it the count
        that remains is checked against the models' ``n_fit + n_held_out``.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import fit_curvature as fit

    from sb3_crystal.curvature import load_cell_model, load_model

    structures = fit.training_structures(1.0)
    out: list[tuple[str, Atoms]] = []
    for label, model in (("atoms model", load_model()), ("cell model", load_cell_model())):
        info = model.info
        dropped = {int(note.split()[2]) for note in info["family_check"]["matches_left_out"]}
        kept = [k for k in range(len(structures)) if (k in dropped) == left_out]
        if not left_out and len(kept) != info["n_fit"] + info["n_held_out"]:
            raise RuntimeError(
                f"{label}: {len(kept)} fitting structures rebuilt, the model file says "
                f"{info['n_fit'] + info['n_held_out']}: fit_curvature.py no longer builds what the model was fitted to"
            )
        what = "left out of the fit" if left_out else "fitting structure"
        for k in kept:
            source, atoms, reference = structures[k]
            if label == "cell model":
                atoms = fit.strained(atoms, fit._rng(fit.STRAIN_OFFSET + k))
            out.append((f"{label}: {what} {k} ({source})", atoms))
            if label == "atoms model":  # the cell model's are the same cells
                out.append((f"undistorted cell of {what} {k} ({source})", reference))
    return out


def fitting_matches(cells: Sequence[Atoms], others: Sequence[tuple[str, Atoms]]) -> dict[str, list[str]]:
    """Cell name → the names of the structures of ``others`` (e.g. :func:`fitting_sets`) that pymatgen's
    ``StructureMatcher`` calls the same structure (:func:`~sb3_crystal.structures.families.training_matches`, the
    tolerances of the fits' own check: volume scaled, primitive cells); cells with no match are absent."""
    matches: dict[str, list[str]] = {}
    for i, k in training_matches(cells, [atoms for _, atoms in others]):
        matches.setdefault(cells[i].info["name"], []).append(others[k][0])
    return matches


@dataclass
class FitCheck:
    """What :func:`check_cells` found for the cells of a split.

    :param cells: the cells checked, by name.
    :param n_fitting: structures compared (both models' fitting structures and their undistorted cells).
    :param fitted: cell → matching fitting structures (these cells are left out of the run).
    :param n_left_out: structures the fits left out by their own family check.
    :param left_out: cell → matching structures among those left out (the fits' check at work; not a problem).
    :param validation: cell → matching cells of the validation split's groups (the starts the method was
        developed on; listed, not left out).
    :param seconds: time the check took.
    """

    cells: list[str]
    n_fitting: int
    fitted: dict[str, list[str]]
    n_left_out: int
    left_out: dict[str, list[str]]
    validation: dict[str, list[str]]
    seconds: float


def check_cells(groups: Sequence[Group], split: str, n_cells: int | None = None) -> FitCheck:
    """Compare every cell of ``groups`` in ``split`` with the curvature models' fitting structures
    (:func:`fitting_sets`), with the structures the fits left out, and with the validation split's cells."""
    t0 = time.perf_counter()
    cells = [cell for group in groups for cell in group_cells(group, n_cells, split)]
    fitting = fitting_sets()
    dropped = fitting_sets(left_out=True)
    validation = [
        (f"validation:{cell.info['name']}", cell) for group in groups for cell in group_cells(group, n_cells, "validation")
    ]
    return FitCheck(
        cells=[cell.info["name"] for cell in cells],
        n_fitting=len(fitting),
        fitted=fitting_matches(cells, fitting),
        n_left_out=len(dropped),
        left_out=fitting_matches(cells, dropped),
        validation=fitting_matches(cells, validation),
        seconds=time.perf_counter() - t0,
    )


def make_optimizer(name: str, filt: FrechetCellFilter, agents: dict[str, CrystalAgent]) -> Optimizer:
    """Optimizer ``name`` of :data:`OPTIMIZER_NAMES` on ``filt``, logging nowhere."""
    if name in CLASSICAL:
        return CLASSICAL[name](filt, logfile=None)
    for package_name, cls, agent, kwargs in PACKAGE:
        if package_name == name:
            if not agent:  # a relaxer with no agent
                return cls(filt, logfile=None, **kwargs)
            return cls(filt, model=agents[agent], logfile=None, **kwargs)
    raise ValueError(f"unknown optimizer {name!r}: choose from {', '.join(OPTIMIZER_NAMES)}")


def generalised_fmax(filt: FrechetCellFilter) -> float:
    """Largest row norm of the filter's generalised forces (what its optimizers converge on)."""
    return float(np.linalg.norm(filt.get_forces(), axis=1).max())


def relax_start(
    start: Atoms,
    name: str,
    counter: ForceCallCounter,
    agents: dict[str, CrystalAgent],
    fmax: float = FMAX,
    max_calls: int = MAX_CALLS,
) -> dict[str, Any]:
    """Relax one start with one optimizer through ``FrechetCellFilter``; :return: one CSV row.

    The run stops when the filter has converged, or when ``max_calls`` force calls are spent (one step may overrun
    the budget: it then fails), or when the optimizer stops or raises. ``optimizer_calls`` is what the package's
    relaxers report themselves (``-1`` for ASE's), to check against the counter.
    """
    atoms = start.copy()
    counter.reset()
    atoms.calc = counter
    filt = FrechetCellFilter(atoms)
    error, stop, optimizer = "", "", None
    converged = False
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the agents' stall notes and calculator notes: recorded in `stop`
            optimizer = make_optimizer(name, filt, agents)
            for converged in optimizer.irun(fmax=fmax, steps=max_calls):
                if converged or counter.force_calls >= max_calls:
                    break
    except RELAXATION_FAILURES as err:
        error, converged = f"{type(err).__name__}: {err}".replace("\n", " ")[:200], False
    wall = time.perf_counter() - t0
    calls = counter.force_calls
    final_fmax = generalised_fmax(filt)  # the geometry was evaluated: no new call
    if isinstance(optimizer, RLOptimizer):
        stop = optimizer.stop_reason or ""
    elif isinstance(optimizer, HybridOptimizer):
        stop = f"handover {optimizer.handover_reason} after {optimizer.agent_steps}" if optimizer.handover_reason else ""
    stress = atoms.get_stress()
    return {
        "group": start.info["group"],
        "optimizer": name,
        "cell": start.info["cell"],
        "start": start.info["start"],
        "seed": start.info["seed"],
        "n_atoms": len(atoms),
        "volume_change": round(float(start.info["volume_change"]), 6),
        "max_shear": round(float(start.info["max_shear"]), 6),
        "converged": bool(converged and final_fmax <= fmax),
        "success": bool(converged and final_fmax <= fmax and calls <= max_calls),
        "force_calls": int(calls),
        "optimizer_calls": int(getattr(optimizer, "force_calls", -1)),
        "steps": int(getattr(optimizer, "nsteps", 0)),
        "final_fmax": float(final_fmax),
        "final_max_stress_GPa": float(np.abs(stress).max() * 160.21766),
        "final_volume_ratio": float(atoms.get_volume() / start.get_volume()),
        "final_energy_per_atom": float(atoms.get_potential_energy() / len(atoms)),
        "wall_s": float(wall),
        "stop": stop,
        "error": error,
    }


def run(
    groups: Sequence[Group],
    optimizers: Sequence[str],
    starts_per_cell: dict[str, int],
    n_cells: int | None = None,
    fmax: float = FMAX,
    max_calls: int = MAX_CALLS,
    gpmin_max_atoms: int = GPMIN_MAX_ATOMS,
    progress: Callable[[str], None] | None = print,
    split: str = "validation",
    skip_cells: Collection[str] = (),
) -> tuple[list[dict[str, Any]], list[list[Atoms]]]:
    """Every start of every group with every optimizer of ``optimizers`` (names of :data:`OPTIMIZER_NAMES`).

    The shipped agent is loaded once; the zero-action agent is built per group with ``n_max`` the group's
    largest cell (its observation slots; the zero action does not depend on them).

    :param split: the split of the cells and seeds (:func:`group_starts`).
    :param skip_cells: names of cells whose starts are left out (cells that match a fitting structure).
    :return: the rows (:func:`relax_start`) and the starts of each group.
    """
    unknown = [name for name in optimizers if name not in OPTIMIZER_NAMES]
    if unknown:
        raise ValueError(f"unknown optimizer(s) {', '.join(map(repr, unknown))}: choose from {', '.join(OPTIMIZER_NAMES)}")
    wanted = {agent for name, _, agent, _ in PACKAGE if name in optimizers}
    shipped = load_default_agent() if "shipped" in wanted else None
    counter = ForceCallCounter(make_calculator("lammps"))
    all_starts, rows = [], []
    for group in groups:
        t0 = time.perf_counter()
        starts = [
            start
            for start in group_starts(group, starts_per_cell[group.name], n_cells, split)
            if start.info["cell"] not in skip_cells
        ]
        if not starts:
            raise ValueError(f"group {group.name}: every cell is in skip_cells, no start left")
        all_starts.append(starts)
        n_max = max(len(start) for start in starts)
        agents: dict[str, CrystalAgent] = {} if shipped is None else {"shipped": shipped}
        if "zero" in wanted:
            agents["zero"] = zero_action_agent(n_max)
        if progress:
            progress(f"{group.name}: {len(starts)} starts of {min(len(s) for s in starts)}–{n_max} atoms")
        for start in starts:
            t1 = time.perf_counter()
            cells = []
            for name in optimizers:
                if name == "GPMin" and len(start) > gpmin_max_atoms:
                    continue
                row = relax_start(start, name, counter, agents, fmax, max_calls)
                rows.append(row)
                cells.append(f"{name} {row['force_calls']}{'' if row['success'] else '✗'}")
                if row["error"] and progress:
                    progress(f"    {name} failed: {row['error']}")
            if progress:
                progress(
                    f"  {start.info['cell']} #{start.info['start']} ({time.perf_counter() - t1:5.1f} s): " + ", ".join(cells)
                )
        if progress:
            progress(f"  {group.name} done in {time.perf_counter() - t0:.1f} s")
    return rows, all_starts


#: A converged run whose final energy lies more than this above the lowest one a converged classical optimizer
#: reached from the same start ended in a higher minimum, meV/atom.
HIGHER_MINIMUM = 5.0


def minimum_gaps(rows: list[dict[str, Any]]) -> list[float]:
    """Per row: final energy minus the lowest final energy of a converged classical run from the same start,
    meV/atom (NaN when the row did not converge or no classical run did)."""
    lowest: dict[tuple[str, str, int], float] = {}
    for row in rows:
        if row["optimizer"] in CLASSICAL and row["success"]:
            key = (row["group"], row["cell"], int(row["start"]))
            lowest[key] = min(lowest.get(key, math.inf), float(row["final_energy_per_atom"]))
    gaps = []
    for row in rows:
        reference = lowest.get((row["group"], row["cell"], int(row["start"])))
        ok = row["success"] and reference is not None
        gaps.append(1e3 * (float(row["final_energy_per_atom"]) - reference) if ok else math.nan)  # type: ignore[operator]
    return gaps


def summarize(rows: list[dict[str, Any]], max_calls: int = MAX_CALLS) -> list[dict[str, Any]]:
    """Per (group, optimizer): runs, converged fraction, force calls with failures at ``max_calls`` (median,
    p10, p90, mean), median wall time, and the fraction of converged runs that ended in a higher minimum than the
    classical optimizers' lowest from the same start (:data:`HIGHER_MINIMUM`)."""
    groups: dict[tuple[str, str], list[tuple[dict[str, Any], float]]] = {}
    for row, gap in zip(rows, minimum_gaps(rows), strict=True):
        groups.setdefault((row["group"], row["optimizer"]), []).append((row, gap))
    summary = []
    for (group, optimizer), members in groups.items():
        calls = np.array([r["force_calls"] if r["success"] else max_calls for r, _ in members], dtype=float)
        gaps = np.array([gap for _, gap in members if not math.isnan(gap)])
        summary.append(
            {
                "group": group,
                "optimizer": optimizer,
                "n": len(members),
                "converged": float(np.mean([r["success"] for r, _ in members])),
                "median": float(np.median(calls)),
                "p10": float(np.percentile(calls, 10)),
                "p90": float(np.percentile(calls, 90)),
                "mean": float(calls.mean()),
                "wall_ms": 1e3 * float(np.median([r["wall_s"] for r, _ in members])),
                "higher_minimum": float(np.mean(gaps > HIGHER_MINIMUM)) if len(gaps) else math.nan,
            }
        )
    return summary


def best_classical(block: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The classical optimizer with the smallest median among those converged on every start (else among all)."""
    classical = [s for s in block if s["optimizer"] in CLASSICAL]
    complete = [s for s in classical if s["converged"] == 1.0] or classical
    return min(complete, key=lambda s: s["median"], default=None)


def ratios(summary: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    """(group, optimizer) → median force calls over the best classical optimizer's median on that group."""
    out = {}
    for group in dict.fromkeys(s["group"] for s in summary):
        block = [s for s in summary if s["group"] == group]
        best = best_classical(block)
        for s in block:
            out[(group, s["optimizer"])] = s["median"] / best["median"] if best else math.nan
    return out


def _number(value: float, digits: int = 1) -> str:
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


def _percent(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.0%}"


def stop_counts(rows: list[dict[str, Any]], group: str, optimizer: str) -> str:
    """How the runs of one package relaxer on one group ended, e.g. ``"handover stall after 1: 7, stalled: 2"``."""
    counts: dict[str, int] = {}
    for row in rows:
        if row["group"] == group and row["optimizer"] == optimizer:
            what = row["stop"] or ("no handover" if optimizer.startswith("Hybrid") else "no early stop")
            counts[what] = counts.get(what, 0) + 1
    return ", ".join(f"{what}: {n}" for what, n in sorted(counts.items(), key=lambda item: -item[1]))


def higher_than_best(rows: list[dict[str, Any]], summary: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[int, int]]:
    """(group, optimizer) → (converged runs ending more than :data:`HIGHER_MINIMUM` meV/atom above the final energy
    of the group's best classical optimizer (:func:`best_classical`) from the same start, converged runs compared);
    a start counts only where that optimizer converged too."""
    best = {}
    for group in dict.fromkeys(s["group"] for s in summary):
        found = best_classical([s for s in summary if s["group"] == group])
        if found is not None:
            best[group] = found["optimizer"]
    reference = {
        (row["group"], row["cell"], int(row["start"])): float(row["final_energy_per_atom"])
        for row in rows
        if row["success"] and best.get(row["group"]) == row["optimizer"]
    }
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for row in rows:
        energy = reference.get((row["group"], row["cell"], int(row["start"])))
        if not row["success"] or energy is None:
            continue
        higher, compared = out.get((row["group"], row["optimizer"]), (0, 0))
        above = 1e3 * (float(row["final_energy_per_atom"]) - energy) > HIGHER_MINIMUM
        out[(row["group"], row["optimizer"])] = (higher + int(above), compared + 1)
    return out


def _matches_text(matches: dict[str, list[str]]) -> str:
    return "; ".join(
        f"{cell}: {len(found)} ({', '.join(found[:3])}{', …' if len(found) > 3 else ''})" for cell, found in matches.items()
    )


def _test_sections(
    rows: list[dict[str, Any]],
    summary: list[dict[str, Any]],
    groups: Sequence[Group],
    check: FitCheck | None,
    max_calls: int,
) -> list[str]:
    """The test page's extra sections (see :func:`markdown`)."""
    lines = ["", "## Unseen by the curvature fits", ""]
    if check is None:
        lines.append("Not checked in this run (`--no-fit-check`).")
    else:
        lines += [
            f"Every cell of this run ({len(check.cells)}) was compared, before any relaxation, with pymatgen's "
            "`StructureMatcher` (ltol 0.2, stol 0.3, angle_tol 5°, primitive cells, volume scaled: the settings of "
            f"`benchmarks/fit_curvature.py`'s own check) with the {check.n_fitting} structures of the shipped "
            "curvature models' fits (the atoms-only model's fitting structures, their undistorted cells, and the "
            f"cell model's strained fitting structures), rebuilt by `fit_curvature.py` ({check.seconds:.0f} s).",
            "",
            f"- **Cells matching a fitting structure: {len(check.fitted)}**"
            + (f", left out of the run: {_matches_text(check.fitted)}." if check.fitted else "."),
            f"- The fits' own check at work: against the {check.n_left_out} structures the fits left out because they "
            f"matched a validation or test family cell, {len(check.left_out)} of the {len(check.cells)} cells match"
            + (f": {_matches_text(check.left_out)}." if check.left_out else "."),
            f"- Against the validation split's cells of the same groups (the starts the relaxers were developed on; "
            f"listed, not left out): {len(check.validation)} of the {len(check.cells)} cells match"
            + (f": {_matches_text(check.validation)}." if check.validation else "."),
        ]
    higher = higher_than_best(rows, summary)
    ratio = ratios(summary)
    lines += [
        "",
        "## The package's relaxers against the best classical optimizer",
        "",
        "Higher minimum (best): converged runs ending more than "
        f"{HIGHER_MINIMUM:g} meV/atom above the final energy of the group's best classical optimizer from the same "
        "start, of the runs compared (starts where both converged).",
        "",
        "| group | best classical (median) | relaxer | median | ratio | converged | failed | higher minimum (best) |",
        "|---|---|---|--:|--:|--:|--:|--:|",
    ]
    for group in groups:
        block = [s for s in summary if s["group"] == group.name]
        best = best_classical(block)
        best_text = f"{best['optimizer']} ({_number(best['median'])})" if best else "–"
        for s in block:
            if s["optimizer"] in CLASSICAL:
                continue
            k, n = higher.get((group.name, s["optimizer"]), (0, 0))
            failed = round((1.0 - s["converged"]) * s["n"])
            lines.append(
                f"| {group.name} | {best_text} | {s['optimizer']} | {_number(s['median'])} | "
                f"{_number(ratio[(group.name, s['optimizer'])], 2)} | {s['converged']:.0%} | {failed} of {s['n']} | "
                f"{k} of {n} |"
            )
    failures = [row for row in rows if not row["success"]]
    lines += [
        "",
        "## Failed runs",
        "",
        f"Every run that did not converge within {max_calls} force calls ({len(failures)} of {len(rows)}).",
        "",
    ]
    if failures:
        lines += [
            "| group | optimizer | cell | start | force calls | final fmax | stop | error |",
            "|---|---|---|--:|--:|--:|---|---|",
        ]
        for row in failures:
            lines.append(
                f"| {row['group']} | {row['optimizer']} | {row['cell']} | {row['start']} | {row['force_calls']} | "
                f"{float(row['final_fmax']):.3g} | {row['stop'] or '–'} | {row['error'] or '–'} |"
            )
    return lines


def markdown(
    rows: list[dict[str, Any]],
    summary: list[dict[str, Any]],
    groups: Sequence[Group],
    starts: list[list[Atoms]],
    command: str,
    elapsed: float,
    fmax: float,
    max_calls: int,
    gpmin_max_atoms: int,
    split: str = "validation",
    check: FitCheck | None = None,
) -> str:
    """The results page: command, starts, the table per group, the target check.

    Beyond the validation page, a test page (``split`` not ``"validation"``) has the cells' check against the
    curvature fits (``check``), a table of each package relaxer against the group's best classical optimizer
    start by start, and every failed run.
    """
    ratio = ratios(summary)
    lines = [
        "# Variable-cell relaxation through FrechetCellFilter",
        "",
        f"{split.capitalize()} split. Produced by (from the repository root, {elapsed / 60:.1f} min on this machine's "
        f"shared CPU, {platform.processor() or platform.machine()}):",
        "",
        "```",
        command,
        "```",
        "",
        f"Every optimizer relaxes `FrechetCellFilter(atoms)` with the Mendelev Al–Fe EAM (LAMMPS) until every row of "
        f"the filter's generalised forces (atoms and cell) is at most {fmax:g} eV/Å, within {max_calls} force calls "
        "(energy+forces+stress at a new geometry, the start and line-search trials included). ASE's optimizers run "
        f"with ASE's defaults; GPMin only on cells of at most {gpmin_max_atoms} atoms. The package's relaxers: "
        "RL = `RLOptimizer` (the agent alone), Hybrid = `HybridOptimizer` (its defaults: the agent until fmax ≤ 0.1 "
        "or a stall, then the `auto` finisher); through the filter the agent moves the atoms and an L-BFGS step "
        "moves the cell. `LearnedCurvature` moves atoms and cell with one quasi-Newton step of the learned Hessian "
        "over atoms and cell (the shipped cell model) in the filter's coordinates, inside the trust region. "
        "Zero-action: the untrained residual agent (the observation's L-BFGS proposal, trust region "
        "on); shipped: the package's default agent (`model=None`); patience off: `RLOptimizer(..., patience=None)`, "
        "the agent alone without its stall stop. Failures (budget spent, stalled, error) count at "
        f"{max_calls} calls in the median, p10–p90 and mean; converged is the fraction of starts that converged "
        "within the budget. Wall time: median per run, on a CPU shared with other jobs (indicative only).",
        "",
        "## Starts",
        "",
        f"Seeded from the {split} split only (see the script's docstring): start k of cell j of a group is drawn "
        f"from `default_rng(SeedSequence(S, spawn_key=({SPAWN_PREFIX}, g, j, k)))`, S the {split} master seed "
        f"of the group's family (`family_seed(family, '{split}')`), g 0 for a family's own cells, 1 for b2_2, 2 "
        f"for b2_16; volume change U(±{VOLUME_CHANGE:.0%}), off-diagonal strains U(±{SHEAR:.0%}), then a "
        f"{RATTLE:g}·U(−1, 1) Å rattle.",
        "",
        "| group | seed family (S) | cells | starts | atoms | description |",
        "|---|---|--:|--:|--:|---|",
    ]
    for group, group_starts_ in zip(groups, starts, strict=True):
        sizes = sorted({len(s) for s in group_starts_})
        span = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]}"
        n_cells = len({s.info["cell"] for s in group_starts_})
        lines.append(
            f"| {group.name} | {group.family} ({family_seed(group.family, split)}) | {n_cells} | "
            f"{len(group_starts_)} | {span} | {group.description} |"
        )
    lines += [
        "",
        f"## Force calls to fmax {fmax:g} eV/Å (cell included)",
        "",
        "| group | optimizer | n | median | p10–p90 | mean | converged | higher minimum | wall (ms) | ratio to best |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for group in groups:
        block = [s for s in summary if s["group"] == group.name]
        best = best_classical(block)
        for s in block:
            mark = " (best)" if best is not None and s is best else ""
            lines.append(
                f"| {group.name} | {s['optimizer']}{mark} | {s['n']} | {_number(s['median'])} | "
                f"{_number(s['p10'])}–{_number(s['p90'])} | {_number(s['mean'])} | {s['converged']:.0%} | "
                f"{_percent(s['higher_minimum'])} | {_number(s['wall_ms'], 0)} | "
                f"{_number(ratio[(group.name, s['optimizer'])], 2)} |"
            )
    lines += [
        "",
        "Ratio: median force calls over the smallest median among the classical optimizers converged on every start "
        "of the group (marked best). Higher minimum: fraction of the converged runs whose final energy lies more than "
        f"{HIGHER_MINIMUM:g} meV/atom above the lowest final energy a converged classical optimizer reached from the "
        "same start (fewer force calls into a worse minimum is no gain).",
        "",
        "## Target: ≤ 0.8× the best classical optimizer and 100 % converged",
        "",
        "| group | best classical | " + " | ".join(entry[0] for entry in PACKAGE) + " |",
        "|---|---|" + "--:|" * len(PACKAGE),
    ]
    for group in groups:
        block = {s["optimizer"]: s for s in summary if s["group"] == group.name}
        best = best_classical(list(block.values()))
        cells = []
        for name, *_ in PACKAGE:
            s = block.get(name)
            if s is None:
                cells.append("–")
                continue
            r = ratio[(group.name, name)]
            met = "met" if (r <= 0.8 and s["converged"] == 1.0) else "not met"
            cells.append(f"{_number(r, 2)}×, {s['converged']:.0%} ({met})")
        best_text = f"{best['optimizer']} ({_number(best['median'])})" if best else "–"
        lines.append(f"| {group.name} | {best_text} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## How the package's relaxers ended",
        "",
        "RL: `stop_reason` (stalled: `patience` steps without lowering the smallest fmax by 1 %). Hybrid: why and after "
        "how many agent steps it handed over to its classical finisher.",
        "",
        "| group | relaxer | runs |",
        "|---|---|---|",
    ]
    for group in groups:
        for name, *_ in PACKAGE:
            if any(s["group"] == group.name and s["optimizer"] == name for s in summary):
                lines.append(f"| {group.name} | {name} | {stop_counts(rows, group.name, name)} |")
    if split != "validation":
        lines += _test_sections(rows, summary, groups, check, max_calls)
    lines.append("")
    return "\n".join(lines)


def plot(
    summary: list[dict[str, Any]],
    groups: Sequence[Group],
    path: Path,
    max_calls: int = MAX_CALLS,
    split: str = "validation",
) -> None:
    """Bars of median force calls per group and optimizer, p10–p90 whiskers, converged fraction written when < 100 %."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    optimizers = [name for name in OPTIMIZER_NAMES if any(s["optimizer"] == name for s in summary)]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, ax = plt.subplots(figsize=(max(8.0, 0.26 * len(groups) * len(optimizers)), 5.5))
    width = 0.8 / len(optimizers)
    for j, optimizer in enumerate(optimizers):
        for i, group in enumerate(groups):
            found = [s for s in summary if s["group"] == group.name and s["optimizer"] == optimizer]
            if not found:
                continue
            s = found[0]
            x = i + (j - (len(optimizers) - 1) / 2) * width
            hatch = "//" if optimizer not in CLASSICAL else None
            ax.bar(x, s["median"], width, color=colours[j % len(colours)], hatch=hatch, label=optimizer if i == 0 else None)
            ax.errorbar(x, s["median"], yerr=[[s["median"] - s["p10"]], [s["p90"] - s["median"]]], color="k", lw=0.8)
            if s["converged"] < 1.0:
                ax.text(x, 1.1 * max_calls, f"{s['converged']:.0%}", ha="center", va="bottom", fontsize=6, rotation=90)
    ax.axhline(max_calls, color="grey", lw=0.6, ls="--")
    ax.set_xticks(range(len(groups)), [g.name for g in groups], fontsize="small")
    ax.set_yscale("log")
    ax.set_ylim(top=2.2 * max_calls)
    ax.set_ylabel(f"force calls to fmax (median, p10–p90; failures at {max_calls})")
    ax.set_title(f"FrechetCellFilter, {split} starts (% at the top: converged fraction, when below 100 %)")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=5, fontsize="x-small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(
    rows: list[dict[str, Any]],
    groups: Sequence[Group],
    starts: list[list[Atoms]],
    out: Path,
    command: str,
    elapsed: float,
    fmax: float = FMAX,
    max_calls: int = MAX_CALLS,
    gpmin_max_atoms: int = GPMIN_MAX_ATOMS,
    split: str = "validation",
    check: FitCheck | None = None,
) -> list[dict[str, Any]]:
    """Write ``<out>.csv``, ``<out>.md`` and ``<out>.png`` (``split`` and ``check``: see :func:`markdown`);
    :return: the summary."""
    summary = summarize(rows, max_calls)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv"), "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    text = markdown(rows, summary, groups, starts, command, elapsed, fmax, max_calls, gpmin_max_atoms, split, check)
    out.with_suffix(".md").write_text(text, encoding="utf-8")
    plot(summary, groups, out.with_suffix(".png"), max_calls, split)
    return summary


def _starts_per_cell(text: list[str], groups: Sequence[str]) -> dict[str, int]:
    """``N`` for every group, or ``GROUP=N`` items over the defaults."""
    counts = {name: DEFAULT_STARTS[name] for name in groups}
    for item in text:
        name, _, value = item.rpartition("=")
        if not value.isdigit() or int(value) < 1:
            raise SystemExit(f"--starts-per-cell: {item!r} is not N or GROUP=N with N ≥ 1")
        if not name:
            counts = dict.fromkeys(groups, int(value))
        elif name in counts:
            counts[name] = int(value)
        else:
            raise SystemExit(f"--starts-per-cell: unknown group {name!r} (running: {', '.join(groups)})")
    return counts


#: Starts per cell of the documented run.
DEFAULT_STARTS = {"random_4-8": 2, "b2_defect_16": 2, "bcc_solid_solution_16": 2, "b2_2": 8, "b2_16": 6}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", nargs="+", choices=list(GROUPS), default=list(GROUPS))
    parser.add_argument("--optimizers", nargs="+", choices=list(OPTIMIZER_NAMES), default=list(OPTIMIZER_NAMES))
    parser.add_argument(
        "--starts-per-cell",
        nargs="+",
        default=[],
        metavar="[GROUP=]N",
        help=f"starts per cell (default {', '.join(f'{k}={v}' for k, v in DEFAULT_STARTS.items())})",
    )
    parser.add_argument("--n-cells", type=int, default=None, help="at most this many cells per group (quick checks)")
    parser.add_argument("--fmax", type=float, default=FMAX, help="eV/Å, atoms and the filter's cell rows")
    parser.add_argument("--max-calls", type=int, default=MAX_CALLS, help="force-call budget per run")
    parser.add_argument("--gpmin-max-atoms", type=int, default=GPMIN_MAX_ATOMS)
    parser.add_argument(
        "--split",
        choices=SPLITS,
        default="validation",
        help="cells and seeds of this split (test: the one-time final report, checked against the curvature fits)",
    )
    parser.add_argument("--no-fit-check", action="store_true", help="test split: skip the check against the fits")
    parser.add_argument(
        "--out", type=Path, default=None, help=f"output path without suffix (default {DEFAULT_OUT.name}[_test])"
    )
    args = parser.parse_args(argv)
    out = args.out if args.out is not None else DEFAULT_OUT if args.split == "validation" else DEFAULT_TEST_OUT
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "benchmarks/cell_relaxation.py", *given])
    groups = [GROUPS[name] for name in args.groups]
    counts = _starts_per_cell(args.starts_per_cell, args.groups)
    optimizers = [name for name in OPTIMIZER_NAMES if name in args.optimizers]
    check = None
    if args.split != "validation" and not args.no_fit_check:
        check = check_cells(groups, args.split, args.n_cells)
        print(
            f"{len(check.cells)} {args.split} cells against {check.n_fitting} fitting structures: "
            f"{len(check.fitted)} match{' (left out): ' + _matches_text(check.fitted) if check.fitted else ''}; "
            f"against the {check.n_left_out} the fits left out: {len(check.left_out)} match; against the validation "
            f"cells: {len(check.validation)} match ({check.seconds:.0f} s)",
            flush=True,
        )
        names = {group.name: {cell.info["name"] for cell in group_cells(group, args.n_cells, args.split)} for group in groups}
        groups = [group for group in groups if not names[group.name] <= set(check.fitted)]
        if not groups:
            raise SystemExit("every cell matches a fitting structure: nothing left to run")
    t0 = time.perf_counter()
    rows, starts = run(
        groups,
        optimizers,
        counts,
        args.n_cells,
        args.fmax,
        args.max_calls,
        args.gpmin_max_atoms,
        split=args.split,
        skip_cells=set(check.fitted) if check else (),
    )
    elapsed = time.perf_counter() - t0
    summary = write_outputs(
        rows, groups, starts, out, command, elapsed, args.fmax, args.max_calls, args.gpmin_max_atoms, args.split, check
    )
    ratio = ratios(summary)
    for s in summary:
        print(
            f"{s['group']:<22s} {s['optimizer']:<24s} median {s['median']:6.1f}  converged {s['converged']:4.0%}  "
            f"ratio {ratio[(s['group'], s['optimizer'])]:.2f}"
        )
    print(f"wrote {out}.md/.csv/.png in {elapsed / 60:.1f} min")


if __name__ == "__main__":
    main()
