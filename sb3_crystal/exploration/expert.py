"""Expert transitions: seed the replay buffer with classical (BFGS) relaxations of distorted starts.

Each expert step is taken *through the environment*: BFGS proposes the displacement, it is expressed as an
action (clipped to the Box, like any action) and ``env.step`` applies it, so every stored transition follows
the environment's own dynamics, reward and contact rule.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ase.optimize import BFGS
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from sb3_crystal.envs import CrystalRelaxEnv

Transition = tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray, float, bool, dict[str, Any]]


def displacement_to_action(env: CrystalRelaxEnv, displacement: np.ndarray) -> np.ndarray:
    """The action (flat, padded, clipped to [−1, 1]) whose shift in ``env`` is ``displacement`` (n_atoms, 3) in Å."""
    return env.moves.action_for(displacement, env.forces, env.n_max, env.proposal)


def expert_transitions(env: CrystalRelaxEnv, n_episodes: int, seed: int = 0, max_steps: int = 200) -> list[Transition]:
    """Transitions (obs, next_obs, action, reward, terminated, info) of BFGS relaxations in ``env``.

    :param env: the environment (its ε, reward and action scale apply).
    :param n_episodes: distorted starts (seeds ``seed``, ``seed + 1``, ...).
    :param seed: first seed.
    :param max_steps: step cap per episode.
    """
    transitions: list[Transition] = []
    for episode in range(n_episodes):
        obs, _ = env.reset(seed=seed + episode)
        work = env.atoms
        work.calc = env.calculator
        optimizer = BFGS(work, maxstep=env.max_displacement, logfile=None)
        for _ in range(max_steps):
            before = work.positions.copy()
            optimizer.step()
            action = displacement_to_action(env, work.positions - before)
            next_obs, reward, terminated, truncated, info = env.step(action)
            info = dict(info, **({"TimeLimit.truncated": True} if truncated and not terminated else {}))
            transitions.append((obs, next_obs, action, float(reward), bool(terminated), info))
            obs = next_obs
            work.positions = env.atoms.positions  # follow the environment (clipping, contacts)
            if terminated or truncated:
                break
    return transitions


def add_expert_transitions(model: OffPolicyAlgorithm, env: CrystalRelaxEnv, n_episodes: int, seed: int = 0) -> int:
    """Put BFGS transitions into ``model.replay_buffer``; returns how many were added.

    A buffer for ``n_envs`` environments takes transitions ``n_envs`` at a time (the last incomplete group is
    dropped).
    """
    buffer = model.replay_buffer
    if buffer is None:
        raise ValueError("The model has no replay buffer yet")
    n_envs = buffer.n_envs
    transitions = expert_transitions(env, n_episodes, seed)
    added = 0
    for start in range(0, len(transitions) - n_envs + 1, n_envs):
        group = transitions[start : start + n_envs]
        obs = {key: np.stack([t[0][key] for t in group]) for key in group[0][0]}
        next_obs = {key: np.stack([t[1][key] for t in group]) for key in group[0][1]}
        buffer.add(
            obs,  # type: ignore[arg-type]
            next_obs,  # type: ignore[arg-type]
            np.stack([t[2] for t in group]),
            np.array([t[3] for t in group], dtype=np.float32),
            np.array([t[4] or t[5].get("TimeLimit.truncated", False) for t in group]),
            [t[5] for t in group],
        )
        added += n_envs
    return added
