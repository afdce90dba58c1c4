"""Callbacks: relaxation evaluation, the reward-switching curriculum and crash-safe checkpoints."""

from sb3_crystal.callbacks.checkpoint import CrystalCheckpointCallback, latest_checkpoint, save_checkpoint
from sb3_crystal.callbacks.curriculum import PAPER_STAGES, RewardCurriculum
from sb3_crystal.callbacks.evaluation import RelaxationEvalCallback, RelaxationMetrics, evaluate_relaxation, fixed_starts

__all__ = [
    "PAPER_STAGES",
    "CrystalCheckpointCallback",
    "RelaxationEvalCallback",
    "RelaxationMetrics",
    "RewardCurriculum",
    "evaluate_relaxation",
    "fixed_starts",
    "latest_checkpoint",
    "save_checkpoint",
]
