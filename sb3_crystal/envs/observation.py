"""The observation of a relaxation, written once: its layout, the optimizer history it carries, and how it is built.

The environment, the trained-agent optimizers, agent files, state noise and the policies all take the layout from
here, so an agent sees the same thing in training and in use.

**Fields** (float32, per-atom fields padded to ``n_slots`` atom slots, zero on padding):

- ``positions`` (n, 3) Å, ``cell`` (3, 3) Å (lattice vectors as rows), ``forces`` (n, 3) eV/Å, ``species`` (n,)
  atomic numbers (0 on padding), ``mask`` (n,) 1 for an atom: the paper's observation, always present;
- with ``history = k > 0``: ``displacements`` (n, k, 3) Å, the atom's shift in each of the last ``k`` steps (most
  recent first), ``force_changes`` (n, k, 3) eV/Å, the change of its force over each of those steps, and
  ``signals`` (4,), invariants of the structure: log10 fmax, its change over the last step, the energy change of
  the last step in eV/atom (clipped to ±1) and the step count (min(t, 50) / 50). Steps not taken yet are zero;
- with ``proposal = "lbfgs"``: ``proposal`` (n, 3) Å, the step an L-BFGS update computes from the same history
  (the last ``proposal_memory`` steps, initial inverse Hessian γ·I with γ = s·y / y·y of the newest pair, the longest
  atomic step capped at ``proposal_max_step``);
- with ``proposal = "curvature"``: ``proposal`` (n, 3) Å, the quasi-Newton step of the learned Hessian model
  (:func:`sb3_crystal.curvature.curvature_step`, the shipped Al–Fe model), with the last step's secant pair folded in
  only after a step without progress (:func:`~sb3_crystal.curvature.wants_secant_pairs`), capped at
  ``proposal_max_step``. With ``cell``: the step of atoms and cell together from the model's Hessian over atoms and
  a homogeneous deformation in the filter's coordinates (:func:`sb3_crystal.curvature.cell_curvature_step`, the
  shipped cell model), its atom rows as Cartesian shifts.

- with ``cell = True`` (a relaxation of the cell too, through ``FrechetCellFilter``; :mod:`sb3_crystal.envs.cell`):
  ``cell_forces`` (3, 3) eV, the filter's generalised forces on the cell (the virial per atom, symmetric), and with a
  proposal ``cell_proposal`` (3, 3), the cell rows of the L-BFGS (or curvature) step. The history then holds the filter's
  generalised coordinates (N atom rows, 3 cell rows), so its secant pairs couple atoms and cell; ``positions`` and
  ``forces`` stay Cartesian, and the action gains 6 numbers, a symmetric strain step (:func:`~sb3_crystal.envs.cell.
  symmetric_from_voigt`).

``positions``, ``forces``, ``displacements``, ``force_changes`` and ``proposal`` are Cartesian vectors: rotating the
crystal rotates them (:attr:`ObservationLayout.vector_keys`); ``cell_forces`` and ``cell_proposal`` are symmetric
tensors (T → R T Rᵀ, :attr:`ObservationLayout.tensor_keys`); ``signals``, ``species`` and ``mask`` are invariant.
The L-BFGS proposal uses only dot products over the whole structure, so it is rotation, translation and permutation
equivariant like the forces.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from gymnasium import spaces

from sb3_crystal.structures.geometry import largest_norm, max_force

__all__ = [
    "BASE_KEYS",
    "CELL_ACTIONS",
    "CURVATURE_MAX_STEP",
    "HISTORY_KEYS",
    "N_SIGNALS",
    "PROPOSALS",
    "TENSOR_KEYS",
    "VECTOR_KEYS",
    "ObservationLayout",
    "RelaxationHistory",
    "lbfgs_step",
    "step_cap",
]

#: The paper's observation fields, present in every layout.
BASE_KEYS: tuple[str, ...] = ("positions", "cell", "forces", "species", "mask")
#: Fields added by ``history > 0``.
HISTORY_KEYS: tuple[str, ...] = ("displacements", "force_changes", "signals")
#: Classical proposals the observation can hold.
PROPOSALS: tuple[str, ...] = ("none", "lbfgs", "curvature")
#: Invariant per-structure signals of a history layout.
N_SIGNALS = 4
#: Numbers the action of a cell layout adds: the 6 components of a symmetric strain step.
CELL_ACTIONS = 6

#: Initial curvature of the L-BFGS proposal before any secant pair is known, eV/Å² (ASE's LBFGS default α).
INITIAL_CURVATURE = 70.0
#: A secant pair enters the L-BFGS proposal when s·y ≥ this × s·s (positive curvature with a margin), eV/Å².
MIN_PAIR_CURVATURE = 1e-3
#: Past steps the curvature proposal reads (its adaptive rule looks at the newest two).
CURVATURE_MEMORY = 2
#: The longest atomic step of the curvature proposal by default, Å (the cap it was measured with).
CURVATURE_MAX_STEP = 0.3
#: The longest atomic step of the L-BFGS proposal by default, Å.
LBFGS_MAX_STEP = 0.2
#: After a refused step the next proposal is at most this times the refused try's longest shift (:func:`step_cap`).
REFUSED_STEP_SHRINK = 0.3
#: Step count at which the ``signals`` step entry saturates at 1.
SIGNAL_STEP_SCALE = 50
#: log10 fmax is floored here, so a zero force gives a finite signal.
LOG_FMAX_FLOOR = 1e-8


@dataclass(frozen=True)
class ObservationLayout:
    """Which fields an observation holds and their shapes.

    :param n_max: atom slots of the observation space.
    :param history: past steps kept as per-atom vectors (0: the paper's observation).
    :param proposal: ``"none"``, ``"lbfgs"`` (a classical step computed from the history) or ``"curvature"`` (the
        learned Hessian's quasi-Newton step).
    :param proposal_memory: steps the L-BFGS proposal remembers.
    :param proposal_max_step: longest atomic step of the proposal, Å (default 0.2 for ``"lbfgs"``,
        :data:`CURVATURE_MAX_STEP` for ``"curvature"``, the caps they were measured with).
    :param cell: the cell relaxes too (``cell_forces`` observed, a strain in the action).
    """

    n_max: int
    history: int = 0
    proposal: str = "none"
    proposal_memory: int = 8
    proposal_max_step: float | None = None
    cell: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.n_max, (int, np.integer)) and self.n_max >= 1):
            raise ValueError(f"n_max must be a positive integer, got {self.n_max!r}")
        if not (isinstance(self.history, (int, np.integer)) and 0 <= self.history <= 16):
            raise ValueError(f"history must be an integer in [0, 16] (past steps observed), got {self.history!r}")
        if self.proposal not in PROPOSALS:
            raise ValueError(f"proposal must be one of {PROPOSALS}, got {self.proposal!r}")
        if not (isinstance(self.proposal_memory, (int, np.integer)) and self.proposal_memory >= 1):
            raise ValueError(f"proposal_memory must be a positive integer, got {self.proposal_memory!r}")
        if self.proposal_max_step is None:
            default = CURVATURE_MAX_STEP if self.proposal == "curvature" else LBFGS_MAX_STEP
            object.__setattr__(self, "proposal_max_step", default)
        step = self.proposal_max_step
        if not (isinstance(step, (int, float)) and math.isfinite(step) and step > 0):
            raise ValueError(f"proposal_max_step must be a finite number > 0 Å, got {step!r}")
        if not isinstance(self.cell, (bool, np.bool_)):
            raise ValueError(f"cell must be True or False, got {self.cell!r}")

    # -- description --------------------------------------------------------------------------------------------
    @property
    def keys(self) -> tuple[str, ...]:
        """The observation's keys, in order."""
        keys = list(BASE_KEYS)
        if self.history > 0:
            keys += HISTORY_KEYS
        if self.proposal != "none":
            keys.append("proposal")
        if self.cell:
            keys.append("cell_forces")
            if self.proposal != "none":
                keys.append("cell_proposal")
        return tuple(keys)

    @property
    def vector_keys(self) -> tuple[str, ...]:
        """Keys whose last axis is a Cartesian vector that rotates with the crystal (``positions`` included)."""
        return tuple(key for key in self.keys if key in VECTOR_KEYS)

    @property
    def tensor_keys(self) -> tuple[str, ...]:
        """Keys holding a symmetric 3×3 tensor that rotates as R T Rᵀ."""
        return tuple(key for key in self.keys if key in TENSOR_KEYS)

    @property
    def action_size(self) -> int:
        """Numbers of an action per ``n_max`` slots: 3 per slot, plus :data:`CELL_ACTIONS` for a cell layout."""
        return 3 * self.n_max + (CELL_ACTIONS if self.cell else 0)

    @property
    def memory(self) -> int:
        """Past steps the history has to remember (the curvature proposal reads the last two)."""
        needed = {"none": 0, "lbfgs": self.proposal_memory, "curvature": CURVATURE_MEMORY}[self.proposal]
        return max(self.history, needed)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for agent files (``n_max`` is stored beside it)."""
        data = asdict(self)
        del data["n_max"]
        return data

    @classmethod
    def from_dict(cls, n_max: int, data: Mapping[str, Any] | None) -> ObservationLayout:
        """The layout of an agent file; ``None`` or ``{}`` (files written before history existed) is the paper's.

        :raises ValueError: unknown entries or bad values.
        """
        data = dict(data or {})
        known = {"history", "proposal", "proposal_memory", "proposal_max_step", "cell"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown observation settings {unknown}; known: {sorted(known)}")
        return cls(n_max=int(n_max), **data)

    @classmethod
    def from_space(cls, space: spaces.Space, **settings: Any) -> ObservationLayout:
        """The layout of an observation space (``history`` and ``proposal`` read off its keys and shapes).

        :param space: a crystal ``Dict`` observation space.
        :param settings: ``proposal`` (which one; the space shows only that there is one), ``proposal_memory`` /
            ``proposal_max_step`` (not visible in the space).
        :raises TypeError: not a crystal observation space.
        """
        if not (isinstance(space, spaces.Dict) and all(key in space.spaces for key in BASE_KEYS)):
            raise TypeError(f"Not a crystal observation space (needs keys {BASE_KEYS}): {space}")
        history = int(space["displacements"].shape[1]) if "displacements" in space.spaces else 0
        proposal = settings.get("proposal") or ("lbfgs" if "proposal" in space.spaces else "none")
        extra = {k: v for k, v in settings.items() if k in ("proposal_memory", "proposal_max_step") and v is not None}
        cell = "cell_forces" in space.spaces
        layout = cls(n_max=int(space["positions"].shape[0]), history=history, proposal=proposal, cell=cell, **extra)
        expected = layout.observation_space()
        for key in layout.keys:
            if key not in space.spaces or space[key].shape != expected[key].shape:
                raise TypeError(f"observation field {key!r} has shape {space[key].shape}, expected {expected[key].shape}")
        return layout

    def observation_space(self, n_slots: int | None = None) -> spaces.Dict:
        """The ``Dict`` space of this layout with ``n_slots`` atom slots (default ``n_max``)."""
        n = self.n_max if n_slots is None else int(n_slots)
        unbounded = {"positions": (n, 3), "cell": (3, 3), "forces": (n, 3)}
        fields: dict[str, spaces.Space] = {
            key: spaces.Box(-np.inf, np.inf, shape, np.float32) for key, shape in unbounded.items()
        }
        fields["species"] = spaces.Box(0, 118, (n,), np.float32)
        fields["mask"] = spaces.Box(0, 1, (n,), np.float32)
        if self.history > 0:
            k = self.history
            fields["displacements"] = spaces.Box(-np.inf, np.inf, (n, k, 3), np.float32)
            fields["force_changes"] = spaces.Box(-np.inf, np.inf, (n, k, 3), np.float32)
            fields["signals"] = spaces.Box(-np.inf, np.inf, (N_SIGNALS,), np.float32)
        if self.proposal != "none":
            fields["proposal"] = spaces.Box(-np.inf, np.inf, (n, 3), np.float32)
        if self.cell:
            fields["cell_forces"] = spaces.Box(-np.inf, np.inf, (3, 3), np.float32)
            if self.proposal != "none":
                fields["cell_proposal"] = spaces.Box(-np.inf, np.inf, (3, 3), np.float32)
        return spaces.Dict(fields)

    def action_space(self, n_slots: int | None = None) -> spaces.Box:
        """``Box(−1, 1, (3·n_slots,))``, one 3-vector per atom slot, then for a cell layout the 6 strain numbers."""
        n = self.n_max if n_slots is None else int(n_slots)
        return spaces.Box(-1.0, 1.0, (3 * n + (CELL_ACTIONS if self.cell else 0),), np.float32)

    def new_history(self) -> RelaxationHistory:
        """An empty history of the depth this layout needs."""
        return RelaxationHistory(self.memory)

    # -- building -----------------------------------------------------------------------------------------------
    def proposal_step(
        self,
        history: RelaxationHistory,
        numbers: np.ndarray | None = None,
        cell: np.ndarray | None = None,
        frame: tuple[np.ndarray, float] | None = None,
    ) -> np.ndarray | None:
        """The classical proposal (n_atoms, 3) Å, float64, at the newest point of ``history`` (``None`` without);
        for a cell layout (n_atoms + 3, 3), the atom rows then the cell rows.

        :param numbers: atomic numbers (the curvature proposal's model needs them).
        :param cell: lattice vectors as rows, Å (likewise).
        :param frame: the cell filter's deformation gradient (3, 3) and ``exp_cell_factor``
            (:meth:`~sb3_crystal.envs.cell.FilteredPath.frame`): the curvature proposal of a cell layout needs them.
        """
        if self.proposal == "none":
            return None
        if self.proposal == "curvature":
            if numbers is None or cell is None:
                raise ValueError("the curvature proposal needs the structure's atomic numbers and cell")
            if self.cell:
                if frame is None:
                    raise ValueError(
                        "the curvature proposal of a cell layout needs the filter's frame (deformation gradient, "
                        "exp_cell_factor): pass frame=FilteredPath.frame()"
                    )
                return history.cell_curvature_step(numbers, cell, frame, self.proposal_max_step)
            return history.curvature_step(numbers, cell, self.proposal_max_step)
        return history.lbfgs_step(self.proposal_memory, self.proposal_max_step)

    def build(
        self,
        numbers: np.ndarray,
        cell: np.ndarray,
        history: RelaxationHistory,
        n_slots: int | None = None,
        proposal: np.ndarray | None = None,
        structure: tuple[np.ndarray, np.ndarray] | None = None,
        frame: tuple[np.ndarray, float] | None = None,
    ) -> dict[str, np.ndarray]:
        """The observation of the newest point of ``history``.

        :param numbers: atomic numbers (n_atoms,).
        :param cell: lattice vectors as rows, Å.
        :param history: the relaxation so far (its newest point is the current geometry).
        :param n_slots: atom slots (default ``n_max``); at least the number of atoms.
        :param proposal: :meth:`proposal_step` when already computed (default: computed here).
        :param structure: for a cell layout, the Cartesian (positions, forces) of the current geometry (the history
            holds the filter's generalised coordinates).
        :param frame: for a cell layout's curvature proposal computed here, as in :meth:`proposal_step`.
        :return: a dict of fresh float32 arrays.
        """
        n = len(numbers)
        slots = self.n_max if n_slots is None else int(n_slots)
        if n > slots:
            raise ValueError(f"{n} atoms do not fit the observation's {slots} atom slots")
        positions, forces, _ = history.current
        generalised_forces = forces
        if self.cell:
            if structure is None:
                raise ValueError("a cell layout's observation needs the structure's Cartesian (positions, forces)")
            if len(generalised_forces) != n + 3:
                raise ValueError(f"a cell layout's history holds {n} atom rows and 3 cell rows, got {len(forces)} rows")
            positions, forces = structure
        observation = {
            "positions": _padded(positions, slots),
            "cell": np.asarray(cell, dtype=np.float32).reshape(3, 3).copy(),
            "forces": _padded(forces, slots),
            "species": np.zeros(slots, np.float32),
            "mask": np.zeros(slots, np.float32),
        }
        observation["species"][:n] = numbers
        observation["mask"][:n] = 1.0
        if self.history > 0:
            k = self.history
            displacements = np.zeros((slots, k, 3), np.float32)
            force_changes = np.zeros((slots, k, 3), np.float32)
            for j, (shift, change) in enumerate(history.steps(k)):
                displacements[:n, j] = shift[:n]
                force_changes[:n, j] = change[:n]
            observation["displacements"] = displacements
            observation["force_changes"] = force_changes
            observation["signals"] = history.signals(n)
        if self.proposal != "none":
            step = self.proposal_step(history, numbers, cell, frame) if proposal is None else proposal
            assert step is not None
            observation["proposal"] = _padded(step[:n], slots)
            if self.cell:
                observation["cell_proposal"] = np.asarray(step[n:], dtype=np.float32).copy()
        if self.cell:
            observation["cell_forces"] = np.asarray(generalised_forces[n:], dtype=np.float32).copy()
        return observation


#: Fields whose last axis is a Cartesian vector.
VECTOR_KEYS: frozenset[str] = frozenset({"positions", "forces", "displacements", "force_changes", "proposal"})
#: Fields that are a symmetric 3×3 tensor (rotating as R T Rᵀ).
TENSOR_KEYS: frozenset[str] = frozenset({"cell_forces", "cell_proposal"})


def _padded(values: np.ndarray, slots: int) -> np.ndarray:
    out = np.zeros((slots, 3), np.float32)
    out[: len(values)] = values
    return out


class RelaxationHistory:
    """The points a relaxation has been at: positions, forces and energy of the last ``memory + 1`` of them.

    The environment and the optimizers record every geometry they move to, in the same way, so their
    observations agree step by step.

    :param memory: past steps remembered (0: only the current point).
    """

    def __init__(self, memory: int) -> None:
        self.memory = int(memory)
        self._points: deque[tuple[np.ndarray, np.ndarray, float]] = deque(maxlen=self.memory + 1)
        #: steps recorded since :meth:`reset`.
        self.n_steps = 0

    def reset(self, positions: np.ndarray, forces: np.ndarray, energy: float) -> None:
        """Start a new relaxation at this point."""
        self._points.clear()
        self.n_steps = 0
        self._points.append(self._point(positions, forces, energy))

    def record(self, positions: np.ndarray, forces: np.ndarray, energy: float) -> None:
        """The relaxation moved to a new point (one step)."""
        if not self._points:
            raise RuntimeError("RelaxationHistory.record before reset")
        self._points.append(self._point(positions, forces, energy))
        self.n_steps += 1

    @staticmethod
    def _point(positions: np.ndarray, forces: np.ndarray, energy: float) -> tuple[np.ndarray, np.ndarray, float]:
        positions = np.array(positions, dtype=np.float64, copy=True)
        forces = np.array(forces, dtype=np.float64, copy=True)
        if positions.shape != forces.shape or positions.ndim != 2 or positions.shape[1] != 3:
            raise ValueError(f"positions {positions.shape} and forces {forces.shape} must both be (n_atoms, 3)")
        return positions, forces, float(energy)

    @property
    def current(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(positions, forces, energy) of the newest point."""
        if not self._points:
            raise RuntimeError("RelaxationHistory is empty: call reset first")
        return self._points[-1]

    def steps(self, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """(shift, force change) of the last ``k`` steps that exist, newest first."""
        points = list(self._points)
        pairs = []
        for i in range(len(points) - 1, max(len(points) - 1 - k, 0), -1):
            (x1, f1, _), (x0, f0, _) = points[i], points[i - 1]
            pairs.append((x1 - x0, f1 - f0))
        return pairs

    def signals(self, n_atoms: int) -> np.ndarray:
        """log10 fmax, its change over the last step, that step's energy change (eV/atom, clipped to ±1), steps."""
        _, forces, energy = self.current
        log_fmax = math.log10(max(max_force(forces), LOG_FMAX_FLOOR))
        change, energy_change = 0.0, 0.0
        if len(self._points) > 1:
            _, previous_forces, previous_energy = self._points[-2]
            change = log_fmax - math.log10(max(max_force(previous_forces), LOG_FMAX_FLOOR))
            energy_change = float(np.clip((energy - previous_energy) / max(n_atoms, 1), -1.0, 1.0))
        steps = min(self.n_steps, SIGNAL_STEP_SCALE) / SIGNAL_STEP_SCALE
        return np.array([log_fmax, change, energy_change, steps], np.float32)

    def curvature_step(self, numbers: np.ndarray, cell: np.ndarray, max_step: float) -> np.ndarray:
        """The learned Hessian's quasi-Newton step from the current point (n_atoms, 3), with the newest secant pair
        only after a step without progress (:func:`sb3_crystal.curvature.wants_secant_pairs`), capped at
        ``max_step`` or shorter after a refused step (:func:`step_cap`)."""
        from sb3_crystal.curvature import curvature_step, secant_pairs, wants_secant_pairs

        positions, forces, _ = self.current
        steps = self.steps(CURVATURE_MEMORY)
        pairs = secant_pairs(steps) if wants_secant_pairs(forces, steps) else []
        cap = step_cap(steps, max_step)
        return curvature_step(np.asarray(numbers), np.asarray(cell), positions, forces, pairs, max_step=cap)

    def cell_curvature_step(
        self, numbers: np.ndarray, cell: np.ndarray, frame: tuple[np.ndarray, float], max_step: float
    ) -> np.ndarray:
        """The learned Hessian's step of atoms and cell from the current point of a history of a cell filter's
        generalised coordinates (n_atoms + 3, 3): :func:`sb3_crystal.curvature.cell_curvature_step`, with the
        secant pair and the cap chosen as in :meth:`curvature_step`.

        :param frame: the filter's deformation gradient (3, 3) and ``exp_cell_factor``.
        """
        from sb3_crystal.curvature import cell_curvature_step, secant_pairs, wants_secant_pairs

        positions, forces, _ = self.current
        steps = self.steps(CURVATURE_MEMORY)
        pairs = secant_pairs(steps) if wants_secant_pairs(forces, steps) else []
        deformation, factor = frame
        cap = step_cap(steps, max_step)
        return cell_curvature_step(
            np.asarray(numbers), np.asarray(cell), positions, forces, deformation, factor, pairs, max_step=cap
        )

    def lbfgs_step(self, memory: int, max_step: float) -> np.ndarray:
        """The L-BFGS step from the current point with the secant pairs of the last ``memory`` steps (n_atoms, 3)."""
        _, forces, _ = self.current
        steps = self.steps(memory)
        pairs = [(s.ravel(), -y.ravel()) for s, y in steps]  # y = Δgradient = −Δforce
        return lbfgs_step(forces, pairs[::-1], step_cap(steps, max_step))


def step_cap(steps: list[tuple[np.ndarray, np.ndarray]], max_step: float) -> float:
    """The longest atomic step a proposal may take now: ``max_step``, or after a refused step (a try followed by the
    way back, the pattern a trust region leaves in the history) :data:`REFUSED_STEP_SHRINK` times the refused try's
    longest atomic shift, so a refused proposal is not proposed again unchanged.

    :param steps: (shift, force change) of past steps, newest first.
    :param max_step: the proposal's cap, Å.
    """
    if len(steps) < 2:
        return max_step
    back, tried = np.asarray(steps[0][0], dtype=np.float64), np.asarray(steps[1][0], dtype=np.float64)
    longest = largest_norm(tried)
    if longest <= 0 or not np.allclose(back, -tried, rtol=0.0, atol=1e-9 * max(longest, 1e-12)):
        return max_step
    return min(max_step, REFUSED_STEP_SHRINK * longest)


def lbfgs_step(forces: np.ndarray, pairs: list[tuple[np.ndarray, np.ndarray]], max_step: float) -> np.ndarray:
    """L-BFGS two-loop step −H·g for gradient g = −forces.

    :param forces: (n_atoms, 3) eV/Å.
    :param pairs: secant pairs (s, y) = (Δx, Δgradient), flat, oldest first; those with s·y below
        :data:`MIN_PAIR_CURVATURE` · s·s are skipped.
    :param max_step: the whole step is scaled down so that no atom moves more than this, Å.
    :return: the step, (n_atoms, 3) Å.
    """
    gradient = -np.asarray(forces, dtype=np.float64).ravel()
    used = [(s, y) for s, y in pairs if s @ y >= MIN_PAIR_CURVATURE * (s @ s) and s @ s > 1e-20]
    q = gradient.copy()
    alphas = []
    for s, y in reversed(used):
        rho = 1.0 / (s @ y)
        alpha = rho * (s @ q)
        q -= alpha * y
        alphas.append((rho, alpha))
    if used:
        s, y = used[-1]
        gamma = (s @ y) / (y @ y)
    else:
        gamma = 1.0 / INITIAL_CURVATURE
    r = gamma * q
    for (s, y), (rho, alpha) in zip(used, reversed(alphas), strict=True):
        beta = rho * (y @ r)
        r += (alpha - beta) * s
    step = -r.reshape(-1, 3)
    longest = largest_norm(step)
    if longest > max_step:
        step *= max_step / longest
    return step
