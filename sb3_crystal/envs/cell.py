"""The cell as degrees of freedom: relaxing through an ASE cell filter, shared by the environment and the optimizers.

ASE relaxes the cell by moving a filter's generalised coordinates: ``UnitCellFilter``, ``ExpCellFilter`` and
``FrechetCellFilter`` present N atom rows followed by 3 cell rows, ``StrainFilter`` only the strain (2 rows). Their
generalised forces are the atoms' forces followed by the virial as the filter scales it (``FrechetCellFilter``:
virial / N, in eV), and an optimizer has converged when every row is below ``fmax``.

:class:`FilteredPath` keeps a relaxation's history in those coordinates and moves the structure through the filter
(so constraints act as for ASE's optimizers), coming back to saved geometries bit for bit. The strain action of a
cell-aware agent is a symmetric 3×3 step of the cell rows written as 6 numbers (:func:`symmetric_from_voigt`).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.filters import Filter, StrainFilter

from sb3_crystal.envs.observation import RelaxationHistory

__all__ = [
    "VOIGT",
    "FilteredPath",
    "Geometry",
    "restore_geometry",
    "same_geometry",
    "save_geometry",
    "symmetric_from_voigt",
    "voigt_from_symmetric",
]

#: Index pairs of the 6 numbers of a symmetric 3×3 tensor: xx, yy, zz, yz, xz, xy (off-diagonals not doubled).
VOIGT: tuple[tuple[int, int], ...] = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def symmetric_from_voigt(values: np.ndarray) -> np.ndarray:
    """The symmetric (..., 3, 3) tensor of (..., 6) numbers in :data:`VOIGT` order."""
    values = np.asarray(values, dtype=np.float64)
    tensor = np.zeros((*values.shape[:-1], 3, 3))
    for k, (i, j) in enumerate(VOIGT):
        tensor[..., i, j] = values[..., k]
        tensor[..., j, i] = values[..., k]
    return tensor


def voigt_from_symmetric(tensor: np.ndarray) -> np.ndarray:
    """The 6 numbers (:data:`VOIGT` order) of the symmetric part of a (..., 3, 3) tensor."""
    tensor = np.asarray(tensor, dtype=np.float64)
    symmetric = 0.5 * (tensor + np.swapaxes(tensor, -1, -2))
    return np.stack([symmetric[..., i, j] for i, j in VOIGT], axis=-1)


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


class FilteredPath:
    """The generalised coordinates of a relaxation through a filter, its history, and exact returns.

    :param filt: a ``UnitCellFilter`` (also ``ExpCellFilter``, ``FrechetCellFilter``) or a ``StrainFilter``.
    :param memory: secant pairs the cell's L-BFGS step remembers.
    :param max_step: longest row of that L-BFGS step, in the filter's units (as ASE's ``maxstep``).
    :param history: the history to keep the generalised points in (default: a new one of depth ``memory``).
    """

    def __init__(self, filt: Filter, memory: int, max_step: float, history: RelaxationHistory | None = None) -> None:
        self.filter = filt
        self.structure: Atoms = filt.atoms
        #: rows of the generalised coordinates that are atoms (the rest are the cell).
        self.atom_rows = 0 if isinstance(filt, StrainFilter) else len(self.structure)
        self.memory, self.max_step = int(memory), float(max_step)
        self.history = RelaxationHistory(self.memory) if history is None else history
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

    @property
    def cell_factor(self) -> float:
        """What the filter multiplies its logarithmic strain by in the cell rows (``FrechetCellFilter``'s
        ``exp_cell_factor``, by default the number of atoms)."""
        return float(getattr(self.filter, "exp_cell_factor", getattr(self.filter, "cell_factor", 1.0)))

    def frame(self) -> tuple[np.ndarray, float]:
        """The filter's deformation gradient from its original cell (3, 3) and :attr:`cell_factor`: what maps its
        coordinates to the structure (the curvature proposal of atoms and cell needs both)."""
        return np.asarray(self.filter.deform_grad(), dtype=np.float64), self.cell_factor

    def cell_step(self) -> np.ndarray:
        """The cell rows of the L-BFGS step over all generalised coordinates (rows beyond the atoms, 3)."""
        step = self.history.lbfgs_step(self.memory, self.max_step)
        return step[self.atom_rows :]

    def record_refused(
        self, tried: list[np.ndarray], refused: tuple[tuple[np.ndarray, float, np.ndarray], ...], base: Geometry
    ) -> None:
        """Record each refused try of a trust region's step in :attr:`history`, each followed by the way back to
        ``base`` (as :meth:`~sb3_crystal.envs.safeguard.TrustRegion.record_rejected` does at fixed cell), so the
        curvature along a refused move enters the next proposal and the proposal after a refusal is shorter
        (:func:`~sb3_crystal.envs.observation.step_cap`).

        :param tried: the generalised coordinates (rows, 3) of each try, in order (the refused ones first).
        :param refused: the outcome's ``rejected_points`` (move, energy, generalised forces) of the refused tries.
        :param base: the geometry the step started from (the history's current point).
        """
        if not refused:
            return
        x, f, energy = self.history.current
        assert base[2] is not None and np.array_equal(base[2], x), "the history's current point is not the step's base"
        for point, (_, trial_energy, trial_forces) in zip(tried, refused, strict=False):
            self.history.record(point, trial_forces, trial_energy)
            self.history.record(x, f, energy)

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
