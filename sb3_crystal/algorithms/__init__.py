"""Algorithms: SB3's TD3 and SAC with state-noise and greedy exploration, and TD3+BC for fine-tuning a cloned actor."""

from sb3_crystal.algorithms.sac import CrystalSAC
from sb3_crystal.algorithms.td3 import CrystalTD3
from sb3_crystal.algorithms.td3_bc import CrystalTD3BC

__all__ = ["CrystalSAC", "CrystalTD3", "CrystalTD3BC"]
