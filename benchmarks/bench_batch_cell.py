"""Variable-cell relaxations per second: many structures through ``relax_many(..., cell="frechet")`` against one
``HybridOptimizer(FrechetCellFilter(atoms))`` (or ``RLOptimizer``) after another.

Same run, same agent (the shipped Al–Fe agent), same calculator object, same starts, both modes on one BLAS thread
(as ``sb3-crystal relax --cell`` runs): strained Al–Fe cells, B2 AlFe (2 atoms) and its 2×1×1 row (4 atoms, rattled
by 0.03·U(−1, 1) Å), each under a volume change U(±5 %) and a symmetric shear U(±3 %). Each mode runs ``--repeats``
times, interleaved; the table gives the median wall time and the ratio. The force calls and final energies of every
structure are compared between the two modes.

::

    python benchmarks/bench_batch_cell.py --n-starts 120 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch as th
from ase.filters import FrechetCellFilter

from sb3_crystal.calculators import LammpsEAMCalculator
from sb3_crystal.relax import HybridOptimizer, RLOptimizer, load_shipped_agent, relax_many
from sb3_crystal.structures.prototypes import build_prototype
from sb3_crystal.threads import blas_threads


def strained_starts(count: int, seed: int) -> list:
    """``count`` strained cells, alternately B2 AlFe and its 4-atom row (rattled)."""
    rng = np.random.default_rng(seed)
    b2 = build_prototype("AlFe-B2")
    starts = []
    for k in range(count):
        atoms = b2.copy() if k % 2 == 0 else b2.repeat((2, 1, 1))
        shear = rng.uniform(-0.03, 0.03, (3, 3))
        deformation = np.eye(3) + (shear + shear.T) / 2
        deformation *= (rng.uniform(0.95, 1.05) / np.linalg.det(deformation)) ** (1 / 3)  # the volume change exact
        atoms.set_cell(atoms.cell @ deformation, scale_atoms=True)
        if len(atoms) > 2:
            atoms.positions += rng.uniform(-0.03, 0.03, atoms.positions.shape)
        atoms.info.clear()
        starts.append(atoms)
    return starts


def one_at_a_time(starts, agent, calc, fmax, steps, hybrid):
    results = []
    for start in starts:
        atoms = start.copy()
        atoms.calc = calc
        cls = HybridOptimizer if hybrid else RLOptimizer
        optimizer = cls(FrechetCellFilter(atoms), agent, logfile=None)
        converged = optimizer.run(fmax=fmax, steps=steps)
        results.append((bool(converged), optimizer.force_calls, float(atoms.get_potential_energy())))
    return results


def batched(starts, agent, calc, fmax, steps, hybrid):
    out = relax_many(starts, agent, fmax=fmax, steps=steps, calculator=calc, hybrid=hybrid, cell="frechet")
    return [(r.converged, r.force_calls, r.energy) for r in out]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-starts", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fmax", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    agent = load_shipped_agent("alfe")
    starts = strained_starts(args.n_starts, args.seed)
    print(f"{len(starts)} strained starts (B2 and 4-atom rows), fmax {args.fmax}, shipped agent, FrechetCellFilter")
    print("| mode | relaxer | relaxations/s | total s (median) | per repeat | converged | median force calls | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for hybrid in (True, False):
        relaxer = "HybridOptimizer" if hybrid else "RLOptimizer (agent alone)"
        times: dict[str, list[float]] = {"one at a time": [], "batch": []}
        outcomes: dict[str, list] = {}
        for _ in range(args.repeats):
            for mode, run in (("one at a time", one_at_a_time), ("batch", batched)):
                calc = LammpsEAMCalculator()
                with blas_threads(1):
                    begin = time.perf_counter()
                    outcomes[mode] = run(starts, agent, calc, args.fmax, args.steps, hybrid)
                    times[mode].append(time.perf_counter() - begin)
        base = statistics.median(times["one at a time"])
        for mode in ("one at a time", "batch"):
            total = statistics.median(times[mode])
            converged = sum(c for c, _, _ in outcomes[mode])
            calls = statistics.median(n for _, n, _ in outcomes[mode])
            per = ", ".join(f"{t:.1f}" for t in times[mode])
            print(
                f"| {mode} | {relaxer} | {len(starts) / total:.1f} | {total:.2f} | {per} | {converged}/{len(starts)} "
                f"| {calls:g} | {base / total:.2f}× |"
            )
        pairs = list(zip(outcomes["one at a time"], outcomes["batch"], strict=True))
        differ = sum(a[1] != b[1] for a, b in pairs)
        energy = max(abs(a[2] - b[2]) for a, b in pairs)
        print(f"  {relaxer}: force calls differ on {differ} of {len(pairs)}; largest energy difference {energy:.2g} eV")


if __name__ == "__main__":
    main()
