#!/usr/bin/env python
"""Time one energy+forces call of the default calculator against ASE's and matscipy's EAM on the same file.

Run by hand (not a test), from the repository root::

    python benchmarks/bench_calculators.py            # prints the table, updates docs/benchmarks.md
    python benchmarks/bench_calculators.py --no-write --budget 1

Structures: B2 AlFe (``build_prototype("AlFe-B2")``) and its 2×2×2 and 5×5×10 supercells (2, 16, 500 atoms).
Every timed call sees a fresh geometry (ideal positions displaced by U(−0.1, 0.1) Å per coordinate), so no
calculator can answer from its cache. The default calculator is timed twice: through the normal ASE route
(``atoms.get_potential_energy(); atoms.get_forces()``) and through its ``compute`` fast path. Each entry is the
median over repeats measured in this run, after two untimed warm-up calls (LAMMPS set-up, spline tables).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import math
import os
import platform
import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from ase import Atoms

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(ROOT))

from sb3_crystal.calculators import DEFAULT_POTENTIAL, make_calculator, matscipy_eam, resolve_potential  # noqa: E402
from sb3_crystal.structures.prototypes import build_prototype  # noqa: E402

HEADING = "## Calculator speed"
#: Supercell repeats of the 2-atom B2 cell for each size.
SIZES: dict[int, tuple[int, int, int]] = {2: (1, 1, 1), 16: (2, 2, 2), 500: (5, 5, 10)}
#: Speed-up targets (ASE EAM time / default time, ASE route) by size.
TARGETS: dict[int, float] = {2: 100.0, 500: 300.0}


def time_calls(
    atoms: Atoms, call: Callable[[Atoms], None], rng: np.random.Generator, budget: float, min_repeats: int, max_repeats: int
) -> tuple[float, int]:
    """Median seconds of ``call`` on freshly displaced copies of ``atoms``.

    :param atoms: ideal structure (its positions are the base of every displacement).
    :param call: computes energy and forces of the structure it is given.
    :param rng: random generator for the displacements.
    :param budget: stop repeating after this many seconds of timed calls (once ``min_repeats`` are done).
    :param min_repeats: fewest timed calls.
    :param max_repeats: most timed calls.
    :return: median seconds per call and number of timed calls.
    """
    base = atoms.positions.copy()
    work = atoms.copy()
    for _ in range(2):  # warm-up: instance set-up, spline tables
        work.positions = base + rng.uniform(-0.1, 0.1, base.shape)
        call(work)
    samples: list[float] = []
    while len(samples) < max_repeats and (len(samples) < min_repeats or sum(samples) < budget):
        work.positions = base + rng.uniform(-0.1, 0.1, base.shape)
        t0 = time.perf_counter()
        call(work)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples), len(samples)


def ase_route(calc: object) -> Callable[[Atoms], None]:
    """Energy and forces through the ASE ``Atoms`` interface."""

    def call(atoms: Atoms) -> None:
        atoms.calc = calc
        atoms.get_potential_energy()
        atoms.get_forces()

    return call


def fast_route(calc: object) -> Callable[[Atoms], None]:
    """Energy and forces through ``LammpsEAMCalculator.compute`` (no ASE bookkeeping)."""

    def call(atoms: Atoms) -> None:
        calc.compute(atoms.numbers, np.asarray(atoms.cell), atoms.positions)  # type: ignore[attr-defined]

    return call


def calculators(potential: Path) -> dict[str, Callable[[Atoms], None]]:
    """The contenders, each a function computing energy and forces of a structure."""
    from ase.calculators.eam import EAM

    default = make_calculator("lammps")
    return {
        "ase_eam": ase_route(EAM(potential=str(potential))),
        "matscipy": ase_route(matscipy_eam(str(potential))),
        "lammps": ase_route(default),
        "lammps_compute": fast_route(make_calculator("lammps")),
    }


def agreement(structure: Atoms, potential: Path, rng: np.random.Generator) -> tuple[float, float]:
    """Largest energy (eV) and force component (eV/Å) differences of the default calculator vs ASE's EAM."""
    from ase.calculators.eam import EAM

    atoms = structure.copy()
    atoms.positions += rng.uniform(-0.1, 0.1, atoms.positions.shape)
    results = []
    for calc in (EAM(potential=str(potential)), make_calculator("lammps")):
        atoms.calc = calc
        results.append((atoms.get_potential_energy(), atoms.get_forces().copy()))
    (e_ref, f_ref), (e, f) = results
    return abs(e - e_ref), float(np.abs(f - f_ref).max())


def machine() -> dict[str, str]:
    """Core count (as ``nproc`` reports it), CPU model, Python and package versions."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = []
    for package in ("numpy", "scipy", "ase", "matscipy", "lammps", "mpich"):
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package} (not installed)")
    return {
        "nproc": str(cores),
        "cpu": model,
        "python": f"Python {platform.python_version()} ({platform.system()} {platform.machine()})",
        "versions": ", ".join(versions),
    }


def render(
    results: dict[int, dict[str, tuple[float, int]]], errors: dict[int, tuple[float, float]], args: argparse.Namespace
) -> str:
    """The markdown section: context, table, target check."""
    info = machine()
    ms = {n: {name: 1e3 * t for name, (t, _) in row.items()} for n, row in results.items()}
    lines = [
        HEADING,
        "",
        "Time of one energy+forces call on the Mendelev 2005 Al–Fe EAM file (`AlFe_mm.eam.fs`), B2 AlFe and "
        "its supercells, every call on a fresh geometry (ideal positions + U(−0.1, 0.1) Å). Medians of the timed "
        "calls (their number in parentheses), all measured in one run; ratios are ASE EAM time / default time. "
        "*Default* is "
        '`make_calculator("lammps")` through `atoms.get_potential_energy()` + `atoms.get_forces()`; '
        "*compute* is its `LammpsEAMCalculator.compute(numbers, cell, positions)` fast path.",
        "",
        f"- Command: `{args.command}`",
        f"- Machine: {info['nproc']} cores (`nproc`), {info['cpu']}; {info['python']}; 1-min load average "
        f"{args.load[0]:.1f} at start, {args.load[1]:.1f} at end (other work on the machine slows every column alike)",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Versions: {info['versions']}",
        "",
        "| N atoms | ASE EAM (ms) | matscipy EAM (ms) | default (ms) | compute (ms) "
        "| ASE EAM / default | ASE EAM / compute | matscipy / default | max abs ΔE, ΔF vs ASE EAM |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def fmt(value: float) -> str:
        return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"

    for n, row in ms.items():
        reps = {name: results[n][name][1] for name in row}
        d_e, d_f = errors[n]
        lines.append(
            f"| {n} | {fmt(row['ase_eam'])} ({reps['ase_eam']}) | {fmt(row['matscipy'])} ({reps['matscipy']}) "
            f"| {fmt(row['lammps'])} ({reps['lammps']}) | {fmt(row['lammps_compute'])} ({reps['lammps_compute']}) "
            f"| {row['ase_eam'] / row['lammps']:.0f}× | {row['ase_eam'] / row['lammps_compute']:.0f}× "
            f"| {row['matscipy'] / row['lammps']:.0f}× | {d_e:.1e} eV, {d_f:.1e} eV/Å |"
        )
    lines.append("")
    for n, target in TARGETS.items():
        if n in ms:
            ratio = ms[n]["ase_eam"] / ms[n]["lammps"]
            verdict = "met" if ratio >= target else "NOT met"
            lines.append(f"- Target ≥ {target:.0f}× at {n} atoms: {ratio:.0f}× ({verdict}).")
    return "\n".join(lines) + "\n"


def update_doc(path: Path, section: str) -> None:
    """Put ``section`` into ``path``, replacing an existing ``## Calculator speed`` section up to the next ``##``."""
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(HEADING)}[ \t]*\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    text = text.rstrip("\n") + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _load() -> float:
    """1-minute load average (NaN where the OS does not say)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return math.nan


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the section and (unless ``--no-write``) update the docs file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), choices=list(SIZES), help="atom counts")
    parser.add_argument("--budget", type=float, default=3.0, help="seconds of timed calls per entry")
    parser.add_argument("--min-repeats", type=int, default=5, help="fewest timed calls per entry")
    parser.add_argument("--max-repeats", type=int, default=2000, help="most timed calls per entry")
    parser.add_argument("--seed", type=int, default=0, help="seed of the displacements")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md", help="markdown file to update")
    parser.add_argument("--no-write", action="store_true", help="only print")
    args = parser.parse_args(argv)
    args.command = shlex.join(["python", "benchmarks/bench_calculators.py", *(sys.argv[1:] if argv is None else argv)])

    args.load = (_load(), math.nan)
    potential = resolve_potential(DEFAULT_POTENTIAL)
    rng = np.random.default_rng(args.seed)
    contenders = calculators(potential)
    results: dict[int, dict[str, tuple[float, int]]] = {}
    errors: dict[int, tuple[float, float]] = {}
    for n in args.sizes:
        structure = build_prototype("AlFe-B2").repeat(SIZES[n])
        assert len(structure) == n
        results[n] = {}
        for name, call in contenders.items():
            results[n][name] = time_calls(structure, call, rng, args.budget, args.min_repeats, args.max_repeats)
            print(f"N={n:4d} {name:15s} {1e3 * results[n][name][0]:9.3f} ms ({results[n][name][1]} calls)", file=sys.stderr)
        errors[n] = agreement(structure, potential, rng)
    args.load = (args.load[0], _load())
    section = render(results, errors, args)
    print(section)
    if not args.no_write:
        update_doc(args.doc, section)
        print(f"updated {args.doc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
