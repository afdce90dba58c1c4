"""Callbacks: relaxation evaluation and the reward-switching curriculum."""

from sb3_crystal.callbacks.curriculum import PAPER_STAGES, RewardCurriculum
from sb3_crystal.callbacks.evaluation import RelaxationEvalCallback, RelaxationMetrics, evaluate_relaxation, fixed_starts

__all__ = [
    "PAPER_STAGES",
    "RelaxationEvalCallback",
    "RelaxationMetrics",
    "RewardCurriculum",
    "evaluate_relaxation",
    "fixed_starts",
]
