"""Structure generators: compositions and distances as asked, seeds reproducible, specs round-trip, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sb3_crystal.structures import load_structures
from sb3_crystal.structures.generators import (
    HOST_LATTICE_CONSTANTS,
    RandomCellGenerator,
    RattledCellGenerator,
    SolidSolutionGenerator,
    parse_generator_spec,
)
from sb3_crystal.structures.geometry import closest_pair
from sb3_crystal.structures.prototypes import build_prototype
from sb3_crystal.structures.random import default_volume_per_atom


def al_fraction(atoms: Atoms) -> float:
    return float(np.mean(np.array(atoms.get_chemical_symbols()) == "Al"))


def assert_identical(first: Atoms, second: Atoms) -> None:
    assert first.get_chemical_symbols() == second.get_chemical_symbols()
    np.testing.assert_array_equal(first.cell.array, second.cell.array)
    np.testing.assert_array_equal(first.positions, second.positions)


fractions = st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)).map(sorted).map(tuple)


@settings(max_examples=25, deadline=None)
@given(
    lattice=st.sampled_from(["bcc", "fcc"]),
    size=st.integers(1, 3),
    al=fractions,
    vacancies=st.integers(0, 2),
    seed=st.integers(0, 2**32 - 1),
)
def test_solid_solution_composition_sites_and_distances(
    lattice: str, size: int, al: tuple[float, float], vacancies: int, seed: int
) -> None:
    n_sites = {"bcc": 2, "fcc": 4}[lattice] * size**3
    try:
        generator = SolidSolutionGenerator(lattice, size=size, al=al, vacancies=vacancies, rattle=0.1, min_distance=1.8)
    except ValueError as err:  # a narrow range may hold no whole count: then the error says so
        assert "al=" in str(err) or "vacancies=" in str(err)
        return
    atoms = generator.sample(np.random.default_rng(seed))
    assert len(atoms) == n_sites - vacancies
    assert al[0] - 1e-9 <= al_fraction(atoms) <= al[1] + 1e-9
    assert atoms.pbc.all() and atoms.calc is None
    np.testing.assert_allclose(atoms.cell.array, np.eye(3) * HOST_LATTICE_CONSTANTS[lattice] * size)
    assert closest_pair(atoms, 3.0)[2] >= 1.8
    # the rattle moves each coordinate by at most β from an ideal site
    ideal = generator.ideal(np.random.default_rng(seed))
    assert np.abs(atoms.positions - ideal.positions).max() <= 0.1 + 1e-12
    assert atoms.get_chemical_symbols() == ideal.get_chemical_symbols()


@pytest.mark.parametrize(("vacancies", "antisites"), [(1, 0), (0, 1), (2, 3)])
def test_b2_defects_are_counted(vacancies: int, antisites: int) -> None:
    generator = SolidSolutionGenerator("b2", size=2, vacancies=vacancies, antisites=antisites, rattle=0.0)
    for seed in range(5):
        atoms = generator.sample(np.random.default_rng(seed))
        assert len(atoms) == 16 - vacancies
        sites = np.round(atoms.get_scaled_positions() * 4).astype(int) % 2  # corner sites (Al) are even, centres odd
        on_centre = sites.sum(axis=1) == 3
        wrong = np.sum((np.array(atoms.get_chemical_symbols()) == "Al") == on_centre)
        assert wrong == antisites
        assert atoms.info["vacancies"] == vacancies and atoms.info["antisites"] == antisites


def test_same_rng_state_same_structure_and_streams_differ() -> None:
    for generator in (
        SolidSolutionGenerator("bcc", size=(2, 3), al=(0.1, 0.5), vacancies=(0, 1)),
        RattledCellGenerator([build_prototype("AlFe-B2").repeat(2)], beta=0.2),
    ):
        assert_identical(generator.sample(np.random.default_rng(3)), generator.sample(np.random.default_rng(3)))
        first, second = generator.sample_many(2, seed=9)
        assert not np.allclose(
            first.positions[: min(len(first), len(second))], second.positions[: min(len(first), len(second))]
        )
        longer = generator.sample_many(3, seed=9)
        assert_identical(longer[1], second)


def test_random_cells_respect_composition_volume_and_distance() -> None:
    generator = RandomCellGenerator(atoms=(3, 4), al=(0.25, 0.75), volume=(0.95, 1.05), min_distance=2.1)
    cells = generator.sample_many(3, seed=1)
    for atoms in cells:
        assert 3 <= len(atoms) <= 4
        assert 0.25 <= al_fraction(atoms) <= 0.75
        counts = {s: atoms.get_chemical_symbols().count(s) for s in set(atoms.get_chemical_symbols())}
        ratio = atoms.get_volume() / len(atoms) / default_volume_per_atom(counts)
        assert 0.95 - 1e-9 <= ratio <= 1.05 + 1e-9
        assert ratio == pytest.approx(atoms.info["volume_per_atom"] / default_volume_per_atom(counts))
        assert closest_pair(atoms, 3.0)[2] >= 2.1
        assert atoms.pbc.all()
    assert_identical(generator.sample_many(1, seed=1)[0], cells[0])


def test_rattled_copies_stay_within_beta_of_their_cell() -> None:
    cells = [build_prototype("AlFe-B2").repeat(2), build_prototype("Al-fcc", cubic=True)]
    generator = RattledCellGenerator(cells, beta=0.25, min_distance=1.5)
    seen = set()
    for seed in range(8):
        atoms = generator.sample(np.random.default_rng(seed))
        cell = cells[atoms.info["cell_index"]]
        seen.add(atoms.info["cell_index"])
        assert np.abs(atoms.positions - cell.positions).max() <= 0.25
        np.testing.assert_array_equal(atoms.cell.array, cell.cell.array)
        assert closest_pair(atoms, 3.0)[2] >= 1.5
    assert seen == {0, 1}


@pytest.mark.parametrize(
    "spec",
    [
        "generate:solid_solution,lattice=bcc,size=2-3,al=0.1-0.5,vacancies=0-1",
        "generate:solid_solution,lattice=b2,size=2,antisites=1,rattle=0.02",
        "generate:solid_solution,lattice=fcc,size=1,al=0.5,a=4.1,min_distance=2",
        "generate:random_cell,atoms=4-6,al=0.2-0.8,volume=1",
        "generate:rattled,from=AlFe-B2+Fe-bcc,beta=0.2,relax=no",
    ],
)
def test_spec_round_trip(spec: str) -> None:
    generator = parse_generator_spec(spec)
    again = parse_generator_spec(generator.spec)
    assert again == generator and again.spec == generator.spec
    if not isinstance(generator, RandomCellGenerator):  # pyxtal draws take seconds: checked above
        assert_identical(generator.sample(np.random.default_rng(0)), again.sample(np.random.default_rng(0)))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lattice=st.sampled_from(["bcc", "fcc", "b2"]),
    size=st.tuples(st.integers(1, 4), st.integers(0, 2)).map(lambda t: (t[0], t[0] + t[1])),
    vacancies=st.integers(0, 3),
    rattle=st.floats(0.0, 0.2),
)
def test_solid_solution_specs_round_trip(lattice: str, size: tuple[int, int], vacancies: int, rattle: float) -> None:
    try:
        generator = SolidSolutionGenerator(lattice, size=size, vacancies=vacancies, rattle=rattle)
    except ValueError as err:
        assert "vacancies" in str(err)  # only too many vacancies for the smallest cell can be wrong here
        return
    assert parse_generator_spec(generator.spec).spec == generator.spec


def test_dataset_spec_draws_a_fixed_prefix_list() -> None:
    five = load_structures("generate:solid_solution,lattice=bcc,size=2,al=0.1-0.5,count=5,seed=4")
    three = load_structures("generate:solid_solution,lattice=bcc,size=2,al=0.1-0.5,count=3,seed=4")
    assert len(five) == 5
    for a, b in zip(three, five, strict=False):
        assert_identical(a, b)
    other = load_structures("generate:solid_solution,lattice=bcc,size=2,al=0.1-0.5,count=1,seed=5")
    assert not np.allclose(other[0].positions, five[0].positions)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: SolidSolutionGenerator("hcp"), "lattice must be one of"),
        (lambda: SolidSolutionGenerator("bcc", size=0), "size must satisfy"),
        (lambda: SolidSolutionGenerator("bcc", al=(0.6, 0.2)), "al .Al fraction. must satisfy"),
        (lambda: SolidSolutionGenerator("bcc", al=(0.0, 1.5)), "al .Al fraction. must satisfy"),
        (lambda: SolidSolutionGenerator("bcc", size=1, al=(0.3, 0.4)), "no whole number of Al atoms among 2"),
        (lambda: SolidSolutionGenerator("bcc", antisites=1), "antisites need the ordered b2"),
        (lambda: SolidSolutionGenerator("b2", al=0.5), "al cannot be set for lattice b2"),
        (lambda: SolidSolutionGenerator("b2", size=1, vacancies=1), "fewer than 2 atoms"),
        (lambda: SolidSolutionGenerator("bcc", rattle=-0.1), "rattle must be a non-negative"),
        (lambda: SolidSolutionGenerator("bcc", a=0.0), "a .lattice constant. must be a positive"),
        (lambda: SolidSolutionGenerator("bcc", min_distance=2.6), "exceeds the ideal nearest-neighbour distance"),
        (lambda: RandomCellGenerator(atoms=(0, 3)), "atoms must satisfy"),
        (lambda: RandomCellGenerator(atoms=2, al=(0.3, 0.4)), "no whole number of Al atoms among 2"),
        (lambda: RandomCellGenerator(volume=0.0), "volume"),
        (lambda: RattledCellGenerator([]), "non-empty sequence"),
        (lambda: RattledCellGenerator([build_prototype("AlFe-B2")], beta=-1), "beta must be"),
        (lambda: RattledCellGenerator([build_prototype("Al-fcc", a=2.0)]), "closer than the allowed"),
    ],
)
def test_bad_parameters_are_named(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("solid_solution,lattice=bcc", "starts with 'generate:"),
        ("generate:liquid,size=2", "unknown generator 'liquid'"),
        ("generate:solid_solution,lattice=bcc,sise=2", "unknown key.s. sise"),
        ("generate:solid_solution,size=2", "needs lattice="),
        ("generate:solid_solution,lattice=bcc,size=two", "size='two' is not a number"),
        ("generate:solid_solution,lattice=bcc,size=1.5", "must be whole numbers"),
        ("generate:solid_solution,lattice=bcc,rattle=0.1-0.2", "rattle takes one number"),
        ("generate:solid_solution,lattice=bcc,size=2,size=3", "size given twice"),
        ("generate:solid_solution,lattice=bcc,size", "'size' is not key=value"),
        ("generate:solid_solution,lattice=bcc,al=0.5-0.2", "al .Al fraction. must satisfy"),
        ("generate:rattled,beta=0.1", "needs from="),
        ("generate:rattled,from=AlFe-B2,relax=maybe", "must be yes or no"),
    ],
)
def test_bad_specs_name_the_spec_and_the_key(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_generator_spec(spec)
    if spec.startswith("generate:"):
        assert repr(spec) in str(info.value)


def test_dataset_spec_needs_a_count() -> None:
    with pytest.raises(ValueError, match="needs count="):
        load_structures("generate:solid_solution,lattice=bcc")
