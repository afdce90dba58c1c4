"""The agent optimizers, one module each (kept here under their earlier import path).

:class:`~sb3_crystal.relax.rl_optimizer.RLOptimizer` (the agent alone),
:class:`~sb3_crystal.relax.hybrid_optimizer.HybridOptimizer` (agent, then a classical finisher), their base
:class:`~sb3_crystal.relax.counted.CountedOptimizer`, and the warm-start numerics in :mod:`sb3_crystal.relax.warm_start`.
"""

from __future__ import annotations

from sb3_crystal.optimizers import CLASSICAL_OPTIMIZERS, FMAX_INDEPENDENT_OPTIMIZERS
from sb3_crystal.relax.counted import CountedOptimizer, check_agent_can_relax
from sb3_crystal.relax.hybrid_optimizer import (
    AUTO_GPMIN_MAX_ATOMS,
    DEFAULT_FINISHER,
    FINISHERS,
    HybridOptimizer,
    is_auto_finisher,
)
from sb3_crystal.relax.rl_optimizer import RLOptimizer
from sb3_crystal.relax.warm_start import MIN_CURVATURE, bfgs_hessian, bfgs_inverse_hessian, secant_pairs, warm_start

__all__ = [
    "AUTO_GPMIN_MAX_ATOMS",
    "CLASSICAL_OPTIMIZERS",
    "DEFAULT_FINISHER",
    "FINISHERS",
    "FMAX_INDEPENDENT_OPTIMIZERS",
    "MIN_CURVATURE",
    "CountedOptimizer",
    "HybridOptimizer",
    "RLOptimizer",
    "bfgs_hessian",
    "bfgs_inverse_hessian",
    "check_agent_can_relax",
    "is_auto_finisher",
    "secant_pairs",
    "warm_start",
]
