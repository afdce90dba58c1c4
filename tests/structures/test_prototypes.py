import pytest
import spglib

from sb3_crystal.structures.prototypes import PROTOTYPES, build_prototype

EXPECTED = {
    "AlFe-B2": (221, "AlFe", 2),
    "AlFe-hex": (191, "AlFe", 2),
    "Al-I4mmm": (139, "Al4", 4),
    "Al-fcc": (225, "Al", 1),
    "Al-bcc": (229, "Al", 1),
    "Al-hcp": (194, "Al2", 2),
    "Fe-bcc": (229, "Fe", 1),
    "Fe-fcc": (225, "Fe", 1),
    "Fe-hcp": (194, "Fe2", 2),
}


@pytest.mark.parametrize("name", list(PROTOTYPES))
def test_prototype_has_its_space_group(name):
    atoms = build_prototype(name)
    space_group, formula, n_atoms = EXPECTED[name]
    cell = (atoms.cell[:], atoms.get_scaled_positions(), atoms.numbers)
    assert spglib.get_symmetry_dataset(cell, symprec=1e-4).number == space_group
    assert atoms.get_chemical_formula() == formula and len(atoms) == n_atoms and atoms.pbc.all()


def test_lattice_parameters_and_names():
    assert build_prototype("alfe-b2", a=3.0).cell.lengths() == pytest.approx([3.0] * 3)
    with pytest.raises(KeyError, match="Unknown prototype 'NaCl'"):
        build_prototype("NaCl")
