"""Algorithms: SB3's TD3 and SAC with state-noise and greedy exploration."""

from sb3_crystal.algorithms.sac import CrystalSAC
from sb3_crystal.algorithms.td3 import CrystalTD3

__all__ = ["CrystalSAC", "CrystalTD3"]
