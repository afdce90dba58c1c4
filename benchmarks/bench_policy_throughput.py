"""Time one TD3/SAC gradient step (actor + twin critics) of the crystal policies on B2 AlFe (batch 100, CPU).

Usage: ``python benchmarks/bench_policy_throughput.py [--preset small|paper] [--algo td3|sac] [--threads 1]``.
Uses a stand-in B2 env with the spaces of ``sb3_crystal.envs.CrystalRelaxEnv`` and a replay buffer of random
transitions, so only the network cost is timed. On a loaded 2-core machine ``--threads 1`` can be the faster one.
"""

import argparse
import time

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import SAC, TD3

from sb3_crystal.policies import register_policy_aliases


def b2_spaces(n_max: int = 4) -> tuple[spaces.Dict, spaces.Box]:
    box = lambda shape: spaces.Box(-np.inf, np.inf, shape, np.float32)  # noqa: E731
    obs_space = spaces.Dict(
        {
            "positions": box((n_max, 3)),
            "cell": box((3, 3)),
            "forces": box((n_max, 3)),
            "species": spaces.Box(0, 118, (n_max,), np.float32),
            "mask": spaces.Box(0, 1, (n_max,), np.float32),
        }
    )
    return obs_space, spaces.Box(-1, 1, (3 * n_max,), np.float32)


def b2_obs(rng: np.random.Generator, n_max: int = 4) -> dict[str, np.ndarray]:
    a = 2.85
    positions = np.zeros((n_max, 3))
    positions[1] = 0.5 * a
    positions[:2] += 0.05 * rng.standard_normal((2, 3))
    forces = np.zeros((n_max, 3))
    forces[:2] = rng.standard_normal((2, 3))
    return {
        "positions": positions.astype(np.float32),
        "cell": (np.eye(3) * a).astype(np.float32),
        "forces": forces.astype(np.float32),
        "species": np.array([13, 26] + [0] * (n_max - 2), np.float32),
        "mask": np.array([1, 1] + [0] * (n_max - 2), np.float32),
    }


def make_model(algo: str, preset: str, batch_size: int, n_max: int = 4):
    import gymnasium as gym

    obs_space, act_space = b2_spaces(n_max)

    class Env(gym.Env):
        observation_space, action_space = obs_space, act_space

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return b2_obs(self.np_random, n_max), {}

        def step(self, action):
            return b2_obs(self.np_random, n_max), 0.0, False, False, {}

    register_policy_aliases()
    algo_class = {"td3": TD3, "sac": SAC}[algo]
    model = algo_class("CrystalTFNPolicy", Env(), batch_size=batch_size, policy_kwargs=dict(tfn_preset=preset), seed=0)
    # fill the replay buffer with random transitions
    rng = np.random.default_rng(0)
    for _ in range(2 * batch_size):
        obs = {k: v[None] for k, v in b2_obs(rng, n_max).items()}
        nxt = {k: v[None] for k, v in b2_obs(rng, n_max).items()}
        model.replay_buffer.add(obs, nxt, rng.uniform(-1, 1, (1, 3 * n_max)), np.zeros(1), np.zeros(1), [{}])
    model._setup_learn(total_timesteps=1)
    return model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--algo", default="td3", choices=["td3", "sac"])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        th.set_num_threads(args.threads)
    model = make_model(args.algo, args.preset, args.batch_size)
    n_params = (
        sum(p.numel() for p in model.policy.actor.parameters()),
        sum(p.numel() for p in model.policy.critic.parameters()),
    )
    model.train(gradient_steps=2, batch_size=args.batch_size)  # warm-up
    t0 = time.perf_counter()
    model.train(gradient_steps=args.steps, batch_size=args.batch_size)
    dt = (time.perf_counter() - t0) / args.steps
    print(
        f"{args.algo} preset={args.preset} threads={th.get_num_threads()} batch={args.batch_size}: "
        f"{1e3 * dt:.1f} ms per gradient step (actor params {n_params[0]}, critic params {n_params[1]})"
    )


if __name__ == "__main__":
    main()
