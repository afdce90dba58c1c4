"""Training entry points: rl-zoo integration with crash-safe checkpoints and resume, and (re-exported from
:mod:`sb3_crystal.exploration.demonstrations`, below the algorithms) actor pretraining on demonstrations."""

from typing import Any

from sb3_crystal.exploration.demonstrations import (
    ReferenceMoves,
    action_regression_loss,
    pretrain_actor,
    reference_move,
    reference_moves,
)

__all__ = [
    "ReferenceMoves",
    "TrainingError",
    "action_regression_loss",
    "pretrain_actor",
    "reference_move",
    "reference_moves",
    "register_with_zoo",
    "train",
    "zoo_config",
]


def __getattr__(name: str) -> Any:
    # The zoo part is imported on first use: it needs rl-zoo (the ``zoo`` extra), which the rest does not.
    if name in ("TrainingError", "register_with_zoo", "train", "zoo_config"):
        from sb3_crystal.training import zoo

        return getattr(zoo, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
