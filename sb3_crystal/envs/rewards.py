"""The paper's rewards (Eqs. 2–5), functions of the largest force after the move and the done flag."""

from __future__ import annotations

import math
from collections.abc import Sequence

REWARD_NAMES = ("force", "step", "log_force", "hybrid")

#: fmax is floored here before the logarithm, so an exact zero force cannot give an infinite reward.
LOG_FORCE_FLOOR = 1e-12


def check_reward(name: str, weights: Sequence[float]) -> tuple[str, tuple[float, float, float]]:
    """Validate a reward name and its hybrid weights ``(w_force, w_step, w_log_force)``."""
    if name not in REWARD_NAMES:
        raise ValueError(f"reward must be one of {', '.join(REWARD_NAMES)}, got {name!r}")
    values = tuple(float(w) for w in weights)
    if len(values) != 3 or not all(math.isfinite(w) for w in values):
        raise ValueError(f"reward_weights must be three finite numbers (force, step, log_force), got {weights!r}")
    return name, values  # type: ignore[return-value]


def relaxation_reward(name: str, fmax: float, done: bool, weights: Sequence[float] = (1.0, 0.0, 0.5)) -> float:
    """Reward of one transition.

    - ``force``: −max|f|
    - ``step``: −1 until done, 0 on the converging step
    - ``log_force``: −log10 max|f|
    - ``hybrid``: w1·force + w2·step + w3·log_force

    :param name: reward name.
    :param fmax: largest atomic force norm after the move, eV/Å.
    :param done: whether fmax ≤ ε.
    :param weights: hybrid weights (w1, w2, w3).
    """
    force = -fmax
    step = 0.0 if done else -1.0
    log_force = -math.log10(max(fmax, LOG_FORCE_FLOOR))
    if name == "force":
        return force
    if name == "step":
        return step
    if name == "log_force":
        return log_force
    if name == "hybrid":
        w1, w2, w3 = weights
        return w1 * force + w2 * step + w3 * log_force
    raise ValueError(f"reward must be one of {', '.join(REWARD_NAMES)}, got {name!r}")
