"""Random symmetric crystals: composition, volume, distances, symmetry, seeding and argument checks."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from hypothesis import given, settings
from hypothesis import strategies as st

from sb3_crystal.structures.geometry import closest_pair
from sb3_crystal.structures.random import (
    AL_FCC_VOLUME_PER_ATOM,
    FE_BCC_VOLUME_PER_ATOM,
    default_volume_per_atom,
    random_crystal,
    random_dataset,
)


def counts_of(atoms: Atoms) -> dict[str, int]:
    symbols = atoms.get_chemical_symbols()
    return {element: symbols.count(element) for element in sorted(set(symbols))}


def assert_identical(first: Atoms, second: Atoms) -> None:
    assert first.get_chemical_symbols() == second.get_chemical_symbols()
    np.testing.assert_array_equal(first.cell.array, second.cell.array)
    np.testing.assert_array_equal(first.positions, second.positions)
    assert first.info == second.info


def test_default_volumes_are_those_of_the_potentials_fcc_al_and_bcc_fe() -> None:
    assert AL_FCC_VOLUME_PER_ATOM == pytest.approx(16.40, abs=5e-3)
    assert FE_BCC_VOLUME_PER_ATOM == pytest.approx(11.64, abs=5e-3)
    assert default_volume_per_atom({"Al": 2, "Fe": 1}) == pytest.approx(
        (2 * AL_FCC_VOLUME_PER_ATOM + FE_BCC_VOLUME_PER_ATOM) / 3
    )
    with pytest.raises(ValueError, match="No default volume for Cu"):
        default_volume_per_atom({"Cu": 1})


@pytest.mark.parametrize("composition", [{"Al": 2, "Fe": 1}, "Al2Fe", "FeAl2", {"Al": 2, "Fe": 1, "Cu": 0}])
def test_composition_is_honoured_in_any_form(composition: dict[str, int] | str) -> None:
    atoms = random_crystal(3, composition, seed=11)
    assert counts_of(atoms) == {"Al": 2, "Fe": 1}
    assert atoms.pbc.all()
    assert atoms.get_volume() / 3 == pytest.approx(default_volume_per_atom({"Al": 2, "Fe": 1}), rel=1e-6)
    assert atoms.info["source"] == f"random:Al2Fe:sg{atoms.info['space_group']}:seed11"


def test_same_seed_same_crystal_and_different_seeds_differ() -> None:
    assert_identical(random_crystal(5, seed=123), random_crystal(5, seed=123))
    crystals = [random_crystal(4, "Al2Fe2", seed=seed) for seed in range(4)]
    for k, first in enumerate(crystals):
        for second in crystals[k + 1 :]:
            assert not np.allclose(first.cell.array, second.cell.array) or not np.allclose(first.positions, second.positions)


def test_unseeded_crystal_records_a_seed_that_remakes_it() -> None:
    atoms = random_crystal(3)
    seed = int(atoms.info["source"].rsplit(":seed", 1)[1])
    assert_identical(random_crystal(3, seed=seed), atoms)


@pytest.mark.parametrize(("min_distance", "volume_per_atom"), [(2.2, None), (1.5, 9.0), (2.4, 16.0)])
def test_min_distance_and_volume_are_as_asked(min_distance: float, volume_per_atom: float | None) -> None:
    atoms = random_crystal(6, "Al3Fe3", seed=5, min_distance=min_distance, volume_per_atom=volume_per_atom)
    assert closest_pair(atoms, 4.0)[2] >= min_distance
    expected = volume_per_atom if volume_per_atom is not None else default_volume_per_atom({"Al": 3, "Fe": 3})
    assert atoms.get_volume() / len(atoms) == pytest.approx(expected, rel=1e-6)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # spglib, through pymatgen
def test_centred_space_group_gives_its_conventional_cell() -> None:
    """Fe2 in Im-3m can only be bcc: the conventional cube of 2 atoms at the potential's bcc volume."""
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    atoms = random_crystal(2, "Fe2", seed=0, space_group=229)
    assert atoms.info["space_group"] == 229
    np.testing.assert_allclose(atoms.cell.cellpar(), [2.8553] * 3 + [90] * 3, atol=1e-9)
    assert closest_pair(atoms)[2] == pytest.approx(np.sqrt(3) / 2 * 2.8553)
    assert SpacegroupAnalyzer(AseAtomsAdaptor.get_structure(atoms), symprec=1e-3).get_space_group_number() == 229


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # spglib, through pymatgen
def test_b2_from_pm3m() -> None:
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    atoms = random_crystal(2, "AlFe", seed=3, space_group=221, volume_per_atom=2.8513**3 / 2)
    np.testing.assert_allclose(atoms.cell.cellpar(), [2.8513] * 3 + [90] * 3, atol=1e-9)
    assert SpacegroupAnalyzer(AseAtomsAdaptor.get_structure(atoms), symprec=1e-3).get_space_group_number() == 221


@settings(max_examples=10, deadline=None)
@given(n_atoms=st.integers(2, 8), seed=st.integers(0, 2**32 - 1))
def test_any_small_random_crystal_is_valid(n_atoms: int, seed: int) -> None:
    atoms = random_crystal(n_atoms, seed=seed)
    assert len(atoms) == n_atoms
    assert atoms.pbc.all()
    assert set(atoms.get_chemical_symbols()) <= {"Al", "Fe"}
    assert closest_pair(atoms, 2.0)[2] >= 2.0
    assert atoms.get_volume() / n_atoms == pytest.approx(default_volume_per_atom(counts_of(atoms)), rel=1e-6)
    assert 1 <= atoms.info["space_group"] <= 230
    fractional = atoms.get_scaled_positions(wrap=False)
    assert np.all((fractional > -1e-12) & (fractional < 1))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_atoms": 0}, "n_atoms must be ≥ 1"),
        ({"n_atoms": 2, "composition": {"Xx": 2}}, "Unknown element 'Xx'"),
        ({"n_atoms": 2, "composition": "Xx2"}, "Unknown element 'Xx'"),
        ({"n_atoms": 2, "composition": "al2"}, "Cannot read composition 'al2'"),
        ({"n_atoms": 3, "composition": {"Al": 1, "Fe": 1}}, "has 2 atoms, but n_atoms is 3"),
        ({"n_atoms": 2, "composition": {"Al": 3, "Fe": -1}}, "Count of Fe must be a whole number"),
        ({"n_atoms": 2, "composition": {"Al": 1.5, "Fe": 0.5}}, "Count of Al must be a whole number"),
        ({"n_atoms": 2, "volume_per_atom": -5.0}, "volume_per_atom must be a positive"),
        ({"n_atoms": 2, "volume_per_atom": 0.0}, "volume_per_atom must be a positive"),
        ({"n_atoms": 2, "composition": "Cu2"}, "No default volume for Cu"),
        ({"n_atoms": 3, "composition": "AlFe2", "space_group": 221}, "Space group 221 cannot hold"),
        ({"n_atoms": 2, "space_group": 231}, "space_group must be an international number 1–230"),
        ({"n_atoms": 2, "min_distance": -1.0}, "min_distance must be ≥ 0"),
        ({"n_atoms": 2, "max_tries": 0}, "max_tries must be ≥ 1"),
    ],
)
def test_bad_arguments_raise_clear_value_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        random_crystal(seed=0, **kwargs)


def test_other_elements_need_an_explicit_volume() -> None:
    atoms = random_crystal(2, "Cu2", seed=1, volume_per_atom=11.8)
    assert counts_of(atoms) == {"Cu": 2}
    assert atoms.get_volume() == pytest.approx(23.6, rel=1e-6)


def test_impossible_distance_gives_up_after_max_tries() -> None:
    with pytest.raises(RuntimeError, match="in 3 draws"):
        random_crystal(2, "Fe2", seed=0, min_distance=4.0, max_tries=3)


def test_dataset_is_reproducible_and_prefix_stable() -> None:
    dataset = random_dataset(6, (2, 4), seed=7)
    assert len(dataset) == 6
    assert {len(atoms) for atoms in dataset} <= {2, 3, 4}
    assert len({atoms.info["source"] for atoms in dataset}) == 6
    for again, first in zip(random_dataset(4, (2, 4), seed=7), dataset[:4], strict=True):
        assert_identical(again, first)
    other = random_dataset(2, (2, 4), seed=8)
    assert [atoms.info["source"] for atoms in other] != [atoms.info["source"] for atoms in dataset[:2]]


def test_dataset_atom_counts_cover_the_range_and_compositions_the_elements() -> None:
    dataset = random_dataset(12, (2, 3), seed=0, min_distance=1.8)
    assert {len(atoms) for atoms in dataset} == {2, 3}
    assert set().union(*(atoms.get_chemical_symbols() for atoms in dataset)) == {"Al", "Fe"}
    assert all(closest_pair(atoms, 1.8)[2] >= 1.8 for atoms in dataset)
    single_element = random_dataset(2, 3, seed=0, elements=("Fe",))
    assert all(counts_of(atoms) == {"Fe": 3} for atoms in single_element)


def test_dataset_with_a_fixed_composition_and_space_group() -> None:
    dataset = random_dataset(2, 2, seed=0, composition="AlFe", space_group=221)
    assert all(counts_of(atoms) == {"Al": 1, "Fe": 1} and atoms.info["space_group"] == 221 for atoms in dataset)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((-1, 2, 0), {}, "n_structures must be ≥ 0"),
        ((1, (3, 2), 0), {}, "1 ≤ low ≤ high"),
        ((1, (0, 2), 0), {}, "1 ≤ low ≤ high"),
        ((1, (1, 2, 3), 0), {}, "a .low, high. range"),
        ((1, 2, 0), {"elements": ("Al", "Al")}, "distinct"),
        ((1, 2, 0), {"elements": ("Al", "Qq")}, "Unknown element"),
    ],
)
def test_dataset_bad_arguments(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        random_dataset(*args, **kwargs)
    assert random_dataset(0, 2, seed=0) == []
