"""Parallel environments: vectorised steps per second, DummyVecEnv (one process) vs SubprocVecEnv.

Run by hand on an otherwise idle machine: ``python benchmarks/bench_parallel.py [--seconds 10] [--write-docs]``.
Random in-Box actions (max_displacement 0.1 Å), B2 AlFe supercells; the speed-up is the ratio of environment
steps per second measured in the same run (median of 3 blocks).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

from sb3_crystal.structures import build_prototype

SIZES = {16: (2, 2, 2), 128: (4, 4, 4), 500: (5, 5, 10)}


def env_steps_per_second(vec_cls: type, n_envs: int, repeat: tuple[int, int, int], seconds: float) -> float:
    kwargs = {"structures": build_prototype("AlFe-B2").repeat(repeat), "max_displacement": 0.1, "max_steps": 1000}
    vec = make_vec_env("sb3_crystal:CrystalRelax-v0", n_envs=n_envs, vec_env_cls=vec_cls, env_kwargs=kwargs, seed=0)
    rng = np.random.default_rng(0)
    try:
        vec.reset()
        rates = []
        for _ in range(3):
            steps, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / 3:
                vec.step(rng.uniform(-1, 1, (n_envs, *vec.action_space.shape)).astype(np.float32))
                steps += n_envs
            rates.append(steps / (time.perf_counter() - start))
        return statistics.median(rates)
    finally:
        vec.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=9.0)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    rows = []
    for n_atoms, repeat in SIZES.items():
        single = env_steps_per_second(DummyVecEnv, 1, repeat, args.seconds)
        dummy = env_steps_per_second(DummyVecEnv, 2, repeat, args.seconds)
        subproc = env_steps_per_second(SubprocVecEnv, 2, repeat, args.seconds)
        rows.append(f"| {n_atoms} | {single:,.0f} | {dummy:,.0f} | {subproc:,.0f} | {subproc / dummy:.2f}× |")
        print(rows[-1], flush=True)
    table = "\n".join(
        [
            "| atoms | 1 env (steps/s) | 2 envs, DummyVecEnv | 2 envs, SubprocVecEnv | Subproc / Dummy |",
            "|---:|---:|---:|---:|---:|",
            *rows,
        ]
    )
    text = (
        "## Parallel environments\n\n"
        f"`python benchmarks/bench_parallel.py --seconds {args.seconds:g}`, {os.cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d')}. Environment steps per second (summed over environments), random actions of at "
        "most 0.1 Å per component, B2 AlFe supercells, median of 3 blocks, all columns from the same run.\n\n" + table
    )
    print(text)
    if args.write_docs:
        from bench_env import replace_section

        replace_section(Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md", "## Parallel environments", text)


if __name__ == "__main__":
    main()
