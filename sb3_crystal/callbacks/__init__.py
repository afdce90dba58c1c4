"""Callbacks: relaxation evaluation, the reward-switching curriculum, crash-safe checkpoints, and a residual agent
starting at its zero action."""

from sb3_crystal.callbacks.checkpoint import (
    CrystalCheckpointCallback,
    clean_stale_temporaries,
    last_good_checkpoint,
    latest_checkpoint,
    save_checkpoint,
)
from sb3_crystal.callbacks.curriculum import PAPER_STAGES, RewardCurriculum
from sb3_crystal.callbacks.evaluation import RelaxationEvalCallback, RelaxationMetrics, evaluate_relaxation, fixed_starts
from sb3_crystal.callbacks.residual_start import ZeroActionStart

__all__ = [
    "PAPER_STAGES",
    "CrystalCheckpointCallback",
    "RelaxationEvalCallback",
    "RelaxationMetrics",
    "RewardCurriculum",
    "ZeroActionStart",
    "clean_stale_temporaries",
    "evaluate_relaxation",
    "fixed_starts",
    "last_good_checkpoint",
    "latest_checkpoint",
    "save_checkpoint",
]
