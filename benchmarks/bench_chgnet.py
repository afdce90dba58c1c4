#!/usr/bin/env python
"""Time one energy+forces(+stress) call of CHGNet (the optional extra) on small SrTiO3 cells.

Run by hand (not a test), from the repository root, with the extra installed (``pip install ".[chgnet]"``)::

    python benchmarks/bench_chgnet.py --threads 2 1 --calls 30

Cells: cubic perovskite SrTiO3 (a = 3.905 Å, 5 atoms) and its 2×2×1 supercell (20 atoms); every timed call sees
a fresh geometry (ideal positions displaced by U(−0.1, 0.1) Å), through ``make_calculator("chgnet")`` and ASE's
``atoms.get_forces()``. The 5- and 20-atom calls (and the thread counts) alternate, so that load on the machine
affects all alike;
each entry is the median of the timed calls, after three untimed warm-up calls per cell.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(ROOT))


def srtio3(repeat: tuple[int, int, int]):
    from ase import Atoms

    scaled = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    return Atoms("SrTiO3", scaled_positions=scaled, cell=np.eye(3) * 3.905, pbc=True).repeat(repeat)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[2], help="torch thread counts, alternated")
    parser.add_argument("--calls", type=int, default=30, help="timed calls per cell")
    args = parser.parse_args(argv)

    import torch

    from sb3_crystal.calculators import make_calculator

    calc = make_calculator("chgnet")
    rng = np.random.default_rng(0)
    cells = {5: srtio3((1, 1, 1)), 20: srtio3((2, 2, 1))}
    times: dict[tuple[int, int], list[float]] = {(t, n): [] for t in args.threads for n in cells}
    load = os.getloadavg()[0]
    for k in range(3 + args.calls):
        for threads in args.threads:
            torch.set_num_threads(threads)
            for n, ideal in cells.items():
                atoms = ideal.copy()
                atoms.positions += rng.uniform(-0.1, 0.1, atoms.positions.shape)
                atoms.calc = calc
                start = time.perf_counter()
                atoms.get_forces()
                if k >= 3:
                    times[threads, n].append(time.perf_counter() - start)
    medians = {key: statistics.median(t) * 1e3 for key, t in times.items()}
    print(
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, chgnet {importlib.metadata.version('chgnet')} (model {calc.version}), "
        f"load average {load:.1f} at start, {os.getloadavg()[0]:.1f} at end"
    )
    print("\n| torch threads | atoms | ms per call (median) | calls |\n|---:|---:|---:|---:|")
    for (threads, n), value in medians.items():
        print(f"| {threads} | {n} | {value:.1f} | {len(times[threads, n])} |")
    for threads in args.threads:
        print(f"\n{threads} threads, 20 atoms / 5 atoms: {medians[threads, 20] / medians[threads, 5]:.2f}×")


if __name__ == "__main__":
    main()
