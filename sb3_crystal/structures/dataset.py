"""Structure datasets: specs (prototype names, files, random sets) turned into relaxed minima."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import replace

import numpy as np
from ase import Atoms

from sb3_crystal.calculators import CalculatorSpec, make_calculator
from sb3_crystal.structures.geometry import closest_pair
from sb3_crystal.structures.minima import MinimumReport, escape_saddle, relaxed_minimum
from sb3_crystal.structures.prototypes import PROTOTYPES, build_prototype
from sb3_crystal.structures.validation import check_structure, check_type

StructureSpec = str | os.PathLike | Atoms | Sequence[str | os.PathLike | Atoms]

SADDLE_POLICIES = ("keep", "escape", "drop")

_RANDOM_SPEC = re.compile(r"^random:(?P<body>.*)$")


def with_two_atoms_at_least(atoms: Atoms) -> Atoms:
    """A 1-atom cell as its 2×1×1 supercell (a single atom at fixed cell never feels a force); others unchanged."""
    if len(atoms) != 1:
        return atoms
    doubled = atoms.repeat((2, 1, 1))
    doubled.info["source"] = f"{atoms.info.get('source', atoms.get_chemical_formula())} (2x1x1)"
    return doubled


class EmptyDatasetError(ValueError):
    """A dataset spec produced no structure."""


def _parse_random_spec(spec: str) -> list[Atoms]:
    """``random:count=20,atoms=2-3,seed=0`` → :func:`sb3_crystal.structures.random.random_dataset`."""
    fields = dict(item.split("=", 1) for item in _RANDOM_SPEC.match(spec)["body"].split(",") if "=" in item)  # type: ignore[index]
    unknown = set(fields) - {"count", "atoms", "seed"}
    if unknown or "count" not in fields or "atoms" not in fields:
        raise ValueError(f"Random dataset spec '{spec}' must read 'random:count=<n>,atoms=<n or lo-hi>[,seed=<s>]'")
    low, _, high = fields["atoms"].partition("-")
    n_atoms: int | tuple[int, int] = (int(low), int(high)) if high else int(low)
    from sb3_crystal.structures.random import random_dataset  # pyxtal is slow to import: only when asked

    return random_dataset(int(fields["count"]), n_atoms, seed=int(fields.get("seed", 0)))


def load_structures(spec: StructureSpec) -> list[Atoms]:
    """Unrelaxed structures from a spec.

    :param spec: an ``Atoms``; a prototype name (see :data:`~sb3_crystal.structures.prototypes.PROTOTYPES`);
        a structure file (CIF, POSCAR, extxyz, or the paper's dataset CSV); ``"random:count=20,atoms=2-3,seed=0"``
        for random Al–Fe crystals; ``"generate:<kind>,...,count=<n>[,seed=<s>]"`` for structures of a generator
        (see :mod:`sb3_crystal.structures.generators`); or a list of these.
    :return: copies, each with ``info["source"]`` set.
    """
    if isinstance(spec, Atoms):
        atoms = spec.copy()
        atoms.info.setdefault("source", atoms.get_chemical_formula())
        return [atoms]
    if isinstance(spec, (str, os.PathLike)):
        text = os.fspath(spec)
        canonical = {name.lower(): name for name in PROTOTYPES}
        if text.lower() in canonical:
            atoms = build_prototype(text)
            atoms.info["source"] = canonical[text.lower()]
            return [atoms]
        if _RANDOM_SPEC.match(text):
            return _parse_random_spec(text)
        if text.startswith("generate:"):
            from sb3_crystal.structures.generators import generated_structures  # imports this module

            return generated_structures(text)
        if not os.path.exists(text):
            raise FileNotFoundError(
                f"Structure '{text}' is neither a prototype ({', '.join(PROTOTYPES)}), a random or generate: spec, "
                "nor an existing file"
            )
        from sb3_crystal.structures.io import read_structures

        found = read_structures(text)
        for k, atoms in enumerate(found):
            atoms.info.setdefault("source", text if len(found) == 1 else f"{text}:{k}")
        return found
    if type(spec).__module__.split(".")[0] == "pymatgen":  # a Structure is a Sequence of sites: say how to convert
        check_type(spec, "structures")
    if isinstance(spec, Sequence):
        return [atoms for item in spec for atoms in load_structures(item)]
    raise TypeError(f"Cannot read structures from {type(spec).__name__}")


class StructureDataset(Sequence[Atoms]):
    """Relaxed minima to distort: the starting points of relaxation episodes.

    Every structure is checked (:func:`~sb3_crystal.structures.validation.check_structure`: atoms, a fully
    periodic non-singular cell, finite positions, elements covered by the calculator, no atoms closer than
    ``min_distance``),
    1-atom cells become 2×1×1 supercells (a single atom at fixed cell never feels a force), and each is relaxed
    at fixed cell to ``relax_fmax`` with a disk cache (:func:`~sb3_crystal.structures.minima.relaxed_minimum`).

    :param structures: dataset spec (see :func:`load_structures`).
    :param calculator: calculator spec.
    :param relax_fmax: force threshold of the pre-relaxation, eV/Å.
    :param min_distance: input structures with atoms closer than this (Å) are rejected.
    :param cache_dir: minima cache folder (``None`` default, ``False`` none).
    :param check_hessian: classify each relaxed structure as minimum or saddle point.
    :param saddles: what to do with structures that relax to a saddle point of the potential: ``"keep"``
        (default: distorted starts may then fall into other minima), ``"escape"`` (push off the saddle and relax
        into a true minimum, reproducibly) or ``"drop"`` (leave them out).
    """

    def __init__(
        self,
        structures: StructureSpec,
        calculator: CalculatorSpec = "lammps",
        relax_fmax: float = 1e-3,
        min_distance: float = 0.5,
        cache_dir: str | os.PathLike | bool | None = None,
        check_hessian: bool = True,
        saddles: str = "keep",
    ) -> None:
        if saddles not in SADDLE_POLICIES:
            raise ValueError(f"saddles must be one of {SADDLE_POLICIES}, got {saddles!r}")
        if saddles != "keep" and not check_hessian:
            raise ValueError(f"saddles={saddles!r} needs check_hessian=True")
        if not (isinstance(relax_fmax, (int, float)) and math.isfinite(relax_fmax) and relax_fmax > 0):
            raise ValueError(f"relax_fmax must be a finite number > 0 eV/Å, got {relax_fmax!r}")
        if not (isinstance(min_distance, (int, float)) and math.isfinite(min_distance) and min_distance >= 0):
            raise ValueError(f"min_distance must be a finite number ≥ 0 Å, got {min_distance!r}")
        raw = load_structures(structures)
        if not raw:
            raise EmptyDatasetError(f"The structure spec {structures!r} holds no structure")
        calc = make_calculator(calculator)
        self.minima: list[Atoms] = []
        self.reports: list[MinimumReport] = []
        for atoms in raw:
            where = str(atoms.info.get("source", atoms.get_chemical_formula()))
            check_structure(atoms, where=where, min_distance=min_distance, calculator=calc)
            atoms = with_two_atoms_at_least(atoms)
            minimum, report = relaxed_minimum(atoms, calc, fmax=relax_fmax, cache_dir=cache_dir, check_hessian=check_hessian)
            if not report.is_minimum and saddles == "drop":
                continue
            if not report.is_minimum and saddles == "escape":
                minimum, escaped = escape_saddle(minimum, calc, fmax=relax_fmax, cache_dir=cache_dir)
                report = replace(escaped, source=f"{report.source} (escaped saddle)")
            self.minima.append(minimum)
            self.reports.append(report)
        if not self.minima:
            raise EmptyDatasetError(f"Every structure of {structures!r} relaxed to a saddle point and saddles='drop'")

    def __len__(self) -> int:
        return len(self.minima)

    def __getitem__(self, index: int) -> Atoms:  # type: ignore[override]
        return self.minima[index]

    def __iter__(self) -> Iterator[Atoms]:
        return iter(self.minima)

    @property
    def max_atoms(self) -> int:
        """Largest number of atoms in a cell."""
        return max(len(atoms) for atoms in self.minima)

    @property
    def atomic_numbers(self) -> tuple[int, ...]:
        """Sorted atomic numbers present in the dataset."""
        return tuple(sorted({int(z) for atoms in self.minima for z in atoms.numbers}))

    def nearest_neighbour_distances(self) -> np.ndarray:
        """Closest interatomic distance of each minimum, Å."""
        return np.array([closest_pair(atoms, search_radius=6.0)[2] for atoms in self.minima])

    def summary(self) -> str:
        """One line per structure: source, formula, atoms, energy per atom, minimum or saddle."""
        lines = []
        for report in self.reports:
            kind = "minimum" if report.is_minimum else f"SADDLE (lowest eigenvalue {report.lowest_eigenvalue:.3f} eV/Å²)"
            lines.append(
                f"{report.source}: {report.formula}, {report.n_atoms} atoms, "
                f"{report.energy / report.n_atoms:.4f} eV/atom, fmax {report.fmax:.1e} eV/Å, {kind}"
            )
        return "\n".join(lines)
