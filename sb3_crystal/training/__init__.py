"""Training entry points: rl-zoo integration with crash-safe checkpoints and resume."""

from sb3_crystal.training.zoo import register_with_zoo, train

__all__ = ["register_with_zoo", "train"]
