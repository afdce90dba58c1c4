"""Training entry points: rl-zoo integration with crash-safe checkpoints and resume, and actor pretraining."""

from sb3_crystal.training.pretrain import (
    ReferenceMoves,
    action_regression_loss,
    pretrain_actor,
    reference_move,
    reference_moves,
)
from sb3_crystal.training.zoo import register_with_zoo, train

__all__ = [
    "ReferenceMoves",
    "action_regression_loss",
    "pretrain_actor",
    "reference_move",
    "reference_moves",
    "register_with_zoo",
    "train",
]
