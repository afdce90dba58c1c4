"""Generators of start structures whose minimum nobody needs to know: a fresh structure on every call.

Every generator is a :class:`StructureGenerator`: ``sample(rng)`` draws one periodic, fixed-cell ``Atoms`` from
a ``numpy.random.Generator`` and nothing else (no global state, no relaxation, no calculator), so the same
generator state gives the same structure. Solid solutions and rattled cells cost milliseconds a call; a pyxtal
draw of a random cell is slower, and for 10–20 atoms in some compositions much slower (pyxtal redraws until the
atoms fit), which a "fresh structure every episode" loop should plan for (for instance by drawing ahead or from
a pool refreshed in the background). Three kinds:

- :class:`RandomCellGenerator` (``random_cell``): random symmetric binary cells (Al–Fe unless ``elements`` says
  otherwise) drawn with pyxtal (:func:`~sb3_crystal.structures.random.random_crystal`) at a random composition and
  a volume per atom drawn around Vegard's law between the elements' reference crystals (for Al–Fe the potential's
  fcc Al, 16.40 Å³, and bcc Fe, 11.64 Å³), with no two atoms closer than ``min_distance`` (periodic images
  included).
- :class:`SolidSolutionGenerator` (``solid_solution``): bcc, fcc or B2 supercells of n×n×n conventional cubic
  cells with random occupancy, vacancies and (B2) antisites, on ideal lattice sites plus a small rattle.
- :class:`RattledCellGenerator` (``rattled``): rattled copies of given (relaxed) cells.

Rattles and distortions are the paper's: every Cartesian coordinate moves by β·U(−1, 1)
(:func:`~sb3_crystal.structures.geometry.distort`), atoms of a pair closer than ``min_distance`` redrawn.

**Spec strings.** :func:`parse_generator_spec` reads ``"generate:<kind>[,<key>=<value>]..."``, for example
``"generate:solid_solution,lattice=bcc,size=2-3,al=0.1-0.5,vacancies=0-1"``. A range is written ``lo-hi``
(inclusive; one number means lo = hi), a list of structures ``a+b``. The keys are the constructor arguments:

====================  =============================================================================================
kind                  keys (defaults)
====================  =============================================================================================
``random_cell``       ``elements`` (Al+Fe), ``atoms`` (4-8), ``fraction`` (of the first element, 0-1; ``al`` for
                      Al+Fe), ``volume`` (0.9-1.1, × Vegard), ``min_distance`` (2.0), ``rattle`` (0: as drawn)
``solid_solution``    ``elements`` (Al+Fe), ``lattice`` (bcc, fcc or b2; required), ``size`` (2), ``fraction``
                      (bcc/fcc: 0-1; ``al`` for Al+Fe; not for b2), ``vacancies`` (0), ``antisites`` (0; b2 only),
                      ``rattle`` (0.05), ``a`` (Al+Fe: the host's; else Vegard's per structure),
                      ``min_distance`` (1.5)
``rattled``           ``from`` (prototype names or files joined by ``+``; required), ``beta`` (0.3),
                      ``min_distance`` (1.5), ``relax`` (yes: the cells' fixed-cell minima, from the cache)
====================  =============================================================================================

**Elements.** ``elements=Cu+Au`` names the two elements of a binary (any symbols ASE knows); ``fraction`` is the
share of the first. Without ``elements`` a generator is Al–Fe, and its spec and structures are exactly those of
the Al–Fe-only generators before ``elements`` existed (``al`` stays the name of the Al fraction there, and
``elements=Al+Fe,fraction=...`` means the same generator). Volumes per atom come from :data:`REFERENCE_LATTICES`:
the Mendelev potential's fcc Al and bcc Fe, EMT's fcc equilibrium for Ag, Au, Cu, Ni, Pd and Pt, else ASE's
reference crystal of the element (``ase.build.bulk``); for another potential pass ``a`` (solid solutions) or
scale with ``volume``.

Each generator's :attr:`~StructureGenerator.spec` writes it back in this form. As a dataset spec
(:func:`~sb3_crystal.structures.dataset.load_structures`) the keys ``count`` (required) and ``seed`` (0) draw a
fixed list: structure ``i`` comes from ``np.random.default_rng(SeedSequence(seed, spawn_key=(i,)))``
(:meth:`StructureGenerator.sample_many`), so a longer list with the same seed starts with the shorter one.
"""

from __future__ import annotations

import math
import operator
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np
from ase import Atoms

from sb3_crystal.structures.geometry import check_min_distance, distort

__all__ = [
    "GENERATORS",
    "RandomCellGenerator",
    "RattledCellGenerator",
    "SolidSolutionGenerator",
    "StructureGenerator",
    "generated_structures",
    "parse_generator_spec",
]

#: Equilibrium cubic lattice constants (Å) of the Mendelev 2005 potential: the hosts of Al–Fe solid solutions.
HOST_LATTICE_CONSTANTS: dict[str, float] = {"bcc": 2.8553, "fcc": 4.0333, "b2": 2.8513}

#: The elements of a generator when none are given: the default potential's Al–Fe.
DEFAULT_ELEMENTS: tuple[str, str] = ("Al", "Fe")

#: Reference lattice (kind, cubic constant in Å) per element, whose volume per atom Vegard's law interpolates.
#: Al and Fe: fcc Al and bcc Fe of the Mendelev 2005 potential. Ag, Au, Cu, Ni, Pd, Pt: the fcc equilibrium of
#: ASE's EMT (energy per atom minimised over the cubic constant; a test recomputes them). Any other element falls
#: back on ASE's reference data (``ase.build.bulk``: experimental ground-state crystals).
REFERENCE_LATTICES: dict[str, tuple[str, float]] = {
    "Al": ("fcc", 4.0333),
    "Fe": ("bcc", 2.8553),
    "Ag": ("fcc", 4.0636),
    "Au": ("fcc", 4.0562),
    "Cu": ("fcc", 3.5898),
    "Ni": ("fcc", 3.4871),
    "Pd": ("fcc", 3.8787),
    "Pt": ("fcc", 3.9218),
}

#: Atoms per conventional cubic cell of each lattice kind.
_ATOMS_PER_CUBE: dict[str, int] = {"fcc": 4, "bcc": 2, "b2": 2}

#: Fractional sites of each host's conventional cubic cell; for B2 the first is Al, the second Fe.
_CUBIC_SITES: dict[str, np.ndarray] = {
    "bcc": np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]]),
    "b2": np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]]),
    "fcc": np.array([[0.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]]),
}

GENERATOR_PREFIX = "generate:"
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_RANGE = re.compile(rf"^\s*(?P<low>{_NUMBER})\s*(?:-\s*(?P<high>{_NUMBER})\s*)?$")


# -- ranges and checks ------------------------------------------------------------------------------------------
def _float_range(value: float | Sequence[float], name: str, low: float = 0.0, high: float = math.inf) -> tuple[float, float]:
    """``(lo, hi)`` from a number or a pair, checked to lie in ``[low, high]`` with lo ≤ hi."""
    pair = (value, value) if isinstance(value, (int, float, np.number)) else tuple(value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be a number or a (low, high) pair, got {value!r}")
    lo, hi = float(pair[0]), float(pair[1])
    if not (np.isfinite(lo) and np.isfinite(hi) and low <= lo <= hi <= high):
        raise ValueError(f"{name} must satisfy {low:g} ≤ low ≤ high ≤ {high:g}, got {value!r}")
    return lo, hi


def _int_range(value: int | Sequence[int], name: str, low: int = 0) -> tuple[int, int]:
    """``(lo, hi)`` whole numbers from a number or a pair, with ``low`` ≤ lo ≤ hi."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in pair):
        raise ValueError(f"{name} must be a whole number or a (low, high) pair of whole numbers, got {value!r}")
    lo, hi = int(pair[0]), int(pair[1])
    if not low <= lo <= hi:
        raise ValueError(f"{name} must satisfy {low} ≤ low ≤ high, got {value!r}")
    return lo, hi


def _positive(value: float, name: str, allow_zero: bool = True) -> float:
    value = float(value)
    if not (np.isfinite(value) and (value >= 0 if allow_zero else value > 0)):
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} number, got {value!r}")
    return value


def _allowed_counts(n_atoms: int, fraction: tuple[float, float]) -> np.ndarray:
    """Counts k of Al among ``n_atoms`` with k / n_atoms in the fraction range (ends included, to 1e-9)."""
    low = math.ceil(fraction[0] * n_atoms - 1e-9)
    high = math.floor(fraction[1] * n_atoms + 1e-9)
    return np.arange(max(low, 0), min(high, n_atoms) + 1)


def _num(value: float) -> str:
    """A number as spec text, exact enough to remake the generator (12 significant digits)."""
    return f"{value:.12g}"


def _text(lo: float, hi: float) -> str:
    return _num(lo) if lo == hi else f"{_num(lo)}-{_num(hi)}"


def _elements(value: Sequence[str] | str, name: str = "elements") -> tuple[str, str]:
    """Two distinct element symbols from a pair or ``"A+B"`` text, checked against ASE's symbols."""
    from ase.data import chemical_symbols

    items = [item.strip() for item in value.split("+")] if isinstance(value, str) else list(value)
    if len(items) != 2 or not all(isinstance(item, str) for item in items):
        raise ValueError(f"{name} must name two elements, e.g. Cu+Au, got {value!r}")
    unknown = [item for item in items if item not in chemical_symbols[1:]]
    if unknown:
        raise ValueError(f"{name}: {', '.join(map(repr, unknown))} is not an element symbol (case matters: Cu, not cu)")
    if items[0] == items[1]:
        raise ValueError(f"{name} must name two different elements, got {value!r}")
    return items[0], items[1]


def _first_fraction(
    elements: tuple[str, str], al: float | Sequence[float] | None, fraction: float | Sequence[float] | None
) -> float | Sequence[float] | None:
    """The fraction of the first element from ``fraction`` or its Al–Fe name ``al`` (only one, ``al`` only for Al+Fe)."""
    if al is None:
        return fraction
    if fraction is not None:
        raise ValueError("give the first element's fraction once: fraction or al, not both")
    if elements != DEFAULT_ELEMENTS:
        raise ValueError(f"al is the Al fraction of Al+Fe; for elements={'+'.join(elements)} use fraction (of {elements[0]})")
    return al


def reference_volume_per_atom(element: str) -> float:
    """The volume per atom (Å³) of an element's reference crystal (:data:`REFERENCE_LATTICES`, else ASE's data).

    :param element: element symbol.
    :raises ValueError: when neither knows a crystal for the element.
    """
    if element in REFERENCE_LATTICES:
        kind, a = REFERENCE_LATTICES[element]
        return a**3 / _ATOMS_PER_CUBE[kind]
    from ase.build import bulk

    try:
        crystal = bulk(element)
    except (ValueError, KeyError, RuntimeError, TypeError) as err:
        raise ValueError(
            f"no reference volume for {element}: ASE has no crystal for it ({err}); give the volume through "
            "random_crystal(volume_per_atom=...) or a solid solution's a="
        ) from None
    return float(crystal.get_volume() / len(crystal))


def vegard_volume_per_atom(counts: dict[str, int]) -> float:
    """Vegard's law: the count-weighted mean of the elements' reference volumes per atom, Å³.

    :param counts: atoms per element (those present).
    """
    total = sum(counts.values())
    return sum(count * reference_volume_per_atom(element) for element, count in counts.items()) / total


# -- the interface ----------------------------------------------------------------------------------------------
class StructureGenerator(ABC):
    """A source of fresh periodic structures at fixed cell, drawn from a numpy ``Generator``.

    Subclasses implement :meth:`sample` and :attr:`spec`; they check their parameters in ``__init__`` (a bad
    parameter raises ``ValueError`` naming it before anything is drawn) and never relax or call a potential.
    """

    #: the kind's name in spec strings (``generate:<kind>,...``).
    kind: ClassVar[str] = ""

    @abstractmethod
    def sample(self, rng: np.random.Generator) -> Atoms:
        """One structure: periodic ``Atoms`` without calculator, ``info["source"]`` and ``info["generator"]`` set.

        :param rng: the only source of randomness.
        """

    @property
    @abstractmethod
    def spec(self) -> str:
        """The spec string that :func:`parse_generator_spec` turns back into an equal generator."""

    @property
    @abstractmethod
    def max_atoms(self) -> int:
        """The most atoms a sampled structure can have (an environment's atom slots)."""

    def sample_many(self, count: int, seed: int) -> list[Atoms]:
        """A reproducible list: structure ``i`` from ``default_rng(SeedSequence(seed, spawn_key=(i,)))``.

        :param count: number of structures (≥ 0).
        :param seed: master seed (≥ 0).
        """
        count, seed = operator.index(count), operator.index(seed)
        if count < 0 or seed < 0:
            raise ValueError(f"count and seed must be ≥ 0, got count={count}, seed={seed}")
        return [self.sample(np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i,)))) for i in range(count)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.spec == self.spec  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self.spec)


class RandomCellGenerator(StructureGenerator):
    """Random symmetric binary cells (pyxtal) at a random composition and a volume near Vegard's law.

    Per structure: the number of atoms uniformly in ``atoms``; the number of atoms of the first element uniformly
    among the counts whose fraction lies in ``fraction`` (the rest the second element); the volume per atom
    Vegard's (linear in composition between the elements' reference crystals, :data:`REFERENCE_LATTICES`) times a
    factor uniform in ``volume``; then a pyxtal crystal in a random compatible space group
    (:func:`~sb3_crystal.structures.random.random_crystal`, which redraws until no two atoms are closer than
    ``min_distance``). The default elements are Al and Fe, between the potential's fcc Al and bcc Fe.

    :param atoms: atoms per cell, a number or an inclusive range.
    :param al: Al fraction for Al+Fe (the name ``fraction`` has for those elements), a number or an inclusive
        range in [0, 1]; every cell size must allow one count.
    :param volume: factor on Vegard's volume per atom, a number or a range (> 0).
    :param min_distance: smallest allowed interatomic distance in Å.
    :param max_tries: pyxtal draws per structure before giving up with a ``RuntimeError``.
    :param rattle: β of a rattle after the draw (every coordinate += β·U(−1, 1), Å; pairs closer than
        ``min_distance`` redrawn), 0 for the symmetric cell as drawn, whose forces often vanish by symmetry.
    """

    kind = "random_cell"

    def __init__(
        self,
        atoms: int | tuple[int, int] = (4, 8),
        al: float | tuple[float, float] | None = None,
        volume: float | tuple[float, float] = (0.9, 1.1),
        min_distance: float = 2.0,
        max_tries: int = 200,
        rattle: float = 0.0,
        elements: Sequence[str] | str = DEFAULT_ELEMENTS,
        fraction: float | tuple[float, float] | None = None,
    ) -> None:
        self.elements = _elements(elements)
        self.atoms = _int_range(atoms, "atoms", low=1)
        self.rattle = _positive(rattle, "rattle")
        share = _first_fraction(self.elements, al, fraction)
        self.fraction = _float_range((0.0, 1.0) if share is None else share, self._fraction_name, 0.0, 1.0)
        self.volume = _float_range(volume, "volume (factor on Vegard's volume)", 1e-3)
        self.min_distance = _positive(min_distance, "min_distance")
        self.max_tries = operator.index(max_tries)
        if self.max_tries < 1:
            raise ValueError(f"max_tries must be ≥ 1, got {max_tries}")
        key = self._fraction_name.split()[0]
        for n in range(self.atoms[0], self.atoms[1] + 1):
            if len(_allowed_counts(n, self.fraction)) == 0:
                raise ValueError(
                    f"{key}={_text(*self.fraction)}: no whole number of {self.elements[0]} atoms among {n} has a "
                    f"fraction in that range; widen {key} or change atoms"
                )

    @property
    def _fraction_name(self) -> str:
        return "al (Al fraction)" if self.elements == DEFAULT_ELEMENTS else f"fraction (of {self.elements[0]})"

    @property
    def al(self) -> tuple[float, float]:
        """The first element's fraction range (its name for Al+Fe; :attr:`fraction` for any elements)."""
        return self.fraction

    @property
    def spec(self) -> str:
        parts = [f"{GENERATOR_PREFIX}{self.kind}"]
        if self.elements == DEFAULT_ELEMENTS:  # the Al–Fe spec as it always was
            parts += [f"atoms={_text(*self.atoms)}", f"al={_text(*self.fraction)}"]
        else:
            parts += [f"elements={'+'.join(self.elements)}", f"atoms={_text(*self.atoms)}"]
            parts.append(f"fraction={_text(*self.fraction)}")
        parts += [f"volume={_text(*self.volume)}", f"min_distance={_num(self.min_distance)}"]
        if self.rattle > 0:
            parts.append(f"rattle={_num(self.rattle)}")
        return ",".join(parts)

    @property
    def max_atoms(self) -> int:
        return int(self.atoms[1])

    def sample(self, rng: np.random.Generator) -> Atoms:
        from sb3_crystal.structures.random import random_crystal  # pyxtal: slow import

        n_atoms = int(rng.integers(self.atoms[0], self.atoms[1] + 1))
        n_first = int(rng.choice(_allowed_counts(n_atoms, self.fraction)))
        first, second = self.elements
        counts = {element: count for element, count in ((first, n_first), (second, n_atoms - n_first)) if count > 0}
        volume_per_atom = vegard_volume_per_atom(counts) * float(rng.uniform(*self.volume))
        seed = int(rng.integers(2**32))
        atoms = random_crystal(
            n_atoms,
            counts,
            seed=seed,
            volume_per_atom=volume_per_atom,
            min_distance=self.min_distance,
            max_tries=self.max_tries,
        )
        atoms.info.update(
            source=f"{self.kind}:{atoms.get_chemical_formula()}:sg{atoms.info['space_group']}:seed{seed}:"
            f"v{volume_per_atom:.4f}",
            generator=self.spec,
            volume_per_atom=volume_per_atom,
        )
        if self.rattle > 0:
            info = dict(atoms.info)
            atoms = distort(atoms, self.rattle, rng, min_distance=min(self.min_distance, 1.5))
            atoms.info = info
        return atoms


class SolidSolutionGenerator(StructureGenerator):
    """Random solid solutions and defective B2 on n×n×n conventional cubic supercells, ideal sites plus a rattle.

    Binary, of ``elements`` (default Al and Fe). ``bcc`` and ``fcc``: every site holds the first or the second
    element at random; the number of atoms of the first is uniform among the counts whose fraction (of the atoms
    present) lies in ``fraction``. ``b2``: the ordered compound (the first element on the cube corners); each
    antisite swaps the element of one random site (so a single antisite changes the composition by one atom).
    Vacancies remove random sites (before the occupancy is drawn).

    The lattice constant, unless ``a`` is given: for Al+Fe the host's at the potential's equilibrium
    (:data:`HOST_LATTICE_CONSTANTS`; Vegard's law between fcc Al and bcc Fe overestimates the volume of bcc Fe–Al
    under this potential, whose B2 AlFe is smaller than bcc Fe); for any other elements Vegard's law per structure,
    from the composition drawn (the volume per atom of :func:`vegard_volume_per_atom` spread over the sites of the
    cube, vacant ones included), so a Cu-rich fcc Cu–Au cell gets a Cu-like constant.

    :param lattice: ``"bcc"``, ``"fcc"`` or ``"b2"``.
    :param size: repeats n of the conventional cell along each axis, a number or an inclusive range.
    :param al: Al fraction range for bcc/fcc Al+Fe (the name ``fraction`` has for those elements); must stay
        ``None`` for b2, whose order fixes it.
    :param vacancies: vacancies per structure, a number or an inclusive range.
    :param antisites: antisites per structure (b2 only), a number or an inclusive range.
    :param rattle: β of the rattle away from the ideal sites, Å (0: ideal sites).
    :param a: cubic lattice constant in Å; ``None`` for the host's (Al+Fe) or Vegard's (other elements).
    :param min_distance: smallest interatomic distance a rattled structure may have, Å.
    :param elements: the two elements, a pair or ``"A+B"``.
    :param fraction: range of the first element's fraction for bcc/fcc (default 0–1); ``None`` for b2.
    """

    kind = "solid_solution"

    def __init__(
        self,
        lattice: str,
        size: int | tuple[int, int] = 2,
        al: float | tuple[float, float] | None = None,
        vacancies: int | tuple[int, int] = 0,
        antisites: int | tuple[int, int] = 0,
        rattle: float = 0.05,
        a: float | None = None,
        min_distance: float = 1.5,
        elements: Sequence[str] | str = DEFAULT_ELEMENTS,
        fraction: float | tuple[float, float] | None = None,
    ) -> None:
        self.elements = _elements(elements)
        share = _first_fraction(self.elements, al, fraction)
        key = "al" if self.elements == DEFAULT_ELEMENTS else "fraction"
        if not isinstance(lattice, str) or lattice.lower() not in _CUBIC_SITES:
            raise ValueError(f"lattice must be one of {', '.join(_CUBIC_SITES)}, got {lattice!r}")
        self.lattice = lattice.lower()
        self.size = _int_range(size, "size", low=1)
        self.vacancies = _int_range(vacancies, "vacancies")
        self.antisites = _int_range(antisites, "antisites")
        if self.lattice == "b2":
            if share is not None:
                raise ValueError(f"{key} cannot be set for lattice b2: its order fixes the composition (use antisites)")
            self.fraction: tuple[float, float] | None = None
        else:
            if self.antisites != (0, 0):
                raise ValueError(f"antisites need the ordered b2 lattice, not {self.lattice}: use {key} for the occupancy")
            what = "al (Al fraction)" if key == "al" else f"fraction (of {self.elements[0]})"
            self.fraction = _float_range((0.0, 1.0) if share is None else share, what, 0.0, 1.0)
        self.rattle = _positive(rattle, "rattle")
        #: the cubic lattice constant, Å; ``None``: Vegard's law per structure (elements other than Al+Fe).
        self.a: float | None = None if a is None else _positive(a, "a (lattice constant)", allow_zero=False)
        if self.a is None and self.elements == DEFAULT_ELEMENTS:
            self.a = HOST_LATTICE_CONSTANTS[self.lattice]
        self.min_distance = _positive(min_distance, "min_distance")
        per_cell = len(_CUBIC_SITES[self.lattice])
        smallest = per_cell * self.size[0] ** 3
        if smallest - self.vacancies[1] < 2:
            raise ValueError(
                f"vacancies={_text(*self.vacancies)} leave fewer than 2 atoms in the smallest {self.lattice} supercell "
                f"(size {self.size[0]}: {smallest} sites)"
            )
        if self.antisites[1] > smallest - self.vacancies[1]:
            raise ValueError(f"antisites={_text(*self.antisites)} exceed the atoms of the smallest supercell")
        if self.fraction is not None:
            for n in range(self.size[0], self.size[1] + 1):
                for v in range(self.vacancies[0], self.vacancies[1] + 1):
                    if len(_allowed_counts(per_cell * n**3 - v, self.fraction)) == 0:
                        raise ValueError(
                            f"{key}={_text(*self.fraction)}: no whole number of {self.elements[0]} atoms among "
                            f"{per_cell * n**3 - v} has a fraction in that range; widen {key}"
                        )
        # the smallest constant a structure can get: the given one, or Vegard's at the smaller element
        smallest_a = self.a if self.a is not None else min(self._vegard_a({element: 1}) for element in self.elements)
        nearest = smallest_a * (math.sqrt(3) / 2 if self.lattice != "fcc" else math.sqrt(0.5))
        if nearest < self.min_distance:
            raise ValueError(
                f"min_distance={self.min_distance:g} Å exceeds the ideal nearest-neighbour distance {nearest:.3f} Å "
                f"of {self.lattice} at a={smallest_a:g} Å"
            )

    def _vegard_a(self, counts: dict[str, int], vacancies: int = 0) -> float:
        """Vegard's cubic constant for a structure of these counts on ``sum(counts) + vacancies`` sites."""
        n_atoms = sum(counts.values())
        volume_per_site = vegard_volume_per_atom(counts) * n_atoms / (n_atoms + vacancies)
        return float((len(_CUBIC_SITES[self.lattice]) * volume_per_site) ** (1.0 / 3.0))

    @property
    def al(self) -> tuple[float, float] | None:
        """The first element's fraction range (its name for Al+Fe; :attr:`fraction` for any elements)."""
        return self.fraction

    @property
    def spec(self) -> str:
        default = self.elements == DEFAULT_ELEMENTS  # the Al–Fe spec as it always was
        parts = [f"{GENERATOR_PREFIX}{self.kind}"]
        if not default:
            parts.append(f"elements={'+'.join(self.elements)}")
        parts += [f"lattice={self.lattice}", f"size={_text(*self.size)}"]
        if self.fraction is not None:
            parts.append(f"{'al' if default else 'fraction'}={_text(*self.fraction)}")
        parts += [f"vacancies={_text(*self.vacancies)}"]
        if self.lattice == "b2":
            parts.append(f"antisites={_text(*self.antisites)}")
        parts.append(f"rattle={_num(self.rattle)}")
        if self.a is not None:
            parts.append(f"a={_num(self.a)}")
        parts.append(f"min_distance={_num(self.min_distance)}")
        return ",".join(parts)

    def ideal(self, rng: np.random.Generator) -> Atoms:
        """One structure on ideal lattice sites (no rattle); :meth:`sample` rattles it with the same ``rng``.

        :param rng: the only source of randomness.
        """
        n = int(rng.integers(self.size[0], self.size[1] + 1))
        base = _CUBIC_SITES[self.lattice]
        grid = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), axis=-1).reshape(-1, 1, 3)
        scaled = ((grid + base[None, :, :]) / n).reshape(-1, 3)
        n_sites = len(scaled)
        first, second = self.elements
        if self.lattice == "b2":
            symbols = np.tile(np.array([first, second], dtype=object), n_sites // 2)
        else:
            symbols = np.full(n_sites, second, dtype=object)
        n_vacancies = int(rng.integers(self.vacancies[0], self.vacancies[1] + 1))
        kept = np.sort(rng.choice(n_sites, size=n_sites - n_vacancies, replace=False))
        scaled, symbols = scaled[kept], symbols[kept]
        n_antisites = 0
        if self.lattice == "b2":
            n_antisites = int(rng.integers(self.antisites[0], self.antisites[1] + 1))
            flipped = rng.choice(len(symbols), size=n_antisites, replace=False)
            symbols[flipped] = np.where(symbols[flipped] == first, second, first)
        else:
            assert self.fraction is not None
            n_first = int(rng.choice(_allowed_counts(len(symbols), self.fraction)))
            symbols[rng.choice(len(symbols), size=n_first, replace=False)] = first
        if self.a is not None:
            a = self.a
        else:
            counts = {element: int(np.sum(symbols == element)) for element in self.elements}
            a = self._vegard_a({element: count for element, count in counts.items() if count}, n_vacancies)
        atoms = Atoms(list(symbols), scaled_positions=scaled, cell=np.eye(3) * a * n, pbc=True)
        defects = f"{n_vacancies}vac" + (f"{n_antisites}anti" if self.lattice == "b2" else "")
        atoms.info.update(
            source=f"{self.kind}:{self.lattice}{n}x{n}x{n}:{atoms.get_chemical_formula()}:{defects}",
            generator=self.spec,
            vacancies=n_vacancies,
            antisites=n_antisites,
        )
        if self.a is None:
            atoms.info["lattice_constant"] = a
        return atoms

    @property
    def max_atoms(self) -> int:
        return len(_CUBIC_SITES[self.lattice]) * int(self.size[1]) ** 3 - int(self.vacancies[0])

    def sample(self, rng: np.random.Generator) -> Atoms:
        ideal = self.ideal(rng)
        start = distort(ideal, self.rattle, rng, min_distance=self.min_distance)
        check_min_distance(start, self.min_distance, where=str(ideal.info["source"]))
        start.info = dict(ideal.info, rattle=self.rattle)
        return start


class RattledCellGenerator(StructureGenerator):
    """Rattled copies of given cells (typically relaxed minima): a random cell, distorted by β·U(−1, 1).

    :param cells: the cells to rattle (copied; ``info["source"]`` names them in :attr:`spec`).
    :param beta: distortion β in Å.
    :param min_distance: smallest interatomic distance of a rattled copy, Å (the cells themselves must keep it).
    :param relaxed: whether the cells are relaxed minima (recorded in :attr:`spec` as ``relax``).
    :param names: how :attr:`spec` names the cells (prototype names or files, one per cell or one for all);
        ``None`` for their ``info["source"]``.
    """

    kind = "rattled"

    def __init__(
        self,
        cells: Sequence[Atoms],
        beta: float = 0.3,
        min_distance: float = 1.5,
        relaxed: bool = True,
        names: Sequence[str] | None = None,
    ) -> None:
        if isinstance(cells, Atoms) or not len(cells):
            raise ValueError("cells must be a non-empty sequence of Atoms")
        self.beta = _positive(beta, "beta")
        self.min_distance = _positive(min_distance, "min_distance")
        self.relaxed = bool(relaxed)
        self.cells: list[Atoms] = []
        for k, cell in enumerate(cells):
            if not isinstance(cell, Atoms):
                raise TypeError(f"cells[{k}] is a {type(cell).__name__}, not Atoms")
            where = f"cells[{k}] ({cell.info.get('source', cell.get_chemical_formula())})"
            if not np.all(cell.pbc):
                raise ValueError(f"{where} is not periodic along every axis")
            check_min_distance(cell, self.min_distance, where=where)
            copy = cell.copy()
            copy.calc = None
            self.cells.append(copy)
        if names is None:
            names = [str(cell.info.get("source", cell.get_chemical_formula())) for cell in self.cells]
        self.names = [str(name) for name in names]
        if not self.names or any(not name or "," in name or "+" in name for name in self.names):
            raise ValueError(f"names must be non-empty and hold neither ',' nor '+', got {self.names}")

    @property
    def spec(self) -> str:
        names = "+".join(self.names)
        relax = "yes" if self.relaxed else "no"
        return (
            f"{GENERATOR_PREFIX}{self.kind},from={names},beta={_num(self.beta)},min_distance={_num(self.min_distance)},"
            f"relax={relax}"
        )

    @property
    def max_atoms(self) -> int:
        return max(len(cell) for cell in self.cells)

    def sample(self, rng: np.random.Generator) -> Atoms:
        index = int(rng.integers(len(self.cells)))
        cell = self.cells[index]
        start = distort(cell, self.beta, rng, min_distance=self.min_distance)
        source = cell.info.get("source", cell.get_chemical_formula())
        start.info = {k: v for k, v in cell.info.items() if k not in ("minimum", "source")} | {
            "source": f"{source} (rattled β={self.beta:g})",
            "generator": self.spec,
            "cell_index": index,
        }
        return start


# -- spec strings -----------------------------------------------------------------------------------------------
def _parse_range(text: str, key: str, spec: str, whole: bool) -> tuple[float, float] | tuple[int, int]:
    match = _RANGE.match(text)
    if match is None:
        raise ValueError(f"{spec!r}: {key}={text!r} is not a number or a range 'low-high'")
    low, high = match["low"], match["high"] or match["low"]
    if whole:
        if not (low.isdigit() and high.isdigit()):
            raise ValueError(f"{spec!r}: {key}={text!r} must be whole numbers")
        return int(low), int(high)
    return float(low), float(high)


def _parse_bool(text: str, key: str, spec: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("yes", "true", "1"):
        return True
    if lowered in ("no", "false", "0"):
        return False
    raise ValueError(f"{spec!r}: {key}={text!r} must be yes or no")


def _split(spec: str) -> tuple[str, dict[str, str]]:
    """Kind and ``key=value`` fields of a spec, with clear errors for a missing prefix, kind or ``=``."""
    if not isinstance(spec, str) or not spec.startswith(GENERATOR_PREFIX):
        raise ValueError(f"A generator spec starts with '{GENERATOR_PREFIX}<kind>', got {spec!r}")
    kind, *items = spec[len(GENERATOR_PREFIX) :].split(",")
    kind = kind.strip()
    fields: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise ValueError(f"{spec!r}: '{item}' is not key=value")
        if key in fields:
            raise ValueError(f"{spec!r}: {key} given twice")
        fields[key] = value.strip()
    return kind, fields


def _random_cell(fields: dict[str, str], spec: str) -> StructureGenerator:
    kwargs: dict = {}
    if "atoms" in fields:
        kwargs["atoms"] = _parse_range(fields["atoms"], "atoms", spec, whole=True)
    for key in ("al", "fraction", "volume"):
        if key in fields:
            kwargs[key] = _parse_range(fields[key], key, spec, whole=False)
    for key in ("min_distance", "rattle"):
        if key in fields:
            kwargs[key] = _parse_range(fields[key], key, spec, whole=False)[0]
    if "elements" in fields:
        kwargs["elements"] = fields["elements"]
    return RandomCellGenerator(**kwargs)


def _solid_solution(fields: dict[str, str], spec: str) -> StructureGenerator:
    if "lattice" not in fields:
        raise ValueError(f"{spec!r}: solid_solution needs lattice=bcc, fcc or b2")
    kwargs: dict = {"lattice": fields["lattice"]}
    for key in ("size", "vacancies", "antisites"):
        if key in fields:
            kwargs[key] = _parse_range(fields[key], key, spec, whole=True)
    for key in ("al", "fraction"):
        if key in fields:
            kwargs[key] = _parse_range(fields[key], key, spec, whole=False)
    if "elements" in fields:
        kwargs["elements"] = fields["elements"]
    for key in ("rattle", "a", "min_distance"):
        if key in fields:
            low, high = _parse_range(fields[key], key, spec, whole=False)
            if low != high:
                raise ValueError(f"{spec!r}: {key} takes one number, not a range")
            kwargs[key] = low
    return SolidSolutionGenerator(**kwargs)


def _rattled(fields: dict[str, str], spec: str) -> StructureGenerator:
    if "from" not in fields:
        raise ValueError(f"{spec!r}: rattled needs from=<prototype or file>[+<more>]")
    names = [name.strip() for name in fields["from"].split("+")]
    if not all(names):
        raise ValueError(f"{spec!r}: from={fields['from']!r} has an empty name")
    relax = _parse_bool(fields.get("relax", "yes"), "relax", spec)
    kwargs: dict = {}
    for key in ("beta", "min_distance"):
        if key in fields:
            kwargs[key] = _parse_range(fields[key], key, spec, whole=False)[0]
    from sb3_crystal.structures.dataset import StructureDataset, load_structures  # dataset imports this module

    cells = list(StructureDataset(names)) if relax else load_structures(names)
    return RattledCellGenerator(cells, relaxed=relax, names=names, **kwargs)


#: Spec parsers by kind, and the keys each accepts.
GENERATORS: dict[str, tuple[Callable[[dict[str, str], str], StructureGenerator], frozenset[str]]] = {
    "random_cell": (
        _random_cell,
        frozenset({"elements", "atoms", "al", "fraction", "volume", "min_distance", "rattle"}),
    ),
    "solid_solution": (
        _solid_solution,
        frozenset({"elements", "lattice", "size", "al", "fraction", "vacancies", "antisites", "rattle", "a", "min_distance"}),
    ),
    "rattled": (_rattled, frozenset({"from", "beta", "min_distance", "relax"})),
}


def parse_generator_spec(spec: str) -> StructureGenerator:
    """The generator a spec string names (see the module docstring for the grammar and keys).

    :param spec: ``"generate:<kind>[,<key>=<value>]..."``.
    :raises ValueError: for an unknown kind or key, a malformed value, or a bad parameter (naming it).
    """
    kind, fields = _split(spec)
    if kind not in GENERATORS:
        raise ValueError(f"{spec!r}: unknown generator '{kind}', choose from {', '.join(GENERATORS)}")
    parser, keys = GENERATORS[kind]
    unknown = sorted(set(fields) - keys)
    if unknown:
        raise ValueError(f"{spec!r}: unknown key(s) {', '.join(unknown)} for {kind} (known: {', '.join(sorted(keys))})")
    try:
        return parser(fields, spec)
    except ValueError as err:
        message = str(err)
        raise ValueError(message if message.startswith(repr(spec)) else f"{spec!r}: {message}") from None


def generated_structures(spec: str | os.PathLike) -> list[Atoms]:
    """A fixed list of generated structures from a dataset spec: a generator spec plus ``count=<n>[,seed=<s>]``.

    :param spec: e.g. ``"generate:solid_solution,lattice=bcc,size=2,al=0.1-0.5,count=10,seed=3"``.
    :return: :meth:`StructureGenerator.sample_many` of the generator with that count and seed (default 0).
    """
    spec = os.fspath(spec)
    kind, fields = _split(spec)
    if "count" not in fields:
        raise ValueError(f"{spec!r}: a generated dataset needs count=<n> (and optionally seed=<s>)")
    count = _parse_range(fields.pop("count"), "count", spec, whole=True)
    seed = _parse_range(fields.pop("seed", "0"), "seed", spec, whole=True)
    if count[0] != count[1] or seed[0] != seed[1]:
        raise ValueError(f"{spec!r}: count and seed take one whole number each")
    rest = ",".join([f"{GENERATOR_PREFIX}{kind}", *(f"{k}={v}" for k, v in fields.items())])
    generator = parse_generator_spec(rest)
    return generator.sample_many(int(count[0]), int(seed[0]))
