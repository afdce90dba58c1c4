"""Resets on a multi-structure environment: one LAMMPS instance per cell against one instance rebuilt per switch.

Run by hand: ``python benchmarks/bench_multi_structure_resets.py [--write-docs]``. The environment is the shipped
agent's training set (7 prototypes and 24 random Al–Fe cells, ``pipelines/train_default_agent.py``); every episode
of one reset and one step draws a cell at random, as training does. ``LammpsEAMCalculator(max_instances=1)`` is
the calculator before session 5 (set-up on every change of cell); the default keeps up to 64 instances. Reports the
median time per episode over ``--repeats`` interleaved blocks and the ratio of the two medians.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from bench_env import replace_section

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines"))  # the shipped agents' training pipelines
from train_default_agent import ENV, PROTOTYPES, random_cells

from sb3_crystal import CrystalRelaxEnv
from sb3_crystal.calculators import LammpsEAMCalculator


def ms_per_episode(env: CrystalRelaxEnv, episodes: int, seed: int) -> float:
    zero = np.zeros(env.action_space.shape, np.float32)
    start = time.perf_counter()
    for i in range(episodes):
        env.reset(seed=seed + i)
        env.step(zero)
    return (time.perf_counter() - start) / episodes * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=300, help="episodes per timed block")
    parser.add_argument("--repeats", type=int, default=5, help="timed blocks per calculator")
    parser.add_argument("--write-docs", action="store_true", help="write the result into docs/benchmarks.md")
    args = parser.parse_args()
    settings = {**ENV, "structures": [*PROTOTYPES, random_cells(24)]}
    envs = {n: CrystalRelaxEnv(**settings, calculator=LammpsEAMCalculator(max_instances=n)) for n in (1, 64)}
    for env in envs.values():
        ms_per_episode(env, 60, seed=0)  # every cell seen once: the cached calculator holds them all
    times: dict[int, list[float]] = {n: [] for n in envs}
    for block in range(args.repeats):  # interleaved, so load changes hit both alike
        for n, env in envs.items():
            times[n].append(ms_per_episode(env, args.episodes, seed=1000 + block * args.episodes))
    old, new = statistics.median(times[1]), statistics.median(times[64])
    text = (
        "## Multi-structure resets\n\n"
        f"`python benchmarks/bench_multi_structure_resets.py --episodes {args.episodes} --repeats {args.repeats}` on "
        f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores, {time.strftime('%Y-%m-%d')}."
        f" The shipped agent's 31 training cells; each episode is one reset (a random cell) and one step. Median of "
        f"{args.repeats} interleaved blocks. Load average at the end: {os.getloadavg()[0]:.1f}.\n\n"
        "| LAMMPS instances kept | ms per episode (median) | blocks |\n|---|---|---|\n"
        f"| 1 (set-up on every change of cell; before session 5) | {old:.2f} | {', '.join(f'{t:.2f}' for t in times[1])} |\n"
        f"| 64 (one per cell; the default) | {new:.2f} | {', '.join(f'{t:.2f}' for t in times[64])} |\n\n"
        f"Ratio: {new / old:.3f} ({old / new:.0f}× faster).\n"
    )
    print(text)
    if args.write_docs:
        replace_section(Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md", "## Multi-structure resets", text)


if __name__ == "__main__":
    main()
