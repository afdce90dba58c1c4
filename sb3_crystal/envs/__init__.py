"""Gymnasium environments of sb3-crystal."""

from __future__ import annotations

import gymnasium as gym

from sb3_crystal.envs.crystal_relax import CrystalRelaxEnv
from sb3_crystal.envs.rewards import REWARD_NAMES, relaxation_reward

ENV_ID = "CrystalRelax-v0"


def register_envs() -> None:
    """Register ``CrystalRelax-v0`` with gymnasium (idempotent). The environment enforces its own step limit."""
    if ENV_ID not in gym.registry:
        gym.register(id=ENV_ID, entry_point="sb3_crystal.envs.crystal_relax:CrystalRelaxEnv")


register_envs()

__all__ = ["ENV_ID", "REWARD_NAMES", "CrystalRelaxEnv", "register_envs", "relaxation_reward"]
