"""Checks of an input structure before any work: one place for the datasets, the environment and the relaxers.

:func:`check_structure` raises an error whose message names the structure and, where one is at fault, the atom:
an object that is not an ``ase.Atoms`` (a pymatgen ``Structure`` gets the conversion to use), no atoms, a cell
that is not periodic in all three directions, a cell with NaN/inf entries, linearly dependent lattice vectors or
absurd size, a position that is NaN/inf or so far outside the cell that wrapping it loses precision, a dummy atom (atomic
number 0), two atoms closer than an allowed distance, and elements a calculator's potential does not cover.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from ase import Atoms

from sb3_crystal.calculators import calculator_elements, check_elements
from sb3_crystal.structures.geometry import check_min_distance

__all__ = [
    "INPUT_MIN_DISTANCE",
    "MAX_CELLS_AWAY",
    "MAX_CELL_LENGTH",
    "MAX_CELL_VOLUME",
    "InvalidStructureError",
    "check_structure",
    "check_type",
]

#: Input structures with two atoms closer than this (Å) are refused: no crystal has such a pair, and the
#: potential's forces there are so large that a relaxation only makes nonsense of them.
INPUT_MIN_DISTANCE = 0.5

#: An atom more than this many cell lengths outside the cell is refused: wrapping it back loses the digits that
#: place it in the cell (float64 has about 16).
MAX_CELLS_AWAY = 1e6

#: Cells with a lattice vector longer than this (Å) or a volume above :data:`MAX_CELL_VOLUME` (Å³) are refused:
#: far larger than any cell a relaxation here can handle (LAMMPS cannot bin such a box for its neighbour lists).
MAX_CELL_LENGTH = 1e5
MAX_CELL_VOLUME = 1e9

#: A cell whose volume is below this fraction of ``|a|·|b|·|c|`` has (numerically) linearly dependent vectors.
_MIN_CELL_SHAPE = 1e-6


class InvalidStructureError(ValueError):
    """An input structure no calculation can start from (empty, not periodic, a singular cell, a bad position)."""


def _label(atoms: Atoms, where: str | None) -> str:
    return where if where else f"structure {atoms.get_chemical_formula() or '(no atoms)'}"


def check_type(atoms: Any, where: str | None = None) -> None:
    """Raise ``TypeError`` unless ``atoms`` is an ``ase.Atoms``; a pymatgen ``Structure`` is told how to convert.

    :param atoms: the object to check.
    :param where: what to call it in the message (default ``"atoms"``).
    """
    if isinstance(atoms, Atoms):
        return
    name = where or "atoms"
    kind = type(atoms).__name__
    if type(atoms).__module__.split(".")[0] == "pymatgen":
        raise TypeError(
            f"{name} is a pymatgen {kind}, but an ase.Atoms is needed (it is relaxed in place): convert it with "
            f"`from pymatgen.io.ase import AseAtomsAdaptor; atoms = AseAtomsAdaptor.get_atoms(structure)`, attach a "
            "calculator, relax, and convert back with AseAtomsAdaptor.get_structure(atoms)"
        )
    raise TypeError(f"{name} must be an ase.Atoms, got {kind}")


def check_structure(
    atoms: Any,
    where: str | None = None,
    min_distance: float = INPUT_MIN_DISTANCE,
    require_periodic: bool = True,
    calculator: Any = None,
) -> None:
    """Raise a clear error unless ``atoms`` is a structure a fixed-cell relaxation can start from.

    :param atoms: the structure.
    :param where: what to call the structure in messages (a file name, ``"options['atoms']"``); default its formula.
    :param min_distance: smallest allowed interatomic distance, periodic images included, Å (0: not checked).
    :param require_periodic: refuse cells not periodic in all three directions.
    :param calculator: when given and it names the elements of its potential, refuse other elements.
    :raises TypeError: not an ``ase.Atoms``.
    :raises InvalidStructureError: no atoms, a cell not periodic / not finite / singular, a non-finite or far-away
        position, a dummy atom.
    :raises AtomsTooCloseError: two atoms closer than ``min_distance`` (named with their distance).
    :raises UnsupportedElementsError: elements outside the calculator's potential (named).
    """
    check_type(atoms, where)
    if not (isinstance(min_distance, (int, float)) and math.isfinite(min_distance) and min_distance >= 0):
        raise ValueError(f"min_distance must be a finite number ≥ 0 Å, got {min_distance!r}")
    label = _label(atoms, where)
    if len(atoms) == 0:
        raise InvalidStructureError(f"{label}: has no atoms")
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if require_periodic and not pbc.all():
        raise InvalidStructureError(
            f"{label}: not fully periodic (pbc={pbc.tolist()}): atoms are relaxed in a fixed cell periodic in all "
            "three directions; set atoms.pbc = True with a full 3D cell"
        )
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    _check_cell(cell, pbc, label)
    _check_positions(atoms, cell, pbc, label)
    dummies = np.flatnonzero(atoms.numbers <= 0)
    if len(dummies):
        i = int(dummies[0])
        raise InvalidStructureError(
            f"{label}: atom {i} is a dummy atom (atomic number {int(atoms.numbers[i])}), not an element"
        )
    if min_distance > 0 and pbc.all():
        check_min_distance(atoms, min_distance, where=label)
    if calculator is not None:
        elements = calculator_elements(calculator)
        if elements is not None:
            potential = getattr(calculator, "potential", type(calculator).__name__)
            check_elements(atoms.numbers, elements, potential, where=label)


def _check_cell(cell: np.ndarray, pbc: np.ndarray, label: str) -> None:
    """Raise :class:`InvalidStructureError` for a cell with NaN/inf entries, too large, or singular."""
    if not np.all(np.isfinite(cell)):
        raise InvalidStructureError(f"{label}: the cell holds NaN or inf ({cell.tolist()})")
    if pbc.all():
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            # each row scaled to its largest entry first: squaring a component below ~1e-154 Å underflows to zero
            scale = np.abs(cell).max(axis=1)
            lengths = np.linalg.norm(cell / np.where(scale > 0, scale, 1.0)[:, None], axis=1) * scale
            volume = abs(float(np.linalg.det(cell)))
            # volume / product of lengths, computed on unit rows so that neither can underflow
            shape = abs(float(np.linalg.det(cell / lengths[:, None]))) if np.all(lengths > 0) else 0.0
        shown = ", ".join(f"{x:.3g}" for x in lengths)
        if not (np.all(np.isfinite(lengths)) and lengths.max() <= MAX_CELL_LENGTH and math.isfinite(volume)):
            raise InvalidStructureError(
                f"{label}: the cell is too large (lattice vector lengths {shown} Å; at most {MAX_CELL_LENGTH:.0e} Å)"
            )
        if not shape > _MIN_CELL_SHAPE:
            raise InvalidStructureError(
                f"{label}: the cell is singular (volume {volume:.3g} Å³, lattice vector lengths {shown} Å): "
                "its three vectors must be linearly independent"
            )
        if volume > MAX_CELL_VOLUME:
            raise InvalidStructureError(
                f"{label}: the cell is too large (volume {volume:.3g} Å³; at most {MAX_CELL_VOLUME:.0e} Å³)"
            )


def _check_positions(atoms: Atoms, cell: np.ndarray, pbc: np.ndarray, label: str) -> None:
    """Raise :class:`InvalidStructureError` naming the first atom with a NaN/inf position or one far outside the cell."""
    positions = np.asarray(atoms.positions, dtype=np.float64)
    symbols = atoms.get_chemical_symbols()
    bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
    if len(bad):
        i = int(bad[0])
        more = f" (and {len(bad) - 1} more atoms)" if len(bad) > 1 else ""
        raise InvalidStructureError(
            f"{label}: atom {i} ({symbols[i]}) has a NaN or inf position {positions[i].tolist()}{more}"
        )
    if pbc.all():
        fractional = np.linalg.solve(cell.T, positions.T).T
        far = np.flatnonzero(np.abs(fractional).max(axis=1) > MAX_CELLS_AWAY)
        if len(far):
            i = int(far[0])
            raise InvalidStructureError(
                f"{label}: atom {i} ({symbols[i]}) lies {np.abs(fractional[i]).max():.3g} cell lengths outside the cell "
                "(wrapping it back loses precision): wrap the atoms into the cell first (atoms.wrap())"
            )
