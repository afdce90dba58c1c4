"""``CrystalSAC``: SAC with the paper's state-noise and greedy exploration."""

from __future__ import annotations

from typing import Any

from stable_baselines3 import SAC

from sb3_crystal.algorithms.exploration_mixin import StateNoiseExplorationMixin


class CrystalSAC(StateNoiseExplorationMixin, SAC):
    """SAC whose exploration actions see rotated and rescaled forces, on top of its own stochastic policy.

    :param policy: policy name or class.
    :param env: environment or id.
    :param state_noise: see :class:`~sb3_crystal.algorithms.CrystalTD3`.
    :param greedy: see :class:`~sb3_crystal.algorithms.CrystalTD3`.
    :param kwargs: the arguments of :class:`stable_baselines3.SAC`.
    """

    def __init__(self, policy: Any, env: Any, *args: Any, state_noise: Any = None, greedy: Any = None, **kwargs: Any) -> None:
        self._setup_exploration(state_noise, greedy)
        super().__init__(policy, env, *args, **kwargs)
        self._record_env_kwargs()
