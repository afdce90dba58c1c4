"""Whether a relaxation ended in the reference minimum.

A run reached the reference minimum when, after an uncounted polish of its final structure
(BFGS to ``polish_fmax``, by default the 1e-3 eV/Å of the reference, so that a loose ε is judged by the basin
it ended in rather than by its remaining distance to the bottom), both

- the energy per atom is within ``energy_tol`` (1e-4 eV) of the reference's, and
- the positions match the reference's within ``position_tol`` (0.05 Å) for every atom, up to a rigid
  translation, lattice vectors (wrapping), and relabelling of atoms of the same element
  (:func:`structure_deviation`).

When the reference is a saddle point (``MinimumReport.is_minimum`` False) starts legitimately fall into other
minima; the benchmark's ``reference_is_minimum`` column says which rows that concerns.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from ase import Atoms
from ase.optimize import BFGS

__all__ = ["compare_to_reference", "structure_deviation"]


def _matched_residuals(positions: np.ndarray, numbers: np.ndarray, reference: Atoms, wrap: Any) -> np.ndarray:
    """Per atom, the shortest periodic vector to the nearest reference site of its element."""
    residuals = np.empty_like(positions)
    for z in np.unique(numbers):
        mine, theirs = numbers == z, reference.numbers == z
        pairs = wrap(positions[mine][:, None, :] - reference.positions[theirs][None, :, :])
        nearest = np.argmin(np.einsum("ijk,ijk->ij", pairs, pairs), axis=1)
        residuals[mine] = pairs[np.arange(len(nearest)), nearest]
    return residuals


def structure_deviation(atoms: Atoms, reference: Atoms, good_enough: float = 0.0) -> float:
    """Largest atomic displacement (Å) between two structures of one cell, up to moves that change nothing physical.

    Those moves are a rigid translation, lattice vectors (wrapping), and relabelling of atoms of the same element.
    Every translation that puts atom 0 on a reference site of its element is tried (the one that keeps atom 0 on
    its own site first), then refined by the mean residual; the smallest largest displacement wins. That is an
    upper bound of the best over all translations, and exact when the structures match.

    :param atoms: the structure to judge (same cell as ``reference``).
    :param reference: the reference structure.
    :param good_enough: stop at the first translation whose deviation is at most this (a yes/no test needs no more).
    :return: the deviation in Å; ``inf`` when the compositions differ.
    """
    if len(atoms) != len(reference) or sorted(atoms.numbers) != sorted(reference.numbers):
        return math.inf
    if len(atoms) == 0:
        return 0.0
    cell = np.asarray(reference.cell)
    inverse = np.linalg.inv(cell)

    def wrap(vectors: np.ndarray) -> np.ndarray:
        # Rounding fractional coordinates finds the shortest image of any vector short against the cell,
        # which is all a match within tolerance needs.
        frac = vectors @ inverse
        return (frac - np.round(frac)) @ cell

    numbers = atoms.numbers
    sites = np.flatnonzero(reference.numbers == numbers[0])
    sites = np.concatenate([sites[sites == 0], sites[sites != 0]])
    best = math.inf
    for site in sites:
        shift = wrap(atoms.positions[0] - reference.positions[site])
        shifted = atoms.positions - shift
        residuals = _matched_residuals(shifted, numbers, reference, wrap)
        refined = _matched_residuals(shifted - residuals.mean(axis=0), numbers, reference, wrap)
        best = min(best, float(np.linalg.norm(residuals, axis=1).max()), float(np.linalg.norm(refined, axis=1).max()))
        if best <= good_enough:
            break
    return best


def compare_to_reference(
    final: Atoms,
    reference: Atoms,
    reference_energy: float,
    calculator: Any,
    energy_tol: float = 1e-4,
    position_tol: float = 0.05,
    polish_fmax: float | None = 1e-3,
    polish_steps: int = 1000,
) -> tuple[bool, float, float]:
    """Whether a relaxed structure lies in the reference's minimum (see the module docstring).

    :param final: the relaxed structure.
    :param reference: the reference minimum.
    :param reference_energy: its energy, eV.
    :param calculator: an ASE calculator, not counted (the polish costs are not the relaxer's).
    :param energy_tol: energy-per-atom tolerance, eV.
    :param position_tol: position tolerance, Å.
    :param polish_fmax: polish ``final`` with BFGS to this threshold first (``None``: compare as is).
    :param polish_steps: step cap of the polish.
    :return: ``(same, energy error per atom in eV, deviation in Å)``.
    """
    work = final.copy()
    work.calc = calculator
    if polish_fmax is not None:
        BFGS(work, logfile=None, maxstep=0.2).run(fmax=polish_fmax, steps=polish_steps)
    energy_error = (float(work.get_potential_energy()) - reference_energy) / len(work)
    deviation = structure_deviation(work, reference, good_enough=position_tol)
    work.calc = None
    return bool(abs(energy_error) <= energy_tol and deviation <= position_tol), energy_error, deviation
