"""The trust region that keeps an agent's relaxation from going uphill: one rule for the environment and the optimizer.

After a move, the new geometry is evaluated (one force call). The move is **rejected** when it raised the energy by
more than ``max_energy_rise`` eV per atom or multiplied the largest force by more than ``max_fmax_growth``; the
atoms then go back and try the same move shortened by ``shrink`` (one more force call each), at most ``retries``
times. When every try is rejected the atoms stay where they were: the step made no progress, and that counts
towards a stall. Every evaluation of a rejected try is a force call, and both the environment (``force_calls``) and
the optimizers (their force-call counter) count it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sb3_crystal.structures.geometry import max_force

__all__ = ["StepOutcome", "TrustRegion"]


@dataclass(frozen=True)
class StepOutcome:
    """What a guarded step did.

    :param shifts: the shifts the atoms finally made (zero when every try was rejected), Å.
    :param energy: energy at the final geometry, eV.
    :param forces: forces there, eV/Å.
    :param evaluations: force calls the step spent (tries included).
    :param rejected: tries rejected.
    :param accepted: whether a try was accepted.
    :param rejected_points: (shifts, energy, forces) of each rejected try, in order: what they taught about the
        landscape (a relaxation history records them, then the way back).
    """

    shifts: np.ndarray
    energy: float
    forces: np.ndarray
    evaluations: int
    rejected: int
    accepted: bool
    rejected_points: tuple[tuple[np.ndarray, float, np.ndarray], ...] = ()


@dataclass(frozen=True)
class TrustRegion:
    """Reject moves that go uphill and retry them shorter.

    :param max_energy_rise: energy rise allowed by one move, eV per atom.
    :param max_fmax_growth: largest factor by which one move may raise the largest force.
    :param shrink: factor of the move on each retry, in (0, 1).
    :param retries: shortened tries after a rejection (0: reject and stay).
    """

    max_energy_rise: float = 1e-3
    max_fmax_growth: float = 2.0
    shrink: float = 0.3
    retries: int = 1

    def __post_init__(self) -> None:
        checks = {
            "max_energy_rise": self.max_energy_rise >= 0,
            "max_fmax_growth": self.max_fmax_growth >= 1,
            "shrink": 0 < self.shrink < 1,
        }
        for name, ok in checks.items():
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and ok):
                raise ValueError(f"TrustRegion {name} out of range: {value!r}")
        if not (isinstance(self.retries, int) and 0 <= self.retries <= 10):
            raise ValueError(f"TrustRegion retries must be an integer in [0, 10], got {self.retries!r}")

    @classmethod
    def from_config(cls, config: TrustRegion | dict[str, Any] | bool | None) -> TrustRegion | None:
        """Build from plain data: ``True`` (defaults), a dict of the constructor's arguments, ``None``/``False`` (off)."""
        if config is None or config is False:
            return None
        if config is True:
            return cls()
        if isinstance(config, TrustRegion):
            return config
        if isinstance(config, dict):
            return cls(**config)
        raise TypeError(f"trust_region must be a bool, a dict or a TrustRegion, not {type(config).__name__}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for agent files and env settings)."""
        return {
            "max_energy_rise": self.max_energy_rise,
            "max_fmax_growth": self.max_fmax_growth,
            "shrink": self.shrink,
            "retries": self.retries,
        }

    def accepts(self, energy: float, fmax: float, new_energy: float, new_fmax: float, n_atoms: int) -> bool:
        """Whether a move from (energy, fmax) to (new_energy, new_fmax) stays inside the trust region."""
        if not (math.isfinite(new_energy) and math.isfinite(new_fmax)):
            return False
        return new_energy - energy <= self.max_energy_rise * n_atoms and new_fmax <= self.max_fmax_growth * max(fmax, 1e-12)

    def step(
        self,
        shifts: np.ndarray,
        energy: float,
        forces: np.ndarray,
        evaluate: Callable[[np.ndarray], tuple[float, np.ndarray]],
        n_atoms: int | None = None,
    ) -> StepOutcome:
        """Try ``shifts`` from the current geometry (energy, forces), shortening it while it is rejected.

        :param shifts: the move, (n_atoms, 3) Å.
        :param energy: energy at the current geometry, eV.
        :param forces: forces there, eV/Å.
        :param evaluate: ``evaluate(shifts)`` moves the atoms by ``shifts`` from the current geometry and returns
            (energy, forces) there; ``evaluate(zeros)`` puts them back (free: that geometry was evaluated).
        :param n_atoms: atoms the energy rise is allowed per (default: the rows of ``forces``; through a cell filter
            its generalised forces have three more rows than the structure has atoms).
        """
        fmax = max_force(forces)
        n_atoms = len(forces) if n_atoms is None else int(n_atoms)
        evaluations = 0
        refused: list[tuple[np.ndarray, float, np.ndarray]] = []
        trial = np.asarray(shifts, dtype=np.float64)
        for attempt in range(self.retries + 1):
            new_energy, new_forces = evaluate(trial)
            evaluations += 1
            if self.accepts(energy, fmax, new_energy, max_force(new_forces), n_atoms):
                return StepOutcome(trial, new_energy, new_forces, evaluations, len(refused), True, tuple(refused))
            refused.append((trial.copy(), float(new_energy), np.array(new_forces, dtype=np.float64)))
            if attempt < self.retries:
                trial = trial * self.shrink
        zero = np.zeros_like(trial)
        back_energy, back_forces = evaluate(zero)
        return StepOutcome(zero, back_energy, back_forces, evaluations, len(refused), False, tuple(refused))

    @staticmethod
    def record_rejected(history: Any, outcome: StepOutcome, base: np.ndarray, energy: float, forces: np.ndarray) -> None:
        """Record each rejected try of ``outcome`` in a relaxation history, each followed by the way back to ``base``.

        The environment and the optimizers call this identically, so their histories (and the L-BFGS proposal, which
        learns the curvature along the refused move) stay the same.
        """
        for shifts, trial_energy, trial_forces in outcome.rejected_points:
            history.record(base + shifts, trial_forces, trial_energy)
            history.record(base, forces, energy)
