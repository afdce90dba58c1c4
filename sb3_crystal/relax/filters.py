"""How the agent optimizers relax through an ASE filter: variable-cell relaxation with a fixed-cell agent.

ASE's optimizers relax the cell by moving a filter's generalised coordinates: ``UnitCellFilter``,
``ExpCellFilter`` and ``FrechetCellFilter`` present N atom rows followed by 3 cell rows (a deformation of the cell),
``StrainFilter`` presents only the strain (2 rows, the 6 Voigt components). Their generalised forces are the atoms'
forces and the virial scaled as the filter scales it, and an optimizer has converged when every row is below
``fmax``: so the stress is converged too, in the units the filter chose.

An agent trained at fixed cell knows how to move atoms, not the cell. Through a filter the agent optimizers split
the work, and say so in their log:

- the **atom rows** take the agent's move (its shifts in Cartesian space, mapped into the filter's frame);
- the **cell rows** take the cell rows of an L-BFGS step over all generalised coordinates, computed from the
  relaxation's own history of generalised positions and forces (:class:`FilteredPath`), so the cell step knows
  the coupling between atoms and cell that the history shows.

The whole move goes through the filter's ``set_positions``, so constraints (``FixAtoms``, ``FixSymmetry``) act as
they act for ASE's optimizers. The trust region guards the combined move on the filter's energy and generalised
forces.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ase import Atoms
from ase.filters import Filter, StrainFilter, UnitCellFilter

from sb3_crystal.envs.observation import RelaxationHistory

__all__ = ["FilteredPath", "Geometry", "describe_filter", "restore_geometry", "same_geometry", "save_geometry", "unwrap"]


def unwrap(atoms: Any) -> tuple[Atoms, Filter | None]:
    """The structure behind ``atoms`` and the filter around it (``None`` for plain ``Atoms``).

    :raises TypeError: a filter the agent optimizers cannot relax through (a subset ``Filter`` with hidden atoms:
        use a ``FixAtoms`` constraint instead), or neither ``Atoms`` nor a filter.
    """
    if isinstance(atoms, Atoms):
        return atoms, None
    if isinstance(atoms, (UnitCellFilter, StrainFilter)):
        return atoms.atoms, atoms
    if isinstance(atoms, Filter):
        raise TypeError(
            f"{type(atoms).__name__}: the agent optimizers relax through UnitCellFilter, ExpCellFilter, "
            "FrechetCellFilter and StrainFilter; to keep atoms in place use the constraint ase.constraints.FixAtoms"
        )
    inner = getattr(atoms, "atoms", None)
    if isinstance(inner, Atoms) and hasattr(atoms, "get_positions") and hasattr(atoms, "set_positions"):
        raise TypeError(f"{type(atoms).__name__} is not a filter the agent optimizers know (see unwrap)")
    return atoms, None  # not Atoms either: the structure checks name the problem


#: A geometry to come back to exactly: positions, cell and the filter's generalised coordinates.
Geometry = tuple[np.ndarray, np.ndarray, np.ndarray | None]


def save_geometry(structure: Atoms, filt: Filter | None) -> Geometry:
    """Positions, cell and (through a filter) the generalised coordinates of the current geometry, copied."""
    x = None if filt is None else np.asarray(filt.get_positions(), dtype=np.float64).reshape(-1, 3).copy()
    return structure.positions.copy(), np.array(structure.cell), x


def restore_geometry(structure: Atoms, filt: Filter | None, state: Geometry) -> None:
    """Back to a :func:`save_geometry` state bit for bit, so the force-call counter knows it (no new call).

    Constraints are not applied again: the state satisfied them when it was saved.
    """
    positions, cell, x = state
    structure.set_cell(cell, scale_atoms=False, apply_constraint=False)
    structure.set_positions(positions, apply_constraint=False)
    if isinstance(filt, StrainFilter) and x is not None:
        filt.strain[:] = x.ravel()


def same_geometry(a: Geometry, b: Geometry) -> bool:
    """Whether two saved geometries are the same, bit for bit."""
    return bool(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]))


def describe_filter(filt: Filter) -> str:
    """One line for the log: what moves the atoms and what moves the cell."""
    name = type(filt).__name__
    if isinstance(filt, StrainFilter):
        return f"{name}: only the cell moves (L-BFGS on the strain); the agent has no atoms to move"
    return f"{name}: the agent moves the atoms, L-BFGS on the filter's coordinates moves the cell"


class FilteredPath:
    """The generalised coordinates of a relaxation through a filter, its history, and exact returns.

    :param filt: a ``UnitCellFilter`` (also ``ExpCellFilter``, ``FrechetCellFilter``) or a ``StrainFilter``.
    :param memory: secant pairs the cell's L-BFGS step remembers.
    :param max_step: longest row of that L-BFGS step, in the filter's units (as ASE's ``maxstep``).
    """

    def __init__(self, filt: Filter, memory: int, max_step: float) -> None:
        self.filter = filt
        self.structure: Atoms = filt.atoms
        #: rows of the generalised coordinates that are atoms (the rest are the cell).
        self.atom_rows = 0 if isinstance(filt, StrainFilter) else len(self.structure)
        self.memory, self.max_step = int(memory), float(max_step)
        self.history = RelaxationHistory(self.memory)
        self._after_step: np.ndarray | None = None

    # -- the current point ---------------------------------------------------------------------------------------
    def point(self) -> tuple[np.ndarray, np.ndarray, float]:
        """Generalised positions and forces (rows, 3) and the filter's energy at the current geometry."""
        filt = self.filter
        x = np.asarray(filt.get_positions(), dtype=np.float64).reshape(-1, 3)
        f = np.asarray(filt.get_forces(), dtype=np.float64).reshape(-1, 3)
        return x, f, float(filt.get_potential_energy())

    def update(self) -> None:
        """Record the current point: a step of this path when the geometry is where :meth:`moved` left it, else a
        new start (the structure was moved by something else)."""
        x, f, energy = self.point()
        if self._after_step is not None and np.array_equal(x, self._after_step):
            self.history.record(x, f, energy)
        else:
            self.history.reset(x, f, energy)
        self._after_step = None

    def moved(self) -> None:
        """Mark the current geometry as the end of this path's step."""
        self._after_step = np.asarray(self.filter.get_positions(), dtype=np.float64).reshape(-1, 3).copy()

    def forget(self) -> None:
        """Start the history again at the next :meth:`update`."""
        self._after_step = None

    def cell_step(self) -> np.ndarray:
        """The cell rows of the L-BFGS step over all generalised coordinates (rows beyond the atoms, 3)."""
        step = self.history.lbfgs_step(self.memory, self.max_step)
        return step[self.atom_rows :]

    # -- moving -----------------------------------------------------------------------------------------------------
    def to_rows(self, shifts: np.ndarray) -> np.ndarray:
        """Cartesian atomic shifts (N, 3) Å as shifts of the filter's atom rows (its undeformed frame)."""
        if self.atom_rows == 0:
            return np.zeros((0, 3))
        deformation = np.asarray(self.filter.deform_grad(), dtype=np.float64)
        return np.asarray(shifts, dtype=np.float64) @ np.linalg.inv(deformation).T

    def save(self) -> Geometry:
        """The exact state to come back to (:func:`save_geometry`)."""
        return save_geometry(self.structure, self.filter)

    def restore(self, state: Geometry) -> None:
        """Back to a saved state, bit for bit (:func:`restore_geometry`)."""
        restore_geometry(self.structure, self.filter, state)

    def move(self, base: Geometry, move: np.ndarray) -> None:
        """Go to ``base`` moved by ``move``: Cartesian atom shifts (first N rows) and cell rows, through the filter.

        A zero move restores ``base`` exactly.
        """
        if not np.any(move):
            self.restore(base)
            return
        self.restore(base)
        assert base[2] is not None
        x = base[2].copy()
        n = self.atom_rows
        if n:
            x[:n] += self.to_rows(move[:n])
        x[n:] += move[n:]
        self.filter.set_positions(x.reshape(np.shape(self.filter.get_positions())))
