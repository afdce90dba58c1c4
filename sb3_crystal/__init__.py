"""sb3-crystal: Stable-Baselines3 agents that relax crystal structures at fixed cell."""

from __future__ import annotations

import sys
from pathlib import Path

from sb3_crystal.envs import ENV_ID, CrystalRelaxEnv
from sb3_crystal.policies import CrystalCGCNNPolicy, CrystalTFNPolicy, register_policy_aliases
from sb3_crystal.relax import HybridOptimizer, LearnedCurvature, RLOptimizer

__version__ = (Path(__file__).parent / "version.txt").read_text().strip()

# TD3(...) and SAC(...) with "CrystalTFNPolicy" or "CrystalCGCNNPolicy"
register_policy_aliases()

if "rl_zoo3" in sys.modules:
    # Imported as an rl-zoo gym package: rl-zoo's td3/sac become CrystalTD3/CrystalSAC (the same unless
    # state_noise or greedy are set), so one YAML file serves both training routes.
    from sb3_crystal.training.zoo import register_with_zoo

    register_with_zoo()

__all__ = [
    "ENV_ID",
    "CrystalCGCNNPolicy",
    "CrystalRelaxEnv",
    "CrystalTFNPolicy",
    "HybridOptimizer",
    "LearnedCurvature",
    "RLOptimizer",
    "__version__",
]
