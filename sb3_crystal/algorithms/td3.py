"""``CrystalTD3``: TD3 with the paper's state-noise and greedy exploration."""

from __future__ import annotations

from typing import Any

from stable_baselines3 import TD3

from sb3_crystal.algorithms.exploration_mixin import StateNoiseExplorationMixin


class CrystalTD3(StateNoiseExplorationMixin, TD3):
    """TD3 whose exploration actions see rotated and rescaled forces (see :class:`~sb3_crystal.exploration.StateNoise`).

    :param policy: policy name (``"CrystalTFNPolicy"``, ``"MultiInputPolicy"``, ...) or class.
    :param env: environment or id.
    :param state_noise: :class:`~sb3_crystal.exploration.StateNoise`, its arguments as a dict
        (``{"level": 0.2}`` or ``{"level": [0.2, 0.05], "horizon": 1000}``), a number λ, or ``None`` (off).
    :param greedy: :class:`~sb3_crystal.exploration.GreedyExploration` or its arguments as a dict, or ``None``.
    :param kwargs: the arguments of :class:`stable_baselines3.TD3`.
    """

    def __init__(self, policy: Any, env: Any, *args: Any, state_noise: Any = None, greedy: Any = None, **kwargs: Any) -> None:
        self._setup_exploration(state_noise, greedy)
        super().__init__(policy, env, *args, **kwargs)
        self._record_env_kwargs()
