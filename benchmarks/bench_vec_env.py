"""Vectorised environments on B2 AlFe (Mendelev EAM): environment steps/s of DummyVecEnv, CrystalSubprocVecEnv and
RayVecEnv with 1 and 2 workers, and the learner's per-step costs, the inputs of the scaling model in docs/scaling.md.

Run by hand from the repo root (Ray needed for the RayVecEnv rows: ``pip install 'sb3-crystal[ray]'``)::

    python benchmarks/bench_vec_env.py [--steps 400] [--repeats 5] [--no-ray] [--no-learner]

Measured in one run:

- *bare env*: ``CrystalRelaxEnv.step`` called directly (one EAM force call, the move, the observation);
- for each vectorised environment and number of workers: ``repeats`` rounds in which every environment (the bare
  one included) runs one block of ``steps`` vector steps in turn, in a new random order each round and after a
  0.5 s pause, so all see the same load (random in-Box actions,
  ``max_displacement`` 0.1 Å, episodes of 1000 steps so that resets are rare); reported are the median ms per vector
  step, the env steps/s it gives, the overhead per vector step beyond one bare env step (transport and scheduling;
  with 2 workers on a 2-core machine also contention) and the ratio to the bare env's steps/s;
- *learner*: ``CrystalTD3`` with the default (small) TFN policy on the same environment: ms per gradient update
  (``model.train(1, 100)``, batch 100) and ms per action selection for a batch of 1, 2, 10 and 100 observations
  (``model.predict``), medians over blocks;
- *calculator stand-in*: B2 AlFe whose force calls also sleep 26 ms and 71 ms (CHGNet's cost per call at 5 and 20
  atoms on this CPU), with 1, 2, 4 and 8 workers of CrystalSubprocVecEnv and RayVecEnv: the sleep leaves the CPU
  free, so this measures what the vectorised environment adds per step as workers grow past the cores.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from sb3_crystal import CrystalRelaxEnv, __version__
from sb3_crystal.vec_env import CrystalSubprocVecEnv

MAKE_B2 = functools.partial(CrystalRelaxEnv, structures="AlFe-B2", max_displacement=0.1, max_steps=1000)


def _median_ms(fn: Callable[[], None], calls: int, repeats: int) -> float:
    """Median over ``repeats`` blocks of the mean ms per call of ``fn``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls * 1e3)
    return statistics.median(times)


class _BareEnv:
    """One environment stepped directly, with the interface the timing loop needs."""

    num_envs = 1

    def __init__(self) -> None:
        self.env = MAKE_B2()
        self.action_space = self.env.action_space

    def seed(self, seed: int) -> None:
        self._seed = seed

    def reset(self) -> None:
        self.env.reset(seed=self._seed)

    def step(self, actions: np.ndarray) -> None:
        self.env.step(actions[0])

    def close(self) -> None:
        self.env.close()


def time_blocks(vec_envs: dict[str, VecEnv | _BareEnv], steps: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per vector step of each environment, one block of ``steps`` each in turn (in a new random order each
    round, with a pause before each block), ``repeats`` rounds: all of them see the same (changing) load."""
    rng = np.random.default_rng(0)
    for vec_env in vec_envs.values():
        vec_env.seed(0)
        vec_env.reset()
        for _ in range(10):
            vec_env.step(rng.uniform(-1, 1, (vec_env.num_envs, *vec_env.action_space.shape)).astype(np.float32))
    seconds: dict[str, list[float]] = {name: [] for name in vec_envs}
    names = list(vec_envs)
    for _ in range(repeats):
        # a new order each round, and a pause: what one block leaves running (Ray's bookkeeping) slows the next
        for name in rng.permutation(names):
            vec_env = vec_envs[name]
            time.sleep(0.5)
            actions = rng.uniform(-1, 1, (steps, vec_env.num_envs, *vec_env.action_space.shape)).astype(np.float32)
            start = time.perf_counter()
            for a in actions:
                vec_env.step(a)
            seconds[name].append((time.perf_counter() - start) / steps)
    return seconds


class SlowCalculatorEnv(gym.Wrapper):
    """B2 AlFe whose every force call also waits ``delay`` seconds without using the CPU: a stand-in for an expensive
    calculator running elsewhere (CHGNet, DFT), so scaling with workers can be measured past this machine's cores."""

    def __init__(self, delay: float):
        super().__init__(MAKE_B2())
        self.delay = delay

    def reset(self, **kwargs):
        time.sleep(self.delay)
        return self.env.reset(**kwargs)

    def step(self, action):
        time.sleep(self.delay)
        return self.env.step(action)


def slow_env_rows(
    kinds: dict[str, Callable[..., VecEnv]], delays_ms: list[float], workers: list[int], steps: int, repeats: int
) -> None:
    print(
        "\n| vec env | calculator stand-in (ms per call) | workers | env steps/s | ms per vector step "
        "| beyond the delay (ms) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for delay_ms in delays_ms:
        for name, make in kinds.items():
            for n in workers:
                vec_env = make(n, functools.partial(SlowCalculatorEnv, delay_ms / 1e3))
                try:
                    ms = statistics.median(time_blocks({name: vec_env}, steps, repeats)[name]) * 1e3
                finally:
                    vec_env.close()
                print(f"| {name} | {delay_ms:g} | {n} | {n / ms * 1e3:,.1f} | {ms:.2f} | {ms - delay_ms:.2f} |", flush=True)


def learner_costs(repeats: int) -> dict[str, float]:
    """ms per TD3 gradient update (batch 100) and per action selection for batches of observations."""
    from sb3_crystal.algorithms import CrystalTD3

    env = DummyVecEnv([MAKE_B2])
    model = CrystalTD3(
        "CrystalTFNPolicy", env, batch_size=100, learning_starts=200, train_freq=1, state_noise={"level": 0.2}, seed=0
    )
    model.learn(210)  # fills the buffer past learning_starts, then a few updates
    costs = {"update": _median_ms(lambda: model.train(gradient_steps=1, batch_size=100), 10, repeats)}
    observation = env.reset()
    for batch in (1, 2, 10, 100):
        stacked = {key: np.repeat(value, batch, axis=0) for key, value in observation.items()}
        costs[f"act_{batch}"] = _median_ms(lambda stacked=stacked: model.predict(stacked, deterministic=True), 10, repeats)
    env.close()
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400, help="vector steps per timed block")
    parser.add_argument("--repeats", type=int, default=5, help="timed blocks (the median is reported)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-ray", action="store_true", help="skip RayVecEnv")
    parser.add_argument("--no-learner", action="store_true", help="skip the TD3 learner's costs")
    parser.add_argument("--slow-ms", type=float, nargs="*", default=[26.0, 71.0], help="calculator stand-in delays")
    parser.add_argument("--slow-workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--slow-steps", type=int, default=30, help="vector steps per block with the stand-in")
    args = parser.parse_args()

    th.set_num_threads(1)
    kinds: dict[str, Callable[..., VecEnv]] = {
        "DummyVecEnv": lambda n, make=MAKE_B2: DummyVecEnv([make] * n),
        "CrystalSubprocVecEnv": lambda n, make=MAKE_B2: CrystalSubprocVecEnv([make] * n),
    }
    if not args.no_ray:
        import ray

        from sb3_crystal.vec_env.ray import RayVecEnv

        # logical CPUs: every actor of the run is placed at once (idle ones cost nothing)
        n_cpus = max(len(kinds) * sum(args.workers), *args.slow_workers)
        ray.init(address="local", num_cpus=n_cpus, include_dashboard=False, log_to_driver=False)
        kinds["RayVecEnv"] = lambda n, make=MAKE_B2: RayVecEnv([make] * n)
    vec_envs: dict[str, VecEnv | _BareEnv] = {"bare env": _BareEnv()}
    vec_envs |= {f"{name}|{n}": make(n) for name, make in kinds.items() for n in args.workers}
    try:
        seconds = time_blocks(vec_envs, args.steps, args.repeats)
    finally:
        for vec_env in vec_envs.values():
            vec_env.close()
    step_ms = {name: statistics.median(values) * 1e3 for name, values in seconds.items()}
    bare = step_ms.pop("bare env")

    print(
        f"{platform.machine()}, {os.cpu_count()} cores, sb3_crystal {__version__}, {time.strftime('%Y-%m-%d')}; "
        f"blocks of {args.steps} vector steps, each environment in turn, median of {args.repeats} rounds"
    )
    print(f"\nbare env step (one EAM force call + move + observation): {bare:.3f} ms\n")
    print(
        "| vec env | workers | env steps/s | ms per vector step | overhead beyond one bare step (ms) "
        "| env steps/s vs bare env |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for key, ms in step_ms.items():
        name, n = key.split("|")
        rate = int(n) / ms * 1e3
        print(f"| {name} | {n} | {rate:,.0f} | {ms:.3f} | {ms - bare:.3f} | {rate * bare / 1e3:.2f}× |", flush=True)
    if args.slow_ms:
        parallel = {name: make for name, make in kinds.items() if name != "DummyVecEnv"}
        slow_env_rows(parallel, args.slow_ms, args.slow_workers, args.slow_steps, args.repeats)
    if not args.no_learner:
        costs = learner_costs(args.repeats)
        print(f"\nTD3 update (batch 100, small TFN): {costs['update']:.2f} ms")
        print("action selection, ms: " + ", ".join(f"{b} obs {costs[f'act_{b}']:.2f}" for b in (1, 2, 10, 100)))
    print(f"\nload average (1 min) at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
