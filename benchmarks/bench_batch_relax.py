"""Relaxations per second: many structures in lockstep (``relax_many``) against one ``RLOptimizer`` after another.

Same run, same agent (the shipped Al–Fe agent), same calculator object, same starts: distorted B2 AlFe (the relaxed
2-atom cell, coordinates += β·U(−1, 1), β = 0.5 Å, redrawn closer than 1.5 Å) and random 8-atom Al–Fe crystals
(``random_dataset``, which relaxes them: distorted the same way). Each mode runs ``--repeats`` times, interleaved;
the table gives the median. Where the time
goes is measured by timing sections: the policy (``RLOptimizer.action`` one by one; the batched pass in lockstep),
the calculator (``LammpsEAMCalculator.compute``), and the rest (observations, moves, trust region, ASE's loop,
force-call bookkeeping); for the lockstep also by part of its loop (``BatchProfile.extra``). The force calls of
every structure are compared between the two modes.

::

    python benchmarks/bench_batch_relax.py --n-b2 1000 --n-random 200 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import numpy as np
import torch as th
from ase.io import read, write

from sb3_crystal.calculators import LammpsEAMCalculator
from sb3_crystal.relax import BatchProfile, RLOptimizer, load_shipped_agent, relax_many
from sb3_crystal.structures.geometry import distort
from sb3_crystal.structures.minima import relaxed_minimum
from sb3_crystal.structures.prototypes import build_prototype
from sb3_crystal.structures.random import random_dataset


class TimedEAM(LammpsEAMCalculator):
    """The LAMMPS EAM calculator, with the seconds spent in its calls."""

    seconds = 0.0

    def compute(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return super().compute(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


class TimedRL(RLOptimizer):
    """RLOptimizer with the seconds spent in the policy (its ``action``)."""

    policy_seconds = 0.0

    def action(self, observation):
        start = time.perf_counter()
        try:
            return super().action(observation)
        finally:
            TimedRL.policy_seconds += time.perf_counter() - start


def b2_starts(count: int, seed: int) -> list:
    minimum, _ = relaxed_minimum(build_prototype("AlFe-B2"), "lammps")
    starts = [distort(minimum, 0.5, np.random.default_rng(seed + k), min_distance=1.5) for k in range(count)]
    for atoms in starts:
        atoms.info.clear()
    return starts


def one_at_a_time(starts, agent, calc, fmax, steps):
    TimedRL.policy_seconds, calc.seconds = 0.0, 0.0
    calls = []
    start = time.perf_counter()
    for structure in starts:
        atoms = structure.copy()
        atoms.calc = calc
        optimizer = TimedRL(atoms, agent, logfile=None)
        optimizer.run(fmax=fmax, steps=steps)
        calls.append(optimizer.force_calls)
    total = time.perf_counter() - start
    return total, TimedRL.policy_seconds, calc.seconds, calls


def batched(starts, agent, calc, fmax, steps, batch_size):
    calc.seconds = 0.0
    profile = BatchProfile()
    start = time.perf_counter()
    results = relax_many(starts, agent, fmax=fmax, steps=steps, calculator=calc, batch_size=batch_size, profile=profile)
    total = time.perf_counter() - start
    return total, profile.policy_seconds, calc.seconds, [r.force_calls for r in results], profile, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-b2", type=int, default=1000)
    parser.add_argument("--n-random", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fmax", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=None, help="lockstep batch (default: all at once)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--random-cache", default=None, help="extxyz file of the random cells (written if missing)")
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=r".*stopping unconverged.*")
    agent = load_shipped_agent("alfe")
    sets = []
    if args.n_b2:
        sets.append((f"{args.n_b2} distorted B2 (2 atoms)", b2_starts(args.n_b2, args.seed)))
    if args.n_random:
        t0 = time.perf_counter()
        if args.random_cache and os.path.isfile(args.random_cache):
            cells = read(args.random_cache, index=":")[: args.n_random]
        else:
            cells = random_dataset(args.n_random, 8, seed=args.seed)
            if args.random_cache:
                write(args.random_cache, cells)
        print(f"{len(cells)} random 8-atom cells in {time.perf_counter() - t0:.0f} s", flush=True)
        starts = [distort(atoms, 0.5, np.random.default_rng(args.seed + k), min_distance=1.5) for k, atoms in enumerate(cells)]
        for atoms in starts:
            atoms.info.clear()
        sets.append((f"{args.n_random} distorted random 8-atom cells", starts))
    calc = TimedEAM(max_instances=max(64, args.n_random + 1))
    rows = []
    for label, starts in sets:
        # Warm up: LAMMPS instances of every cell, torch's first calls.
        relax_many(starts[: min(len(starts), 256)], agent, fmax=args.fmax, steps=2, calculator=calc)
        single, lock = [], []
        for _ in range(args.repeats):
            single.append(one_at_a_time(starts, agent, calc, args.fmax, args.steps))
            lock.append(batched(starts, agent, calc, args.fmax, args.steps, args.batch_size))
            print(f"{label}: one at a time {single[-1][0]:.1f} s, lockstep {lock[-1][0]:.1f} s", flush=True)
        mismatched = sum(a != b for a, b in zip(single[0][3], lock[0][3], strict=True))
        results = lock[0][5]
        profile = lock[0][4]
        rows.append((label, len(starts), single, lock, mismatched, results, profile))

    print("\n| starts | mode | relaxations/s | total s | policy s | calculator s | rest s | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for label, n, single, lock, _, _, _ in rows:
        med = {
            name: [statistics.median(run[i] for run in runs) for i in range(3)]
            for name, runs in (("one", single), ("lock", lock))
        }
        ratio = med["one"][0] / med["lock"][0]
        for name, title in (("one", "one at a time"), ("lock", "lockstep")):
            total, policy, calculator = med[name]
            extra = f"{ratio:.2f}×" if name == "lock" else "1"
            print(
                f"| {label} | {title} | {n / total:.1f} | {total:.2f} | {policy:.2f} | {calculator:.2f} | "
                f"{total - policy - calculator:.2f} | {extra} |"
            )
    print()
    for label, n, _, _, mismatched, results, profile in rows:
        calls = [r.force_calls for r in results]
        steps = statistics.median(r.steps for r in results)
        converged = sum(r.converged for r in results)
        print(
            f"{label}: force calls differ between the modes for {mismatched} of {n}; converged {converged}/{n}; "
            f"force calls median {statistics.median(calls):.0f}, steps median {steps:.0f}; "
            f"lockstep: {profile.lockstep_steps} steps, {profile.policy_passes} policy passes of "
            f"{profile.policy_rows / max(profile.policy_passes, 1):.1f} structures on average"
        )
    print("\nWhere the lockstep's time goes (medians over the repeats, s):")
    parts = ("admission", "observation", "policy", "moves", "calculator", "bookkeeping")
    print("| starts | total | " + " | ".join(parts) + " | rest (input checks, results, loop) |")
    print("|---|---|" + "---|" * len(parts) + "---|")
    for label, _, _, lock, _, _, _ in rows:
        total = statistics.median(run[0] for run in lock)
        seconds = [statistics.median(run[4].extra.get(part, 0.0) for run in lock) for part in parts]
        cells = " | ".join(f"{value:.2f}" for value in seconds)
        print(f"| {label} | {total:.2f} | {cells} | {total - sum(seconds):.2f} |")
    print(f"torch threads {th.get_num_threads()}, batch size {args.batch_size or 'all'}, repeats {args.repeats}")


if __name__ == "__main__":
    main()
