"""Environment throughput: CrystalRelaxEnv steps per second with random in-Box actions.

Run by hand: ``python benchmarks/bench_env.py [--seconds 5]``. Target (issue 2): ≥ 2000 steps/s at 2 atoms.
Prints a markdown table; ``--write-docs`` replaces the "Environment speed" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from sb3_crystal import CrystalRelaxEnv
from sb3_crystal.structures import build_prototype

CASES = {2: (1, 1, 1), 16: (2, 2, 2), 500: (5, 5, 10)}


def steps_per_second(env: CrystalRelaxEnv, seconds: float, repeats: int = 5) -> tuple[float, float]:
    """Median steps/s over ``repeats`` timed blocks, and the mean share of the step spent in force calls."""
    rates, force_shares = [], []
    env.reset(seed=0)
    env.action_space.seed(0)
    compute = env.calculator.compute
    for _ in range(repeats):
        force_time = 0.0

        def timed_compute(*args, _compute=compute):
            nonlocal force_time
            start = time.perf_counter()
            result = _compute(*args)
            force_time += time.perf_counter() - start
            return result

        env.calculator.compute = timed_compute
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / repeats:
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            n += 1
            if terminated or truncated:
                env.reset()
        elapsed = time.perf_counter() - start
        rates.append(n / elapsed)
        force_shares.append(force_time / elapsed)
    env.calculator.compute = compute
    return statistics.median(rates), statistics.mean(force_shares)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per case")
    parser.add_argument("--write-docs", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args()
    rows = []
    for n_atoms, repeat in CASES.items():
        structure = build_prototype("AlFe-B2").repeat(repeat)
        for scale in (0.5, 0.1):
            env = CrystalRelaxEnv(structures=structure, max_displacement=scale, beta=0.5, max_steps=1000)
            rate, share = steps_per_second(env, args.seconds)
            rows.append(f"| {n_atoms} | {scale} | {rate:,.0f} | {1e3 / rate:.3f} | {100 * share:.0f}% |")
            print(rows[-1], flush=True)
    table = "\n".join(
        ["| atoms | max_displacement (Å) | steps/s (median) | ms/step | time in force calls |", "|---|---|---|---|---|", *rows]
    )
    header = (
        "## Environment speed\n\n"
        f"`python benchmarks/bench_env.py --seconds {args.seconds:g}` on {platform.processor() or platform.machine()}, "
        f"{len(os.sched_getaffinity(0))} cores, {time.strftime('%Y-%m-%d')}. B2 AlFe and its supercells "
        "(2×2×2, 5×5×10), β = 0.5 Å, default LAMMPS calculator, uniform random actions in the Box, median of 5 blocks. "
        "Random actions of 0.5 Å per component push atoms into contact often in large cells, where the contact "
        "bisection adds neighbour searches; 0.1 Å is closer to a trained agent's steps. "
        f"Load average at the end: {os.getloadavg()[0]:.1f} (other jobs slow these absolute figures).\n\n"
    )
    print(table)
    if args.write_docs:
        replace_section(Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md", "## Environment speed", header + table)
    np.random.seed(0)


def replace_section(path: Path, heading: str, text: str) -> None:
    """Replace the section starting at ``heading`` (up to the next ``## ``) or append it."""
    content = path.read_text() if path.exists() else "# Benchmarks\n"
    start = content.find(heading)
    if start < 0:
        content = content.rstrip() + "\n\n" + text.rstrip() + "\n"
    else:
        end = content.find("\n## ", start + len(heading))
        content = content[:start] + text.rstrip() + "\n" + (content[end:] if end >= 0 else "")
    path.write_text(content)


if __name__ == "__main__":
    main()
