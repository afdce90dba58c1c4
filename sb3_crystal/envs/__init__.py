"""Gymnasium environments of sb3-crystal, and the environment ids of the paper's experiments."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from sb3_crystal.envs.crystal_relax import CrystalRelaxEnv
from sb3_crystal.envs.rewards import REWARD_NAMES, relaxation_reward

ENV_ID = "CrystalRelax-v0"

#: The single-element Al and Fe set built from prototypes (the paper's set came from the Materials Project).
AL_FE_ELEMENTAL = ["Al-fcc", "Al-hcp", "Al-bcc", "Al-I4mmm", "Fe-bcc", "Fe-fcc", "Fe-hcp"]

#: One id per experiment of the paper, so rl-zoo YAML files (keyed by env id) hold one entry for each.
EXPERIMENT_ENVS: dict[str, dict[str, Any]] = {
    ENV_ID: {},  # B2 AlFe, the default
    "CrystalRelaxB2-v0": {"structures": "AlFe-B2"},
    "CrystalRelaxB2CGCNN-v0": {"structures": "AlFe-B2"},  # same task, own id for the CGCNN baseline's entry
    "CrystalRelaxI4mmm-v0": {"structures": "Al-I4mmm"},
    "CrystalRelaxAlFeMono-v0": {"structures": AL_FE_ELEMENTAL},
    "CrystalRelaxRandomAlFe-v0": {"structures": "random:count=20,atoms=2-3,seed=0"},
}


def register_envs() -> None:
    """Register the environment ids with gymnasium (idempotent). The environment enforces its own step limit."""
    for env_id, kwargs in EXPERIMENT_ENVS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point="sb3_crystal.envs.crystal_relax:CrystalRelaxEnv", kwargs=kwargs)


register_envs()

__all__ = [
    "AL_FE_ELEMENTAL",
    "ENV_ID",
    "EXPERIMENT_ENVS",
    "REWARD_NAMES",
    "CrystalRelaxEnv",
    "register_envs",
    "relaxation_reward",
]
