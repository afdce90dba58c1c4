"""sb3-crystal: Stable-Baselines3 agents that relax crystal structures at fixed cell."""

from __future__ import annotations

from pathlib import Path

from sb3_crystal.envs import ENV_ID, CrystalRelaxEnv

__version__ = (Path(__file__).parent / "version.txt").read_text().strip()

__all__ = ["ENV_ID", "CrystalRelaxEnv", "__version__"]
