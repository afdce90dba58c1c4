"""Random symmetric crystals (like the paper's USPEX Al–Fe sets), generated with pyxtal at a chosen volume.

A crystal is drawn in a random space group compatible with its composition, on a random lattice of exactly the
target volume, and returned as a P1 cell with the asked number of atoms. Draws with two atoms closer than
``min_distance`` (periodic images included) are rejected and redrawn. Everything random comes from one
``numpy.random.Generator`` seeded with ``seed`` (pyxtal 1.1 accepts a Generator and passes it on to its
lattice and Wyckoff-position draws), so a seed gives the same crystal every time.
"""

from __future__ import annotations

import contextlib
import io
import operator
import warnings
from collections.abc import Mapping, Sequence
from functools import cache, lru_cache

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from ase.formula import Formula
from pyxtal import pyxtal
from pyxtal.lattice import Lattice
from pyxtal.msg import Error as PyxtalError
from pyxtal.symmetry import Group
from pyxtal.tolerance import Tol_matrix

from sb3_crystal.structures.geometry import closest_pair

#: Volume per atom (Å³) of fcc Al and bcc Fe at the Mendelev 2005 potential's lattice constants.
AL_FCC_VOLUME_PER_ATOM = 4.0333**3 / 4  # 16.40 Å³
FE_BCC_VOLUME_PER_ATOM = 2.8553**3 / 2  # 11.64 Å³
_ELEMENTAL_VOLUME_PER_ATOM = {"Al": AL_FCC_VOLUME_PER_ATOM, "Fe": FE_BCC_VOLUME_PER_ATOM}

#: pyxtal's own distance check, as a fraction of ``min_distance``. Looser than the final check: asking pyxtal
#: for the full distance makes it grind through hundreds of placements in tight groups (seconds per cell),
#: while rejecting afterwards costs a few fast redraws (measured on 2–8 Al–Fe atoms).
_PYXTAL_TOLERANCE_FRACTION = 0.6

_KNOWN_ELEMENTS = frozenset(chemical_symbols[1:])


def _parse_composition(composition: Mapping[str, int] | str, n_atoms: int) -> dict[str, int]:
    """Validated element counts (zero counts dropped) from a mapping or a formula string."""
    if isinstance(composition, str):
        try:
            counts = dict(Formula(composition).count())
        except ValueError as err:
            raise ValueError(f"Cannot read composition '{composition}' as a formula such as 'Al2Fe': {err}") from None
    elif isinstance(composition, Mapping):
        counts = dict(composition)
    else:
        raise TypeError(f"composition must be a dict of counts or a formula string, got {type(composition).__name__}")

    for element, count in counts.items():
        if element not in _KNOWN_ELEMENTS:
            raise ValueError(f"Unknown element '{element}' in composition {counts}")
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
            raise ValueError(f"Count of {element} must be a whole number ≥ 0, got {count!r}")
    counts = {element: int(count) for element, count in counts.items() if count > 0}
    if sum(counts.values()) != n_atoms:
        raise ValueError(f"Composition {counts} has {sum(counts.values())} atoms, but n_atoms is {n_atoms}")
    return counts


def _draw_composition(n_atoms: int, elements: Sequence[str], rng: np.random.Generator) -> dict[str, int]:
    """Counts drawn uniformly over every way to share ``n_atoms`` among ``elements`` (pure elements included).

    For two elements the count of the first is uniform on 0…n_atoms; in general "stars and bars": ``k − 1``
    bars placed among ``n_atoms + k − 1`` slots.
    """
    k = len(elements)
    bars = np.sort(rng.choice(n_atoms + k - 1, size=k - 1, replace=False))
    edges = np.concatenate(([-1], bars, [n_atoms + k - 1]))
    counts = np.diff(edges) - 1
    return {element: int(count) for element, count in zip(elements, counts, strict=True) if count > 0}


def default_volume_per_atom(composition: Mapping[str, int]) -> float:
    """Volume per atom interpolated linearly in composition between fcc Al and bcc Fe of the potential.

    :param composition: element counts; only Al and Fe are known.
    :return: volume per atom in Å³.
    """
    unknown = set(composition) - set(_ELEMENTAL_VOLUME_PER_ATOM)
    if unknown:
        raise ValueError(
            f"No default volume for {', '.join(sorted(unknown))} (known: Al, Fe): pass volume_per_atom explicitly"
        )
    total = sum(composition.values())
    return sum(count * _ELEMENTAL_VOLUME_PER_ATOM[element] for element, count in composition.items()) / total


@cache
def _group(number: int) -> Group:
    return Group(number)


@lru_cache(maxsize=1024)
def _compatible_space_groups(counts: tuple[int, ...]) -> tuple[int, ...]:
    """Space groups whose Wyckoff positions can hold these per-element counts in the conventional cell."""
    return tuple(number for number in range(1, 231) if _group(number).check_compatible(list(counts))[0])


def _generate_once(
    group: Group, species: list[str], counts: list[int], volume: float, tolerances: Tol_matrix | None, rng: np.random.Generator
) -> Atoms | None:
    """One pyxtal draw on a random lattice of the target volume; ``None`` when pyxtal gives up."""
    crystal = pyxtal()
    # pyxtal prints and warns about routine retries ("increase the volume…"); they mean nothing to a caller.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            lattice = Lattice(group.lattice_type, volume=volume, random_state=rng)
            crystal.from_random(3, group, species, counts, lattice=lattice, tm=tolerances, max_count=1, random_state=rng)
        except (PyxtalError, RuntimeError, ValueError):
            return None
    if not crystal.valid:
        return None
    return crystal.to_ase()


def random_crystal(
    n_atoms: int,
    composition: dict[str, int] | str | None = None,
    seed: int | None = None,
    space_group: int | None = None,
    volume_per_atom: float | None = None,
    min_distance: float = 2.0,
    max_tries: int = 200,
) -> Atoms:
    """A random symmetric crystal, as a P1 cell of ``n_atoms`` atoms at a set volume.

    :param n_atoms: atoms in the cell (the conventional cell of the space group).
    :param composition: element counts (``{"Al": 2, "Fe": 1}``) or a formula (``"Al2Fe"``) summing to ``n_atoms``;
        ``None`` draws the number of Al atoms uniformly from 0…n_atoms, the rest Fe.
    :param seed: random seed; ``None`` draws one (recorded in ``info["source"]``, so the crystal can be remade).
    :param space_group: international number 1–230; ``None`` draws one uniformly among the groups compatible
        with the composition, anew for each try.
    :param volume_per_atom: cell volume per atom in Å³; ``None`` interpolates linearly in composition between
        fcc Al (16.40 Å³) and bcc Fe (11.64 Å³) of the Mendelev potential.
    :param min_distance: smallest allowed interatomic distance in Å, periodic images included (0 disables it).
    :param max_tries: draws before giving up with a ``RuntimeError``.
    :return: periodic ``Atoms`` with ``info["space_group"]`` (the group it was drawn in; the cell may happen to
        have more symmetry) and ``info["source"] = "random:<formula>:sg<n>:seed<s>"``.
    """
    n_atoms = operator.index(n_atoms)
    if n_atoms < 1:
        raise ValueError(f"n_atoms must be ≥ 1, got {n_atoms}")
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    rng = np.random.default_rng(seed)
    counts = _draw_composition(n_atoms, ("Al", "Fe"), rng) if composition is None else _parse_composition(composition, n_atoms)
    if volume_per_atom is None:
        volume_per_atom = default_volume_per_atom(counts)
    elif not (np.isfinite(volume_per_atom) and volume_per_atom > 0):
        raise ValueError(f"volume_per_atom must be a positive number of Å³, got {volume_per_atom}")
    if not min_distance >= 0:
        raise ValueError(f"min_distance must be ≥ 0 Å, got {min_distance}")
    if max_tries < 1:
        raise ValueError(f"max_tries must be ≥ 1, got {max_tries}")

    species, species_counts = list(counts), list(counts.values())
    compatible = _compatible_space_groups(tuple(species_counts))
    if space_group is not None:
        space_group = operator.index(space_group)
        if not 1 <= space_group <= 230:
            raise ValueError(f"space_group must be an international number 1–230, got {space_group}")
        if space_group not in compatible:
            raise ValueError(
                f"Space group {space_group} cannot hold {counts} in its conventional cell "
                f"({len(compatible)} groups can, e.g. {', '.join(map(str, compatible[-5:]))})"
            )
    volume = volume_per_atom * n_atoms
    tolerances = None
    if min_distance > 0:
        tolerances = Tol_matrix(*[(a, b, _PYXTAL_TOLERANCE_FRACTION * min_distance) for a in species for b in species])

    for _ in range(max_tries):
        number = space_group if space_group is not None else int(rng.choice(compatible))
        atoms = _generate_once(_group(number), species, species_counts, volume, tolerances, rng)
        if atoms is None:
            continue
        # The lattice already has the target volume; rescaling removes pyxtal's rounding so it holds to 1e-12,
        # and zeroing its ~1e-16 Å off-axis crumbs keeps wrapped fractional coordinates ≥ 0.
        cell = atoms.cell.array * (volume / atoms.get_volume()) ** (1 / 3)
        cell[np.abs(cell) < 1e-10] = 0.0
        atoms.set_cell(cell, scale_atoms=True)
        atoms.wrap()
        if min_distance > 0 and closest_pair(atoms, min_distance)[2] < min_distance:
            continue
        atoms.pbc = True
        atoms.info = {
            "space_group": number,
            "source": f"random:{atoms.get_chemical_formula()}:sg{number}:seed{seed}",
        }
        return atoms
    where = f"space group {space_group}" if space_group is not None else "any compatible space group"
    raise RuntimeError(
        f"No random {counts} crystal in {where} at {volume_per_atom:.2f} Å³/atom kept all atoms {min_distance} Å apart "
        f"in {max_tries} draws (seed {seed}): lower min_distance, raise volume_per_atom or max_tries"
    )


def random_dataset(
    n_structures: int,
    n_atoms: int | tuple[int, int],
    seed: int,
    elements: Sequence[str] = ("Al", "Fe"),
    **kwargs,
) -> list[Atoms]:
    """Reproducible random crystals with random compositions, as the paper's USPEX sets.

    Structure ``i`` depends only on ``(seed, i)``: a longer dataset with the same seed starts with the shorter one.

    :param n_structures: number of crystals.
    :param n_atoms: atoms per cell, or an inclusive range ``(low, high)`` drawn uniformly per structure.
    :param seed: master seed; each structure gets its own seed derived from it.
    :param elements: elements to share the atoms among (counts uniform over all splits, pure elements included).
    :param kwargs: passed to :func:`random_crystal` (``space_group``, ``volume_per_atom``, ``min_distance``,
        ``max_tries``; a ``composition`` here fixes it for every structure).
    """
    n_structures = operator.index(n_structures)
    if n_structures < 0:
        raise ValueError(f"n_structures must be ≥ 0, got {n_structures}")
    if isinstance(n_atoms, Sequence):
        if len(n_atoms) != 2:
            raise ValueError(f"n_atoms must be a number or a (low, high) range, got {n_atoms}")
        low, high = (operator.index(n) for n in n_atoms)
    else:
        low = high = operator.index(n_atoms)
    if not 1 <= low <= high:
        raise ValueError(f"n_atoms range must satisfy 1 ≤ low ≤ high, got ({low}, {high})")
    elements = tuple(elements)
    if not elements or len(set(elements)) != len(elements):
        raise ValueError(f"elements must be distinct and not empty, got {elements}")
    unknown = [element for element in elements if element not in _KNOWN_ELEMENTS]
    if unknown:
        raise ValueError(f"Unknown element(s) {unknown} in elements")
    fixed_composition = kwargs.pop("composition", None)

    structures = []
    for i in range(n_structures):
        # Independent streams per structure: spawn key (i,) of the master seed, split into draws and crystal.
        draw_sequence, crystal_sequence = np.random.SeedSequence(seed, spawn_key=(i,)).spawn(2)
        rng = np.random.default_rng(draw_sequence)
        size = int(rng.integers(low, high + 1))
        composition = fixed_composition if fixed_composition is not None else _draw_composition(size, elements, rng)
        crystal_seed = int(crystal_sequence.generate_state(1)[0])
        structures.append(random_crystal(size, composition, seed=crystal_seed, **kwargs))
    return structures
