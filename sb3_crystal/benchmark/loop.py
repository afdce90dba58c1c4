"""The benchmark loop: every relaxer relaxes the same seeded starts of every structure to every threshold ε.

One run is read off for all ε where that is exact (see
:attr:`~sb3_crystal.benchmark.classical.Relaxer.fmax_independent`); each run's final structure is judged against
the reference minimum (:mod:`~sb3_crystal.benchmark.matching`). The result is one row per (structure, relaxer,
start, threshold) with the columns of :data:`ROW_FIELDS`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from ase import Atoms

from sb3_crystal.benchmark.classical import (
    DEFAULT_OPTIMIZERS,
    Relaxer,
    RelaxResult,
    make_relaxer,
)
from sb3_crystal.benchmark.matching import compare_to_reference
from sb3_crystal.benchmark.starts import make_starts, structure_name
from sb3_crystal.calculators import CalculatorSpec, ForceCallCounter, make_calculator
from sb3_crystal.structures.minima import MinimumReport

__all__ = ["DEFAULT_FMAXES", "ROW_FIELDS", "run_benchmark"]

#: The README's thresholds ε, eV/Å.
DEFAULT_FMAXES: tuple[float, ...] = (0.1, 0.05, 0.01)

#: Columns of one benchmark row (one start relaxed by one relaxer to one threshold).
ROW_FIELDS: tuple[str, ...] = (
    "structure",
    "formula",
    "n_atoms",
    "optimizer",
    "fmax",
    "beta",
    "start",
    "start_seed",
    "converged",
    "force_calls",
    "steps",
    "final_fmax",
    "final_energy",
    "energy_error",
    "deviation",
    "same_minimum",
    "reference_is_minimum",
    "wall_time",
    "error",
)


def _progress(total: int, enabled: bool | None) -> Any:
    from tqdm.auto import tqdm  # only long runs need it

    # enabled=None: tqdm's own rule, a bar only on a terminal.
    return tqdm(total=total, file=sys.stderr, disable=None if enabled is None else not enabled, unit="run", leave=False)


def run_benchmark(
    structures: Sequence[Atoms],
    optimizers: Sequence[str | Relaxer] = DEFAULT_OPTIMIZERS,
    beta: float = 0.5,
    fmaxes: Sequence[float] = DEFAULT_FMAXES,
    n_starts: int = 20,
    seed: int = 0,
    calculator: CalculatorSpec = "lammps",
    max_steps: int = 1000,
    min_distance: float = 0.0,
    energy_tol: float = 1e-4,
    position_tol: float = 0.05,
    polish_fmax: float | None = 1e-3,
    progress: bool | None = None,
    starts: Sequence[Sequence[Atoms]] | None = None,
) -> list[dict[str, Any]]:
    """Relax the same seeded starts of every structure with every relaxer to every threshold.

    :param structures: relaxed minima (``info["minimum"]``, a :class:`MinimumReport`, says whether each is a true
        minimum; without it a minimum is assumed). Their names come from :func:`structure_name`.
    :param optimizers: relaxer names (see :data:`~sb3_crystal.benchmark.classical.OPTIMIZERS`) or :class:`Relaxer` objects.
    :param beta: distortion β, Å.
    :param fmaxes: force thresholds ε, eV/Å.
    :param n_starts: starts per structure.
    :param seed: base seed (see :func:`make_starts`).
    :param calculator: calculator spec, built once and shared by all runs.
    :param max_steps: optimizer step cap per run.
    :param min_distance: see :func:`make_starts`.
    :param energy_tol: same-minimum energy tolerance, eV/atom.
    :param position_tol: same-minimum position tolerance, Å.
    :param polish_fmax: polish threshold before the same-minimum test (``None``: none).
    :param progress: tqdm bar on stderr (``None``: only on a terminal).
    :param starts: the starts of each structure, fixed elsewhere (for example a test family's); ``None``: drawn
        here by :func:`make_starts` from ``beta``, ``n_starts`` and ``seed``.
    :return: one row per (structure, relaxer, start, threshold) with the fields of :data:`ROW_FIELDS`.
    """
    if not beta >= 0:
        raise ValueError(f"beta must be ≥ 0 Å, got {beta}")
    thresholds = sorted({float(f) for f in fmaxes}, reverse=True)
    if not thresholds or min(thresholds) <= 0:
        raise ValueError(f"force thresholds must be > 0 eV/Å, got {list(fmaxes)}")
    if starts is not None and len(starts) != len(structures):
        raise ValueError(f"starts must hold one list per structure: {len(starts)} lists for {len(structures)} structures")
    relaxers = [make_relaxer(item) for item in optimizers]
    calc = make_calculator(calculator)
    counter = ForceCallCounter(calc)
    rows: list[dict[str, Any]] = []
    counts = [n_starts] * len(structures) if starts is None else [len(group) for group in starts]
    total = sum(counts) * len(relaxers)
    with _progress(total, progress) as bar:
        for index, reference in enumerate(structures):
            name = structure_name(reference)
            report = reference.info.get("minimum")
            is_minimum = bool(report.is_minimum) if isinstance(report, MinimumReport) else True
            ref = reference.copy()
            ref.calc = calc
            reference_energy = float(ref.get_potential_energy())
            ref.calc = None
            group = make_starts(ref, beta, n_starts, seed, min_distance) if starts is None else list(starts[index])
            for relaxer in relaxers:
                bar.set_description(f"{name} {relaxer.name}")
                for k, start in enumerate(group):
                    results = relaxer.relax_thresholds(start, counter, thresholds, max_steps)
                    # One polish per distinct final geometry: a read-off often stops several ε at one point.
                    verdicts: dict[bytes, tuple[bool, float, float]] = {}
                    for fmax in thresholds:
                        result = results[fmax]
                        key = result.atoms.positions.tobytes()
                        if key not in verdicts:
                            verdicts[key] = compare_to_reference(
                                result.atoms, ref, reference_energy, calc, energy_tol, position_tol, polish_fmax
                            )
                        rows.append(_row(name, ref, relaxer, fmax, beta, k, start, result, verdicts[key], is_minimum))
                    bar.update()
    return rows


def _row(
    name: str,
    reference: Atoms,
    relaxer: Relaxer,
    fmax: float,
    beta: float,
    k: int,
    start: Atoms,
    result: RelaxResult,
    verdict: tuple[bool, float, float],
    is_minimum: bool,
) -> dict[str, Any]:
    same, energy_error, deviation = verdict
    return {
        "structure": name,
        "formula": reference.get_chemical_formula(),
        "n_atoms": len(reference),
        "optimizer": relaxer.name,
        "fmax": fmax,
        "beta": beta,
        "start": k,
        "start_seed": int(start.info.get("start_seed", k)),
        "converged": bool(result.converged),
        "force_calls": int(result.force_calls),
        "steps": int(result.steps),
        "final_fmax": float(result.fmax),
        "final_energy": float(result.energy),
        "energy_error": float(energy_error),
        "deviation": float(deviation),
        "same_minimum": bool(same and result.converged),
        "reference_is_minimum": is_minimum,
        "wall_time": float(result.wall_time),
        "error": result.error,
    }
