"""Relaxation evaluation: the paper's test episodes and their metrics, as a function and an SB3 callback."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, EventCallback

from sb3_crystal.callbacks.curriculum import RewardCurriculum
from sb3_crystal.envs import CrystalRelaxEnv


@dataclass(frozen=True)
class RelaxationMetrics:
    """Averages over test episodes (paper, Methods: ⟨R⟩, ⟨R̂⟩, ⟨fmax⟩, ⟨L⟩).

    :param discounted_return: ⟨R⟩, mean of Σ γ^t r_t.
    :param full_return: ⟨R̂⟩, mean of Σ r_t.
    :param final_fmax: ⟨fmax⟩ at the last step, eV/Å.
    :param relaxation_steps: ⟨L⟩, mean steps per episode (the step cap for failed episodes).
    :param median_steps: median of L.
    :param success_rate: share of episodes reaching fmax ≤ ε within the cap.
    :param normalised_last_step: ⟨L⟩·ε, comparable across thresholds.
    :param force_calls: mean force calls per episode, the start's included.
    :param epsilon: ε of the evaluation, eV/Å.
    :param n_episodes: episodes averaged.
    """

    discounted_return: float
    full_return: float
    final_fmax: float
    relaxation_steps: float
    median_steps: float
    success_rate: float
    normalised_last_step: float
    force_calls: float
    epsilon: float
    n_episodes: int


def fixed_starts(
    n_structures: int, n_episodes: int, seed: int = 0, per_structure: bool = False
) -> list[tuple[int, int | None]]:
    """The (seed, structure index) of each test episode: the same list at every evaluation.

    :param n_structures: structures in the dataset.
    :param n_episodes: episodes in all, or per structure when ``per_structure``.
    :param seed: first seed.
    :param per_structure: run ``n_episodes`` on each structure (the paper's validation protocol).
    """
    if per_structure:
        return [(seed + k * n_episodes + j, k) for k in range(n_structures) for j in range(n_episodes)]
    return [(seed + j, None) for j in range(n_episodes)]


def evaluate_relaxation(
    model: BaseAlgorithm | Any,
    env: CrystalRelaxEnv,
    starts: Sequence[tuple[int, int | None]],
    max_steps: int = 100,
    gamma: float = 0.99,
    deterministic: bool = True,
) -> tuple[RelaxationMetrics, list[dict[str, Any]]]:
    """Run test episodes without learning or storing transitions.

    :param model: anything with ``predict(obs, deterministic=...)`` (an SB3 model or policy).
    :param env: a (non-vectorised) :class:`CrystalRelaxEnv`; its ε and reward define the episode.
    :param starts: (seed, structure index or None) per episode, see :func:`fixed_starts`.
    :param max_steps: N_test, the step cap of a test episode.
    :param gamma: discount of ⟨R⟩.
    :param deterministic: deterministic actions (no exploration noise).
    :return: the averaged metrics and one dict per episode.
    """
    episodes = []
    for seed, structure_index in starts:
        options = None if structure_index is None else {"structure_index": structure_index}
        obs, info = env.reset(seed=seed, options=options)
        discounted, total, steps, success = 0.0, 0.0, 0, info["fmax"] <= env.epsilon
        while not success and steps < max_steps:
            action, _ = model.predict(obs, deterministic=deterministic)
            obs, reward, terminated, truncated, info = env.step(action)
            discounted += gamma**steps * reward
            total += reward
            steps += 1
            success = bool(terminated)
            if terminated or truncated:
                break
        episodes.append(
            {
                "seed": seed,
                "structure_index": info["structure_index"],
                "discounted_return": discounted,
                "full_return": total,
                "final_fmax": info["fmax"],
                "steps": steps,
                "success": success,
                "force_calls": info["force_calls"],
            }
        )
    steps_array = np.array([e["steps"] for e in episodes], dtype=np.float64)
    metrics = RelaxationMetrics(
        discounted_return=float(np.mean([e["discounted_return"] for e in episodes])),
        full_return=float(np.mean([e["full_return"] for e in episodes])),
        final_fmax=float(np.mean([e["final_fmax"] for e in episodes])),
        relaxation_steps=float(steps_array.mean()),
        median_steps=float(np.median(steps_array)),
        success_rate=float(np.mean([e["success"] for e in episodes])),
        normalised_last_step=float(steps_array.mean() * env.epsilon),
        force_calls=float(np.mean([e["force_calls"] for e in episodes])),
        epsilon=env.epsilon,
        n_episodes=len(episodes),
    )
    return metrics, episodes


class RelaxationEvalCallback(EventCallback):
    """Every ``eval_freq`` steps, test episodes on fixed seeded starts; metrics to the logger (TensorBoard).

    The evaluation environment is built like the training one (its constructor arguments, read from the first
    training environment) unless ``env_kwargs`` says otherwise, and takes the training environment's current
    ε, reward and β before each evaluation, so it follows a curriculum. Validation sets (other structures)
    are evaluated alongside. Metrics are logged under ``relaxation/`` (validation sets: ``relaxation_<name>/``).

    :param eval_freq: environment steps (of one environment) between evaluations.
    :param n_episodes: M_test, test episodes (per structure when ``per_structure``).
    :param max_steps: N_test, step cap of a test episode.
    :param seed: first seed of the fixed starts.
    :param per_structure: ``n_episodes`` on each structure of the dataset.
    :param env_kwargs: constructor arguments of the evaluation environment (default: the training one's).
    :param validation: name → constructor-argument overrides (e.g. ``{"N4": {"structures": "n4.csv"}}``).
    :param best_model_save_path: folder where the best model at each ε is saved
        (``best_model_eps<ε>.zip``, best = highest success rate, then fewest steps).
    :param curriculum: stages of a :class:`~sb3_crystal.callbacks.RewardCurriculum` (plain data, for YAML
        configs), advanced after each evaluation; or pass a callback as ``callback_after_eval``.
    :param callback_after_eval: called after each evaluation (e.g. a :class:`RewardCurriculum`).
    :param verbose: 1 prints a line per evaluation.
    """

    def __init__(
        self,
        eval_freq: int = 1000,
        n_episodes: int = 10,
        max_steps: int = 100,
        seed: int = 0,
        per_structure: bool = False,
        env_kwargs: dict[str, Any] | None = None,
        validation: dict[str, dict[str, Any]] | None = None,
        best_model_save_path: str | os.PathLike | None = None,
        curriculum: Sequence[dict[str, Any]] | None = None,
        callback_after_eval: BaseCallback | None = None,
        verbose: int = 0,
    ) -> None:
        if curriculum is not None:
            if callback_after_eval is not None:
                raise ValueError("Give either curriculum stages or callback_after_eval, not both")

            callback_after_eval = RewardCurriculum(curriculum, verbose=verbose)
        super().__init__(callback_after_eval, verbose=verbose)
        if eval_freq < 1 or n_episodes < 1 or max_steps < 1:
            raise ValueError("eval_freq, n_episodes and max_steps must be ≥ 1")
        self.eval_freq = eval_freq
        self.n_episodes = n_episodes
        self.max_steps = max_steps
        self.seed = seed
        self.per_structure = per_structure
        self.env_kwargs = env_kwargs
        self.validation = validation or {}
        self.best_model_save_path = None if best_model_save_path is None else Path(best_model_save_path)
        self.eval_envs: dict[str, CrystalRelaxEnv] = {}
        self.last_metrics: dict[str, RelaxationMetrics] = {}
        self.history: list[dict[str, Any]] = []
        self._best: dict[float, tuple[float, float]] = {}

    def _init_callback(self) -> None:
        base = dict(self.env_kwargs) if self.env_kwargs is not None else self._training_env_kwargs()
        self.eval_envs = {"eval": CrystalRelaxEnv(**base)}
        for name, overrides in self.validation.items():
            self.eval_envs[f"eval_{name}"] = CrystalRelaxEnv(**{**base, **overrides})
        if self.best_model_save_path is not None:
            self.best_model_save_path.mkdir(parents=True, exist_ok=True)
        super()._init_callback()

    def _training_env_kwargs(self) -> dict[str, Any]:
        try:
            return self.training_env.env_method("get_init_kwargs", indices=0)[0]
        except AttributeError as err:
            raise ValueError("RelaxationEvalCallback needs env_kwargs when the training env is not a CrystalRelaxEnv") from err

    def _on_step(self) -> bool:
        if self.n_calls % self.eval_freq != 0:
            return True
        self.evaluate()
        return self._on_event()

    def evaluate(self) -> dict[str, RelaxationMetrics]:
        """Run the evaluation now, log it and save the best model."""
        settings = self.training_env.env_method("get_settings", indices=0)[0]
        gamma = float(getattr(self.model, "gamma", 0.99))
        for name, env in self.eval_envs.items():
            env.set_epsilon(settings["epsilon"])
            env.set_reward(settings["reward"], settings["reward_weights"])
            env.set_beta(settings["beta"])
            starts = fixed_starts(len(env.dataset), self.n_episodes, self.seed, self.per_structure)
            metrics, _ = evaluate_relaxation(self.model, env, starts, self.max_steps, gamma)
            self.last_metrics[name] = metrics
            # "relaxation/" rather than "eval/": rl-zoo's --eval-freq EvalCallback logs eval/success_rate too
            prefix = "relaxation" if name == "eval" else f"relaxation_{name.removeprefix('eval_')}"
            for key, value in asdict(metrics).items():
                if key != "n_episodes":
                    self.logger.record(f"{prefix}/{key}", value)
            self.history.append({"timesteps": self.num_timesteps, "set": name, **asdict(metrics)})
            if self.verbose:
                print(
                    f"[{name}] t={self.num_timesteps} ε={metrics.epsilon:g}: success {metrics.success_rate:.2f}, "
                    f"⟨L⟩ {metrics.relaxation_steps:.1f}, ⟨fmax⟩ {metrics.final_fmax:.3g}"
                )
        self._save_if_best(self.last_metrics["eval"])
        self.logger.dump(self.num_timesteps)
        return self.last_metrics

    def _save_if_best(self, metrics: RelaxationMetrics) -> None:
        score = (metrics.success_rate, -metrics.relaxation_steps)
        if self.best_model_save_path is None or score <= self._best.get(metrics.epsilon, (-1.0, -np.inf)):
            return
        self._best[metrics.epsilon] = score
        self.model.save(self.best_model_save_path / f"best_model_eps{metrics.epsilon:g}.zip")
