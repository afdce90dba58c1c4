"""What the vectorised environments share: the error of a worker that died, and observation stacking."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

#: Info keys that say where an environment was, in the order they are reported.
_STRUCTURE_KEYS = ("structure_index", "episode_step", "n_atoms", "fmax")


class EnvWorkerError(RuntimeError):
    """A worker that holds an environment (a subprocess or a Ray actor) died, stopped answering or failed.

    :param message: the full message (names the environment index and its last structure).
    :param env_index: index of the environment in the vectorised environment.
    :param last_info: the last info the environment returned (from its last step or reset), ``{}`` if none.
    """

    def __init__(self, message: str, env_index: int, last_info: Mapping[str, Any] | None = None):
        super().__init__(message)
        self.env_index = env_index
        self.last_info = dict(last_info or {})


def describe_last_structure(info: Mapping[str, Any] | None) -> str:
    """Where an environment was, from its last info: ``"structure_index=3, episode_step=12, n_atoms=2, fmax=0.41"``.

    :param info: the environment's last step or reset info (``None`` or ``{}`` before the first reset).
    """
    if not info:
        return "no structure reported yet (the failure came before the first reset finished)"
    parts = []
    for key in _STRUCTURE_KEYS:
        if key in info:
            value = info[key]
            parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return ", ".join(parts) if parts else "the environment's info has no structure_index"


def worker_error(
    what: str, env_index: int, command: str, cause: str, last_info: Mapping[str, Any] | None, detail: str = ""
) -> EnvWorkerError:
    """An :class:`EnvWorkerError` with the standard message: one line naming the worker, what happened, the command
    and the last structure, then ``detail`` (a traceback, the engine's report) after a blank line.

    :param what: the worker, e.g. ``"SubprocVecEnv worker 1 (pid 4242)"``.
    :param env_index: index of the environment.
    :param command: what the worker was asked to do (``"step"``, ``"reset"``, ...).
    :param cause: what happened, short (``"died (killed by signal SIGKILL)"``, ``"raised ValueError: ..."``).
    :param last_info: the environment's last info.
    :param detail: more text for the lines below.
    """
    message = f"{what} {cause} during '{command}'; its last structure: {describe_last_structure(last_info)}"
    if detail:
        message += f"\n\n{detail}"
    return EnvWorkerError(message, env_index, last_info)


def stack_observations(observations: Sequence[Any], space: spaces.Space) -> Any:
    """Stack one observation per environment along a new first axis (dict and tuple spaces key by key).

    :param observations: one observation per environment.
    :param space: the (single-environment) observation space.
    """
    if isinstance(space, spaces.Dict):
        return {key: np.stack([obs[key] for obs in observations]) for key in space.spaces}
    if isinstance(space, spaces.Tuple):
        return tuple(np.stack([obs[i] for obs in observations]) for i in range(len(space.spaces)))
    return np.stack(observations)


def writable_copy(observation: Any) -> Any:
    """A copy of an observation whose arrays are writable (arrays a transport hands back may be read-only)."""
    if isinstance(observation, dict):
        return {key: np.array(value) for key, value in observation.items()}
    if isinstance(observation, tuple):
        return tuple(np.array(value) for value in observation)
    return np.array(observation)
