"""How an action becomes atomic shifts: the action scale and the contact rule.

One :class:`MoveRule` serves the environment, the trained-agent optimizers and the expert transitions, so an agent
moves atoms the same way everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sb3_crystal.envs.cell import symmetric_from_voigt
from sb3_crystal.envs.observation import CELL_ACTIONS
from sb3_crystal.structures.geometry import has_pair_closer_than

ACTION_SCALES = ("fixed", "force", "proposal")
#: Length of the classical proposal (Å) at and beyond which the ``"proposal"`` scale gives the full
#: ``max_displacement``; below it the correction shrinks with the proposal, so it vanishes where the proposal does.
PROPOSAL_REFERENCE = 0.1
#: ``"absolute"``: the action is the step; ``"residual"``: the action corrects a classical proposal (at a zero action
#: the atoms take the proposal's step).
ACTION_MODES = ("absolute", "residual")


@dataclass(frozen=True)
class MoveRule:
    """Scale of an action and the contact limit of a move.

    :param max_displacement: shift per Cartesian component for an action of 1, Å.
    :param action_scale: ``"fixed"`` (shift = a·max_displacement) or ``"force"`` (MACS-like: shift =
        a·max_displacement·min(|f_i|, force_cap)/force_cap, so steps shrink with the force near the minimum) or
        ``"proposal"`` (for corrections of a classical proposal p: shift = a·max_displacement·min(|p_i|,
        :data:`PROPOSAL_REFERENCE`)/:data:`PROPOSAL_REFERENCE`, so a correction shrinks with the step it corrects and
        cannot hold the atoms off a minimum where the proposal vanishes).
    :param force_cap: c_max of the force scale, eV/Å.
    :param min_distance: closest approach a move may create between two atoms (or an atom and an image), Å.
    :param action_mode: ``"absolute"`` (the shift is the scaled action) or ``"residual"`` (the shift is the
        observation's classical proposal plus the scaled action).
    :param max_strain: a cell-aware agent's strain step for a strain action of 1 (each of the 6 numbers, in the
        cell filter's logarithmic strain; :meth:`cell_step`).
    """

    max_displacement: float = 0.5
    action_scale: str = "fixed"
    force_cap: float = 1.0
    min_distance: float = 1.5
    action_mode: str = "absolute"
    max_strain: float = 0.01

    def __post_init__(self) -> None:
        for name in ("max_displacement", "force_cap", "max_strain"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if self.action_scale not in ACTION_SCALES:
            raise ValueError(f"action_scale must be one of {ACTION_SCALES}, got {self.action_scale!r}")
        if self.action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode must be one of {ACTION_MODES}, got {self.action_mode!r}")
        if not (isinstance(self.min_distance, (int, float)) and self.min_distance >= 0):
            raise ValueError(f"min_distance must be ≥ 0 Å, got {self.min_distance!r}")

    def scale(self, forces: np.ndarray, base: np.ndarray | None = None) -> np.ndarray:
        """Shift in Å per unit action for each atom, shape (n_atoms, 1).

        :param base: the classical proposal (n_atoms, 3) Å, required by the ``"proposal"`` scale.
        """
        scale = np.full((len(forces), 1), float(self.max_displacement))
        if self.action_scale == "force":
            norms = np.sqrt((np.asarray(forces, dtype=np.float64) ** 2).sum(axis=1, keepdims=True))
            scale *= np.minimum(norms, self.force_cap) / self.force_cap
        elif self.action_scale == "proposal":
            lengths = np.sqrt((self._base(base, len(forces)) ** 2).sum(axis=1, keepdims=True))
            scale *= np.minimum(lengths, PROPOSAL_REFERENCE) / PROPOSAL_REFERENCE
        return scale

    def shifts(self, action: np.ndarray, forces: np.ndarray, n_slots: int, base: np.ndarray | None = None) -> np.ndarray:
        """Shifts (Å, one row per atom) for a flat action of ``3·n_slots`` numbers; padded slots are ignored.

        :param base: the classical proposal (n_atoms, 3) Å, added in ``"residual"`` mode (required there).
        :raises ValueError: an action of the wrong size, or NaN/inf for a real atom (named).
        """
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.size not in (3 * n_slots, 3 * n_slots + CELL_ACTIONS):
            raise ValueError(f"action must hold 3*n_max = {3 * n_slots} numbers, got shape {action.shape}")
        per_atom = action[: 3 * n_slots].reshape(n_slots, 3)[: len(forces)]
        bad = ~np.isfinite(per_atom)
        if bad.any():
            atom = int(np.argwhere(bad)[0, 0])
            raise ValueError(f"action holds NaN or inf for atom {atom}: {per_atom[atom].tolist()}")
        shifts = np.clip(per_atom, -1.0, 1.0) * self.scale(forces, base)
        return shifts + self._base(base, len(forces)) if self.action_mode == "residual" else shifts

    def cell_step(self, action: np.ndarray, n_slots: int, cell_factor: float, base: np.ndarray | None = None) -> np.ndarray:
        """The step of the cell rows (3, 3) of ``FrechetCellFilter`` for a cell-aware agent's action.

        The action's last :data:`~sb3_crystal.envs.observation.CELL_ACTIONS` numbers, clipped to [−1, 1], are a
        symmetric strain step (:func:`~sb3_crystal.envs.cell.symmetric_from_voigt`) of ``max_strain`` per unit; the
        filter's cell rows are that strain times its ``exp_cell_factor`` (``cell_factor``). In ``"residual"`` mode the
        step is added to ``base``, the proposal's cell rows.

        :raises ValueError: an action without the strain numbers, or NaN/inf among them.
        """
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.size != 3 * n_slots + CELL_ACTIONS:
            raise ValueError(
                f"a cell action holds 3*n_max + {CELL_ACTIONS} = {3 * n_slots + CELL_ACTIONS} numbers, got {action.size}"
            )
        strain = action[3 * n_slots :]
        if not np.all(np.isfinite(strain)):
            raise ValueError(f"the strain part of the action holds NaN or inf: {strain.tolist()}")
        step = symmetric_from_voigt(np.clip(strain, -1.0, 1.0)) * (self.max_strain * float(cell_factor))
        if self.action_mode == "residual":
            if base is None:
                raise ValueError("action_mode='residual' needs the cell rows of the classical proposal")
            step = step + np.asarray(base, dtype=np.float64).reshape(3, 3)
        return step

    def _base(self, base: np.ndarray | None, n_atoms: int) -> np.ndarray:
        if base is None:
            raise ValueError(
                "action_mode='residual' and action_scale='proposal' need the classical proposal the action corrects"
            )
        base = np.asarray(base, dtype=np.float64)[:n_atoms]
        if base.shape != (n_atoms, 3):
            raise ValueError(f"the proposal must be ({n_atoms}, 3) Å, got shape {base.shape}")
        return base

    def action_for(
        self, displacement: np.ndarray, forces: np.ndarray, n_slots: int, base: np.ndarray | None = None
    ) -> np.ndarray:
        """The flat, padded action (clipped to [−1, 1]) whose shifts are ``displacement`` (n_atoms, 3), Å.

        :param base: the classical proposal, subtracted in ``"residual"`` mode.
        """
        action = np.zeros((n_slots, 3), np.float32)
        scale = np.maximum(self.scale(forces, base), 1e-12)
        target = np.asarray(displacement, dtype=np.float64)
        if self.action_mode == "residual":
            target = target - self._base(base, len(target))
        action[: len(displacement)] = np.clip(target / scale, -1.0, 1.0)
        return action.ravel()

    def contact_fraction(self, positions: np.ndarray, cell: np.ndarray, shifts: np.ndarray, iterations: int = 12) -> float:
        """Largest fraction of ``shifts`` (bisection) that keeps every pair at least ``min_distance`` apart."""
        if self.min_distance <= 0:
            return 1.0

        def clear(fraction: float) -> bool:
            return not has_pair_closer_than(positions + fraction * shifts, cell, self.min_distance)

        if clear(1.0):
            return 1.0
        low, high = 0.0, 1.0
        for _ in range(iterations):
            mid = 0.5 * (low + high)
            low, high = (mid, high) if clear(mid) else (low, mid)
        return low

    def move(
        self,
        positions: np.ndarray,
        cell: np.ndarray,
        forces: np.ndarray,
        action: np.ndarray,
        n_slots: int,
        base: np.ndarray | None = None,
    ) -> tuple[np.ndarray, float]:
        """The shifts an action makes after the contact limit, and the fraction of the action kept.

        :param base: the classical proposal (``"residual"`` mode).
        """
        shifts = self.shifts(action, forces, n_slots, base)
        fraction = self.contact_fraction(np.asarray(positions, dtype=np.float64), cell, shifts)
        return shifts * fraction, fraction
