"""State-noise and greedy exploration for SB3's off-policy algorithms, as a mixin over TD3 and SAC."""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise

from sb3_crystal.exploration import GreedyExploration, StateNoise


class StateNoiseExplorationMixin:
    """Overrides ``_sample_action`` and ``_store_transition`` of an ``OffPolicyAlgorithm``.

    Exploration actions are computed from observations whose forces went through :class:`StateNoise`
    (λ per environment: the schedule's value at its episode step, or the greedy level while that environment
    stalls). The replay buffer stores the clean observations. Deterministic ``predict()`` and evaluation
    never see the noise. SB3's own ``action_noise`` still applies on top, when given.
    """

    state_noise: StateNoise | None
    greedy: GreedyExploration | None
    _episode_steps: np.ndarray

    def _setup_exploration(self, state_noise: Any, greedy: Any) -> None:
        self.state_noise = StateNoise.from_config(state_noise)
        self.greedy = GreedyExploration.from_config(greedy)
        if self.greedy is not None and self.state_noise is None:
            # Greedy exploration is state noise at a high level: it needs a noise generator.
            self.state_noise = StateNoise(level=0.0)
        self._episode_steps = np.zeros(0, dtype=np.int64)

    def _record_env_kwargs(self) -> None:
        """Keep the environment's constructor arguments (plain data) on the model, saved with it, so a relaxer
        built from the model later moves atoms with the same action scale and contact rule."""
        env = getattr(self, "env", None)
        try:
            self.crystal_env_kwargs = env.env_method("get_init_kwargs", indices=0)[0] if env is not None else None
        except AttributeError:
            self.crystal_env_kwargs = None

    def _setup_model(self) -> None:
        # ``load()`` writes saved and overriding attributes straight into ``__dict__``: plain data (from a YAML
        # file) is turned into exploration objects here, before the seed reaches them.
        self.state_noise = StateNoise.from_config(self.state_noise)
        self.greedy = GreedyExploration.from_config(self.greedy)
        super()._setup_model()  # type: ignore[misc]

    def set_random_seed(self, seed: int | None = None) -> None:
        super().set_random_seed(seed)  # type: ignore[misc]
        if seed is not None and self.state_noise is not None and self.state_noise.seed is None:
            self.state_noise.rng = np.random.default_rng(seed)

    def exploration_levels(self, n_envs: int) -> np.ndarray:
        """λ for each environment's next exploration action."""
        if self.state_noise is None:
            return np.zeros(n_envs)
        if len(self._episode_steps) != n_envs:
            self._episode_steps = np.zeros(n_envs, dtype=np.int64)
        levels = self.state_noise.level_at(self._episode_steps)
        if self.greedy is not None:
            levels = np.where(self.greedy.active(n_envs), self.greedy.level, levels)
        return levels

    def _sample_action(
        self, learning_starts: int, action_noise: ActionNoise | None = None, n_envs: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        clean = self._last_obs  # type: ignore[attr-defined]
        exploring = self.state_noise is not None and self.num_timesteps >= learning_starts  # type: ignore[attr-defined]
        if exploring:
            self._last_obs = self.state_noise.perturb(clean, self.exploration_levels(n_envs))  # type: ignore[union-attr]
        try:
            return super()._sample_action(learning_starts, action_noise, n_envs)  # type: ignore[misc]
        finally:
            self._last_obs = clean

    def _store_transition(
        self,
        replay_buffer: ReplayBuffer,
        buffer_action: np.ndarray,
        new_obs: np.ndarray | dict[str, np.ndarray],
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        if len(self._episode_steps) != len(infos):
            self._episode_steps = np.zeros(len(infos), dtype=np.int64)
        steps = zip(dones, infos, self._episode_steps, strict=True)
        self._episode_steps = np.array([0 if done else int(info.get("episode_step", t + 1)) for done, info, t in steps])
        if self.greedy is not None:
            self.greedy.update(infos, dones)
            self.logger.record("exploration/greedy_triggers", self.greedy.triggers)  # type: ignore[attr-defined]
            self.logger.record("exploration/greedy_active", float(self.greedy.active(len(infos)).mean()))  # type: ignore[attr-defined]
        if self.state_noise is not None:
            self.logger.record("exploration/state_noise_level", float(self.exploration_levels(len(infos)).mean()))  # type: ignore[attr-defined]
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)  # type: ignore[misc]
