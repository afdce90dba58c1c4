"""Rewards of the relaxation MDP, one function each in one registry (:data:`REWARDS`).

A reward is a function of a :class:`RewardInput` (what one transition did). Adding one is one decorated function::

    @register_reward("my_reward")
    def my_reward(step: RewardInput) -> float:
        return -step.fmax**2

The paper's rewards (Eqs. 2–5) are ``force``, ``step``, ``log_force`` and ``hybrid``; ``calls`` and ``log_ratio``
line up with force calls: ``calls`` pays −1 per force call the step spent (a trust region's rejected tries
included), ``log_ratio`` (MACS) pays how many decades the largest force fell in the step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

#: fmax is floored here before the logarithm, so an exact zero force cannot give an infinite reward.
LOG_FORCE_FLOOR = 1e-12


@dataclass(frozen=True)
class RewardInput:
    """What one transition did.

    :param fmax: largest atomic force norm after the step, eV/Å.
    :param done: whether fmax ≤ ε.
    :param previous_fmax: largest force norm before the step, eV/Å.
    :param force_calls: force calls the step spent (1 without a trust region).
    :param weights: hybrid weights (w_force, w_step, w_log_force).
    """

    fmax: float
    done: bool
    previous_fmax: float = math.nan
    force_calls: int = 1
    weights: tuple[float, float, float] = (1.0, 0.0, 0.5)


RewardFunction = Callable[[RewardInput], float]

#: Reward functions by name.
REWARDS: dict[str, RewardFunction] = {}


def register_reward(name: str) -> Callable[[RewardFunction], RewardFunction]:
    """Decorator: add a reward function to :data:`REWARDS` under ``name``."""

    def decorate(function: RewardFunction) -> RewardFunction:
        if name in REWARDS:
            raise ValueError(f"a reward named {name!r} exists already")
        REWARDS[name] = function
        return function

    return decorate


def _log10(value: float) -> float:
    return math.log10(max(value, LOG_FORCE_FLOOR))


@register_reward("force")
def force_reward(step: RewardInput) -> float:
    """−max|f|."""
    return -step.fmax


@register_reward("step")
def step_reward(step: RewardInput) -> float:
    """−1 until done, 0 on the converging step."""
    return 0.0 if step.done else -1.0


@register_reward("log_force")
def log_force_reward(step: RewardInput) -> float:
    """−log10 max|f|."""
    return -_log10(step.fmax)


@register_reward("hybrid")
def hybrid_reward(step: RewardInput) -> float:
    """w1·force + w2·step + w3·log_force."""
    w1, w2, w3 = step.weights
    return w1 * force_reward(step) + w2 * step_reward(step) + w3 * log_force_reward(step)


@register_reward("calls")
def calls_reward(step: RewardInput) -> float:
    """−(force calls of the step), the converging evaluation free: the return is minus the calls to reach ε."""
    return -float(step.force_calls - (1 if step.done else 0))


@register_reward("log_ratio")
def log_ratio_reward(step: RewardInput) -> float:
    """log10(previous fmax / fmax): decades the largest force fell in the step (MACS)."""
    if not math.isfinite(step.previous_fmax):
        return 0.0
    return _log10(step.previous_fmax) - _log10(step.fmax)


#: The registered names (kept for imports of earlier versions).
REWARD_NAMES = tuple(REWARDS)


def check_reward(name: str, weights: Sequence[float]) -> tuple[str, tuple[float, float, float]]:
    """Validate a reward name and its hybrid weights ``(w_force, w_step, w_log_force)``."""
    if name not in REWARDS:
        raise ValueError(f"reward must be one of {', '.join(REWARDS)}, got {name!r}")
    values = tuple(float(w) for w in weights)
    if len(values) != 3 or not all(math.isfinite(w) for w in values):
        raise ValueError(f"reward_weights must be three finite numbers (force, step, log_force), got {weights!r}")
    return name, values  # type: ignore[return-value]


def relaxation_reward(
    name: str,
    fmax: float,
    done: bool,
    weights: Sequence[float] = (1.0, 0.0, 0.5),
    previous_fmax: float = math.nan,
    force_calls: int = 1,
) -> float:
    """Reward of one transition by the registered function ``name``.

    :param name: reward name (a key of :data:`REWARDS`).
    :param fmax: largest atomic force norm after the move, eV/Å.
    :param done: whether fmax ≤ ε.
    :param weights: hybrid weights (w1, w2, w3).
    :param previous_fmax: largest force norm before the move, eV/Å.
    :param force_calls: force calls the step spent.
    """
    if name not in REWARDS:
        raise ValueError(f"reward must be one of {', '.join(REWARDS)}, got {name!r}")
    w1, w2, w3 = (float(w) for w in weights)
    return REWARDS[name](RewardInput(float(fmax), bool(done), float(previous_fmax), int(force_calls), (w1, w2, w3)))
