"""Exploration by noise on the *state* (paper, Methods): the actor sees rotated, rescaled forces.

For an equivariant actor, noise on the action would break the symmetry of the structure; noise on the
input forces does not. When the agent takes an exploration action, the forces of all atoms of one structure
are rotated by one common random rotation O(n, φ) and scaled by one common factor (1 + ξ), ξ ~ U(−λ, λ).
Every other vector field the observation carries (history, proposal: see
:mod:`sb3_crystal.envs.observation`) gets the same rotation and factor; positions and the cell are left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sb3_crystal.envs.observation import TENSOR_KEYS, VECTOR_KEYS

#: Observation fields that state noise rotates and rescales: vectors (v → s·R v) and, in a cell layout, the
#: symmetric cell tensors (T → s·R T Rᵀ).
NOISY_KEYS: frozenset[str] = (VECTOR_KEYS - {"positions"}) | TENSOR_KEYS


def axis_angle_rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix O(n, φ) about unit ``axis`` by ``angle`` radians (Rodrigues' formula)."""
    x, y, z = axis / np.linalg.norm(axis)
    k = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


@dataclass
class StateNoise:
    """Random rotation and rescaling of the forces the actor sees.

    The noise level λ is constant (``level=c``) or linear within an episode (``level=(c1, c2)``:
    λ(t) = (c2 − c1)·t/L + c1 with L = ``horizon``). For one structure, the rotation axis is uniform on the
    sphere, the angle φ ~ U(−``angle_scale``·λ, ``angle_scale``·λ) radians, and ξ ~ U(−λ, λ). The default
    ``angle_scale`` 0.5 follows the paper's code (rotation angle ½·λ); a greedy λ of 20 then gives an
    essentially random rotation and a rescaling that can flip the sign.

    :param level: λ, or (c1, c2) for the linear schedule.
    :param horizon: L of the linear schedule (the environment's step limit).
    :param angle_scale: rotation angle per unit λ, radians.
    :param seed: seed of the noise generator.
    """

    level: float | Sequence[float] = 0.2
    horizon: int = 1000
    angle_scale: float = 0.5
    seed: int | None = None
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        levels = [self.level] if np.isscalar(self.level) else list(self.level)  # type: ignore[arg-type]
        if len(levels) not in (1, 2) or not all(np.isfinite(v) and v >= 0 for v in levels):
            raise ValueError(f"StateNoise level must be λ ≥ 0 or (c1, c2) with both ≥ 0, got {self.level!r}")
        if self.horizon < 1:
            raise ValueError(f"StateNoise horizon must be ≥ 1 step, got {self.horizon}")
        self.rng = np.random.default_rng(self.seed)

    @classmethod
    def from_config(cls, config: StateNoise | dict[str, Any] | float | None) -> StateNoise | None:
        """Build from plain data (YAML): a dict of the constructor's arguments, a number (λ), or ``None``."""
        if config is None or isinstance(config, StateNoise):
            return config
        if isinstance(config, (int, float)):
            return cls(level=float(config))
        if isinstance(config, dict):
            return cls(**config)
        raise TypeError(f"state_noise must be a dict, a number or a StateNoise, not {type(config).__name__}")

    def level_at(self, episode_step: int | np.ndarray) -> np.ndarray:
        """λ at the given step(s) of an episode."""
        t = np.asarray(episode_step, dtype=np.float64)
        if np.isscalar(self.level):
            return np.full(t.shape, float(self.level))  # type: ignore[arg-type]
        c1, c2 = (float(v) for v in self.level)  # type: ignore[union-attr]
        return (c2 - c1) * np.minimum(t, self.horizon) / self.horizon + c1

    def sample(self, level: float) -> tuple[np.ndarray, float]:
        """One rotation matrix and one scale factor 1 + ξ for noise level λ = ``level``."""
        axis = self.rng.normal(size=3)
        while np.linalg.norm(axis) < 1e-12:  # pragma: no cover - measure-zero event
            axis = self.rng.normal(size=3)
        angle = self.rng.uniform(-1.0, 1.0) * self.angle_scale * level
        return axis_angle_rotation(axis, angle), 1.0 + self.rng.uniform(-level, level)

    def perturb(self, observation: dict[str, np.ndarray], levels: np.ndarray) -> dict[str, np.ndarray]:
        """A copy of a batched observation whose forces (and other vector fields, :data:`NOISY_KEYS`) are rotated
        and rescaled, one draw per environment shared by all its fields.

        :param observation: batched ``CrystalRelaxEnv`` observation (``forces`` of shape (n_envs, n_max, 3)).
        :param levels: λ for each environment, shape (n_envs,); 0 leaves that environment's fields as they are.
        :return: a new dict; the input arrays are not modified (the replay buffer stores the clean state).
        """
        noisy = dict(observation)
        keys = [key for key in observation if key in NOISY_KEYS]
        fields = {key: np.array(observation[key], dtype=np.float64, copy=True) for key in keys}
        for env_index, level in enumerate(np.asarray(levels, dtype=np.float64)):
            if level > 0:
                rotation, scale = self.sample(level)
                for key, values in fields.items():
                    turned = values[env_index] @ rotation.T
                    values[env_index] = scale * (rotation @ turned if key in TENSOR_KEYS else turned)
        for key, values in fields.items():
            noisy[key] = values.astype(observation[key].dtype)
        return noisy


@dataclass
class GreedyExploration:
    """High-noise exploration for an environment whose agent stalls (paper, Methods).

    An environment counts a stall step when fmax > ``min_fmax`` and its largest atomic shift < ``max_shift``;
    after ``n_steps`` consecutive stall steps its exploration actions use λ = ``level`` until an atom moves by
    ``max_shift`` or more again (or the episode ends).

    :param n_steps: N_gr, consecutive stall steps that trigger greedy exploration.
    :param max_shift: Δr_max, Å.
    :param min_fmax: f_max, eV/Å.
    :param level: λ used while greedy.
    """

    n_steps: int = 100
    max_shift: float = 0.015
    min_fmax: float = 0.1
    level: float = 20.0
    triggers: int = field(default=0, init=False)
    _stall: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), init=False, repr=False)
    _active: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool), init=False, repr=False)

    @classmethod
    def from_config(cls, config: GreedyExploration | dict[str, Any] | None) -> GreedyExploration | None:
        """Build from plain data (a dict of the constructor's arguments) or ``None``."""
        if config is None or isinstance(config, GreedyExploration):
            return config
        if isinstance(config, dict):
            return cls(**config)
        raise TypeError(f"greedy must be a dict or a GreedyExploration, not {type(config).__name__}")

    def active(self, n_envs: int) -> np.ndarray:
        """Which environments explore greedily now."""
        self._resize(n_envs)
        return self._active.copy()

    def update(self, infos: Sequence[dict[str, Any]], dones: np.ndarray) -> None:
        """Advance the stall counters with the infos of one vectorised step."""
        self._resize(len(infos))
        for i, info in enumerate(infos):
            moved = info.get("max_shift", np.inf) >= self.max_shift
            if dones[i] or moved:
                self._stall[i] = 0
                self._active[i] = False
                continue
            if info.get("fmax", 0.0) > self.min_fmax:
                self._stall[i] += 1
            else:
                self._stall[i] = 0
            if not self._active[i] and self._stall[i] >= self.n_steps:
                self._active[i] = True
                self.triggers += 1

    def _resize(self, n_envs: int) -> None:
        if len(self._stall) != n_envs:
            self._stall = np.zeros(n_envs, dtype=np.int64)
            self._active = np.zeros(n_envs, dtype=bool)
