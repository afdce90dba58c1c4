"""Generators for any two elements (``elements=``, ``fraction=``): Al–Fe unchanged bit for bit, Cu–Au as asked."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar

from sb3_crystal.structures.generators import (
    REFERENCE_LATTICES,
    RandomCellGenerator,
    SolidSolutionGenerator,
    parse_generator_spec,
    reference_volume_per_atom,
    vegard_volume_per_atom,
)
from sb3_crystal.structures.geometry import closest_pair

#: Digests of ``sample_many(3, seed=11)`` of each spec, taken with the Al–Fe-only generators before ``elements=``
#: existed (positions and cell rounded to 1e-8 Å, species, info): the generalised code must reproduce them.
AL_FE_BEFORE = {
    "generate:random_cell,atoms=4-8,rattle=0.2": (
        "generate:random_cell,atoms=4-8,al=0-1,volume=0.9-1.1,min_distance=2,rattle=0.2",
        ["d45b359d3b9b50f7", "5f91323ed8c233a8", "94d92ddba070566c"],
    ),
    "generate:random_cell,atoms=3-5,al=0.2-0.8,volume=0.95-1.05": (
        "generate:random_cell,atoms=3-5,al=0.2-0.8,volume=0.95-1.05,min_distance=2",
        ["029e02fe00137843", "c51a5680c8b1e028", "74986ec28a2de835"],
    ),
    "generate:solid_solution,lattice=bcc,size=2,al=0.1-0.5,rattle=0.1": (
        "generate:solid_solution,lattice=bcc,size=2,al=0.1-0.5,vacancies=0,rattle=0.1,a=2.8553,min_distance=1.5",
        ["e367eb3e78bb341c", "d29805bcf1e43a56", "c36cc820bd06f8c2"],
    ),
    "generate:solid_solution,lattice=fcc,size=1-2,vacancies=0-1": (
        "generate:solid_solution,lattice=fcc,size=1-2,al=0-1,vacancies=0-1,rattle=0.05,a=4.0333,min_distance=1.5",
        ["ef473b427c37db36", "b63f0901ba48a5fd", "e6577fbdea58f627"],
    ),
    "generate:solid_solution,lattice=b2,size=2,vacancies=0-1,antisites=0-1,rattle=0.1": (
        "generate:solid_solution,lattice=b2,size=2,vacancies=0-1,antisites=0-1,rattle=0.1,a=2.8513,min_distance=1.5",
        ["e198d5551de77184", "b2d5cda8f03f645f", "ecd5698e422fbe31"],
    ),
}


def digest(atoms: Atoms) -> str:
    h = hashlib.sha256()
    h.update(np.round(atoms.positions, 8).tobytes())
    h.update(atoms.numbers.tobytes())
    h.update(np.round(atoms.cell.array, 8).tobytes())
    info = {k: v for k, v in atoms.info.items() if isinstance(v, (str, int, float))}
    h.update(json.dumps(info, sort_keys=True).encode())
    return h.hexdigest()[:16]


def assert_identical(first: list[Atoms], second: list[Atoms]) -> None:
    for a, b in zip(first, second, strict=True):
        assert a.get_chemical_symbols() == b.get_chemical_symbols()
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.cell.array, b.cell.array)


@pytest.mark.parametrize("spec", list(AL_FE_BEFORE))
def test_al_fe_specs_and_structures_are_unchanged(spec: str) -> None:
    generator = parse_generator_spec(spec)
    written, digests = AL_FE_BEFORE[spec]
    assert generator.spec == written
    assert [digest(atoms) for atoms in generator.sample_many(3, 11)] == digests


@pytest.mark.parametrize(
    ("default", "explicit"),
    [
        ("generate:random_cell,atoms=3-5,al=0.2-0.8", "generate:random_cell,elements=Al+Fe,atoms=3-5,fraction=0.2-0.8"),
        (
            "generate:solid_solution,lattice=fcc,size=1,al=0.25-0.75",
            "generate:solid_solution,elements=Al+Fe,lattice=fcc,size=1,fraction=0.25-0.75",
        ),
    ],
)
def test_explicit_al_fe_is_the_default(default: str, explicit: str) -> None:
    first, second = parse_generator_spec(default), parse_generator_spec(explicit)
    assert first == second and first.spec == second.spec
    assert_identical(first.sample_many(2, 5), second.sample_many(2, 5))


def _emt_fcc_constant(element: str) -> float:
    def energy(a: float) -> float:
        atoms = bulk(element, "fcc", a=a, cubic=True)
        atoms.calc = EMT()
        return atoms.get_potential_energy() / len(atoms)

    guess = REFERENCE_LATTICES[element][1]
    return float(minimize_scalar(energy, bracket=(0.97 * guess, guess, 1.03 * guess), tol=1e-10).x)


@pytest.mark.parametrize("element", ["Ag", "Au", "Cu", "Ni", "Pd", "Pt"])
def test_emt_reference_constants_are_emts_fcc_equilibrium(element: str) -> None:
    kind, a = REFERENCE_LATTICES[element]
    assert kind == "fcc"
    assert a == pytest.approx(_emt_fcc_constant(element), abs=1e-4)
    assert reference_volume_per_atom(element) == pytest.approx(a**3 / 4)


def test_other_elements_fall_back_on_ases_reference_crystal() -> None:
    chromium = bulk("Cr")  # bcc, ASE's experimental constant
    assert reference_volume_per_atom("Cr") == pytest.approx(chromium.get_volume() / len(chromium))
    assert vegard_volume_per_atom({"Cu": 3, "Au": 1}) == pytest.approx(
        (3 * reference_volume_per_atom("Cu") + reference_volume_per_atom("Au")) / 4
    )


@settings(max_examples=15, deadline=None)
@given(
    lattice=st.sampled_from(["fcc", "bcc"]),
    size=st.integers(1, 2),
    low=st.floats(0.0, 0.5),
    vacancies=st.integers(0, 1),
    seed=st.integers(0, 2**32 - 1),
)
def test_cu_au_solid_solution_composition_vegard_cell_and_round_trip(
    lattice: str, size: int, low: float, vacancies: int, seed: int
) -> None:
    fraction = (low, low + 0.5)
    vacancies = 0 if lattice == "bcc" and size == 1 else vacancies  # a 2-site cube keeps both atoms
    generator = SolidSolutionGenerator(
        lattice, size=size, elements="Cu+Au", fraction=fraction, vacancies=vacancies, rattle=0.05, min_distance=1.5
    )
    assert parse_generator_spec(generator.spec) == generator
    assert generator.spec.startswith("generate:solid_solution,elements=Cu+Au,") and "a=" not in generator.spec
    atoms = generator.sample(np.random.default_rng(seed))
    symbols = np.array(atoms.get_chemical_symbols())
    assert set(symbols) <= {"Cu", "Au"}
    assert fraction[0] - 1e-9 <= np.mean(symbols == "Cu") <= fraction[1] + 1e-9
    counts = {element: int(np.sum(symbols == element)) for element in ("Cu", "Au") if np.any(symbols == element)}
    sites = {"fcc": 4, "bcc": 2}[lattice] * size**3
    volume_per_site = vegard_volume_per_atom(counts) * len(atoms) / sites  # vacant sites share the volume
    a = (volume_per_site * sites / size**3) ** (1 / 3)
    np.testing.assert_allclose(atoms.cell.array, np.eye(3) * a * size, rtol=1e-12)
    assert atoms.info["lattice_constant"] == pytest.approx(a)
    assert closest_pair(atoms, 3.0)[2] >= 1.5


def test_cu_au_b2_puts_the_first_element_on_the_corners_and_a_fixes_the_constant() -> None:
    ordered = SolidSolutionGenerator("b2", size=2, elements=("Cu", "Au"), rattle=0.0).ideal(np.random.default_rng(0))
    scaled = ordered.get_scaled_positions() * 2
    corners = np.all(np.isclose(scaled % 1, 0), axis=1)
    assert set(np.array(ordered.get_chemical_symbols())[corners]) == {"Cu"}
    assert set(np.array(ordered.get_chemical_symbols())[~corners]) == {"Au"}
    fixed = parse_generator_spec("generate:solid_solution,elements=Cu+Au,lattice=fcc,size=1,a=3.8")
    assert "a=3.8" in fixed.spec
    np.testing.assert_allclose(fixed.sample(np.random.default_rng(1)).cell.array, np.eye(3) * 3.8)


def test_cu_au_random_cells_species_volume_and_distance() -> None:
    generator = RandomCellGenerator(atoms=(4, 6), elements=("Cu", "Au"), fraction=(0.25, 0.75), volume=(0.95, 1.05))
    assert parse_generator_spec(generator.spec) == generator
    for atoms in generator.sample_many(3, seed=2):
        symbols = np.array(atoms.get_chemical_symbols())
        assert set(symbols) == {"Cu", "Au"} and 0.25 <= np.mean(symbols == "Cu") <= 0.75
        counts = {element: int(np.sum(symbols == element)) for element in ("Cu", "Au")}
        ratio = atoms.get_volume() / len(atoms) / vegard_volume_per_atom(counts)
        assert 0.95 - 1e-9 <= ratio <= 1.05 + 1e-9
        assert closest_pair(atoms, 3.0)[2] >= 2.0 - 1e-9


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("generate:random_cell,elements=Cu+Cu", "two different elements"),
        ("generate:random_cell,elements=Cu+Xx", "'Xx' is not an element symbol"),
        ("generate:random_cell,elements=cu+Au", "'cu' is not an element symbol"),
        ("generate:random_cell,elements=Cu", "two elements"),
        ("generate:random_cell,elements=Cu+Au,al=0.5", "for elements=Cu\\+Au use fraction \\(of Cu\\)"),
        ("generate:random_cell,al=0.5,fraction=0.5", "fraction or al, not both"),
        ("generate:solid_solution,elements=Cu+Au,lattice=b2,fraction=0.5", "fraction cannot be set for lattice b2"),
        ("generate:solid_solution,elements=Cu+Au,lattice=fcc,size=1,fraction=0.3", "fraction=0.3: no whole number of Cu"),
    ],
)
def test_bad_element_keys_are_named(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_generator_spec(spec)
