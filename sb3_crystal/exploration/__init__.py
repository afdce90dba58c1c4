"""Exploration for crystal relaxation: state noise and greedy high-noise exploration."""

from sb3_crystal.exploration.state_noise import GreedyExploration, StateNoise, axis_angle_rotation

__all__ = ["GreedyExploration", "StateNoise", "axis_angle_rotation"]
