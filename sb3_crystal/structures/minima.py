"""Relaxed minima: fixed-cell relaxation, a disk cache, and the Hessian test of whether a minimum is real.

Under the Mendelev 2005 potential several of the paper's cells (simple hexagonal AlFe, Al8Fe2, about half of
the N=2–3 set) relax to symmetry-held saddle points: the forces vanish but the fixed-cell Hessian has a negative
eigenvalue, and distorted starts legitimately fall into other minima. :class:`MinimumReport` says which.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read, write
from ase.optimize import BFGS, FIRE

from sb3_crystal.calculators import CalculatorSpec, calculator_fingerprint, make_calculator
from sb3_crystal.files import atomic_file
from sb3_crystal.structures.geometry import max_force

#: Below this lowest non-translational Hessian eigenvalue (eV/Å²) a stationary point counts as a saddle.
SADDLE_TOLERANCE = -1e-3


class RelaxationError(RuntimeError):
    """A structure did not reach the requested force threshold."""


@dataclass(frozen=True)
class MinimumReport:
    """What the pre-relaxation of one structure found.

    :param source: where the structure came from (file, prototype name).
    :param formula: chemical formula.
    :param n_atoms: atoms in the cell.
    :param energy: energy at the stationary point, eV.
    :param fmax: largest atomic force there, eV/Å.
    :param n_steps: optimizer steps the relaxation took (also when the result is read from the cache).
    :param lowest_eigenvalue: lowest fixed-cell Hessian eigenvalue with rigid translations removed, eV/Å²
        (``inf`` for a 1-atom cell, which has no internal degree of freedom).
    :param is_minimum: ``lowest_eigenvalue`` ≥ :data:`SADDLE_TOLERANCE`.
    """

    source: str
    formula: str
    n_atoms: int
    energy: float
    fmax: float
    n_steps: int
    lowest_eigenvalue: float
    is_minimum: bool


def relax_fixed_cell(
    atoms: Atoms, calculator: CalculatorSpec = "lammps", fmax: float = 1e-3, max_steps: int = 3000
) -> tuple[Atoms, int]:
    """Relax atomic positions at fixed cell with BFGS (FIRE first when BFGS stalls).

    :param atoms: start structure (not modified).
    :param calculator: calculator spec (see :func:`sb3_crystal.calculators.make_calculator`).
    :param fmax: force threshold in eV/Å.
    :param max_steps: optimizer steps allowed in each stage.
    :return: the relaxed copy (without calculator) and the number of steps taken.
    :raises RelaxationError: when ``fmax`` is not reached.
    """
    work = atoms.copy()
    work.calc = make_calculator(calculator)
    steps = 0
    # BFGS is fast near a minimum; far-from-equilibrium random cells can make it stall, where FIRE is robust.
    for optimizer_class in (BFGS, FIRE, BFGS):
        optimizer = optimizer_class(work, logfile=None, maxstep=0.2)
        optimizer.run(fmax=fmax, steps=max_steps)
        steps += optimizer.nsteps
        if max_force(work.get_forces()) <= fmax:
            relaxed = work.copy()
            relaxed.calc = None
            return relaxed, steps
    raise RelaxationError(
        f"{atoms.info.get('source', atoms.get_chemical_formula())}: fixed-cell relaxation stopped at "
        f"fmax {max_force(work.get_forces()):.2e} eV/Å after {steps} steps (asked {fmax})"
    )


def fixed_cell_hessian(atoms: Atoms, calculator: CalculatorSpec = "lammps", delta: float = 1e-3) -> np.ndarray:
    """Fixed-cell Hessian d²E/dx_i dx_j (eV/Å², shape (3N, 3N)) by central differences of the forces.

    :param atoms: the structure.
    :param calculator: calculator spec.
    :param delta: finite-difference displacement in Å.
    """
    calc = make_calculator(calculator)
    work = atoms.copy()
    work.calc = calc
    n = 3 * len(atoms)
    hessian = np.empty((n, n))
    base = atoms.positions.copy()
    for k in range(n):
        columns = []
        for sign in (1.0, -1.0):
            displaced = base.copy()
            displaced[k // 3, k % 3] += sign * delta
            work.positions = displaced
            columns.append(work.get_forces().ravel())
        hessian[k] = -(columns[0] - columns[1]) / (2 * delta)
    return 0.5 * (hessian + hessian.T)


def lowest_internal_eigenvalue(hessian: np.ndarray) -> float:
    """Lowest Hessian eigenvalue after removing the three rigid translations (which cost no energy)."""
    n = hessian.shape[0]
    if n <= 3:
        return float("inf")
    translations = np.zeros((n, 3))
    for axis in range(3):
        translations[axis::3, axis] = 1.0
    # Orthonormal basis of the complement of the translations: the last n-3 columns of a full QR.
    q, _ = np.linalg.qr(np.hstack([translations, np.eye(n)[:, : n - 3]]), mode="complete")
    internal = q[:, 3:]
    return float(np.linalg.eigvalsh(internal.T @ hessian @ internal).min())


def default_cache_dir() -> Path:
    """``$SB3_CRYSTAL_CACHE/minima`` or ``~/.cache/sb3_crystal/minima``."""
    root = os.environ.get("SB3_CRYSTAL_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "sb3_crystal") / "minima"


def _cache_key(atoms: Atoms, fingerprint: str, fmax: float, decimals: int = 6) -> str:
    frac = atoms.get_scaled_positions(wrap=True)
    digest = hashlib.sha256()
    digest.update(atoms.numbers.astype(np.int64).tobytes())
    digest.update(np.round(np.asarray(atoms.cell), decimals).tobytes())
    digest.update(np.round(frac, decimals).tobytes())
    digest.update(f"{fingerprint}|{fmax:.3e}".encode())
    return digest.hexdigest()[:24]


def relaxed_minimum(
    atoms: Atoms,
    calculator: CalculatorSpec = "lammps",
    fmax: float = 1e-3,
    cache_dir: str | os.PathLike | bool | None = None,
    check_hessian: bool = True,
) -> tuple[Atoms, MinimumReport]:
    """The fixed-cell relaxed form of ``atoms``, computed once and then read from a disk cache.

    The cache key is the structure (species, cell, wrapped fractional positions to 1e-6) and the calculator's
    energy surface (:func:`~sb3_crystal.calculators.calculator_fingerprint`), so changing either recomputes.

    :param atoms: structure to relax (not modified).
    :param calculator: calculator spec.
    :param fmax: force threshold in eV/Å.
    :param cache_dir: cache folder; ``None`` for :func:`default_cache_dir`, ``False`` for no cache.
    :param check_hessian: compute the lowest Hessian eigenvalue (3N force calls pairs) to tell minima from saddles.
    :return: the relaxed structure and its :class:`MinimumReport` (also stored in ``atoms.info["minimum"]``).
    """
    calc = make_calculator(calculator)
    source = str(atoms.info.get("source", atoms.get_chemical_formula()))
    folder = None if cache_dir is False else Path(default_cache_dir() if cache_dir in (None, True) else cache_dir)
    path = folder / f"{_cache_key(atoms, calculator_fingerprint(calc), fmax)}.extxyz" if folder else None
    if path is not None and path.is_file():
        try:
            cached = read(path)
            # the same structure may come from another source (a file, a prototype name) than when cached
            report = replace(MinimumReport(**json.loads(cached.info["minimum_report"])), source=source)
            if report.lowest_eigenvalue == report.lowest_eigenvalue or not check_hessian:  # not NaN
                return _finish(cached, atoms, report)
        except Exception as err:  # a corrupt entry is recomputed, not fatal
            warnings.warn(f"Ignoring unreadable cache entry {path}: {err}", stacklevel=2)
    relaxed, n_steps = relax_fixed_cell(atoms, calc, fmax=fmax)
    relaxed.calc = calc
    energy, forces = relaxed.get_potential_energy(), relaxed.get_forces()
    relaxed.calc = None
    lowest = lowest_internal_eigenvalue(fixed_cell_hessian(relaxed, calc)) if check_hessian else float("nan")
    report = MinimumReport(
        source=source,
        formula=relaxed.get_chemical_formula(),
        n_atoms=len(relaxed),
        energy=float(energy),
        fmax=max_force(forces),
        n_steps=n_steps,
        lowest_eigenvalue=lowest,
        is_minimum=bool(lowest >= SADDLE_TOLERANCE) if check_hessian else True,
    )
    if path is not None:
        _write_atomically(relaxed, report, path)
    return _finish(relaxed, atoms, report)


def _finish(relaxed: Atoms, original: Atoms, report: MinimumReport) -> tuple[Atoms, MinimumReport]:
    result = Atoms(relaxed.numbers, positions=relaxed.positions, cell=relaxed.cell, pbc=True)
    result.info.update({k: v for k, v in original.info.items() if k != "minimum"})
    result.info["minimum"] = report
    return result, report


def _write_atomically(atoms: Atoms, report: MinimumReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=True)
    entry.info["minimum_report"] = json.dumps(asdict(report))
    with atomic_file(path) as tmp:
        write(tmp, entry, format="extxyz")


def escape_saddle(
    saddle: Atoms,
    calculator: CalculatorSpec = "lammps",
    fmax: float = 1e-3,
    cache_dir: str | os.PathLike | bool | None = None,
    amplitude: float = 0.05,
    max_tries: int = 5,
) -> tuple[Atoms, MinimumReport]:
    """Push a saddle point off its symmetry and relax again, until a true minimum is reached.

    The push is random (U(−amplitude, amplitude) Å per coordinate) but seeded by the structure, so the same
    saddle always leads to the same minimum (and the result is cached like any relaxation).

    :param saddle: a relaxed structure whose Hessian has a negative eigenvalue.
    :param calculator: calculator spec.
    :param fmax: force threshold of the relaxations, eV/Å.
    :param cache_dir: minima cache folder (see :func:`relaxed_minimum`).
    :param amplitude: size of the push, Å.
    :param max_tries: pushes before giving up with :class:`RelaxationError`.
    """
    calc = make_calculator(calculator)
    # seeded by the saddle at 1e-3 precision: relaxations that end a few 1e-7 apart push the same way
    seed = int(_cache_key(saddle, "escape", fmax, decimals=3)[:8], 16)
    rng = np.random.default_rng(seed)
    current = saddle
    for _ in range(max_tries):
        pushed = current.copy()
        pushed.positions = current.positions + rng.uniform(-amplitude, amplitude, current.positions.shape)
        current, report = relaxed_minimum(pushed, calc, fmax=fmax, cache_dir=cache_dir)
        if report.is_minimum:
            return current, report
    raise RelaxationError(
        f"{saddle.info.get('source', saddle.get_chemical_formula())}: still a saddle point after {max_tries} pushes"
    )
