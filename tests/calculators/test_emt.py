"""EMT through ``make_calculator("emt")``: ASE's own numbers, and a clear error on elements it lacks."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from sb3_crystal.calculators import (
    ForceCallCounter,
    UnsupportedElementsError,
    calculator_elements,
    check_elements,
    make_calculator,
)
from sb3_crystal.envs.crystal_relax import CrystalRelaxEnv
from sb3_crystal.structures.prototypes import build_prototype


def cuau_cell(seed: int):
    """A distorted, strained 8-atom Cu–Au cell (fcc 2×1×1 conventional supercell, random species)."""
    rng = np.random.default_rng(seed)
    atoms = bulk("Cu", "fcc", a=3.8, cubic=True).repeat((2, 1, 1))
    atoms.numbers = rng.choice([29, 79], size=len(atoms))
    atoms.numbers[:2] = [29, 79]  # both elements present
    atoms.set_cell(atoms.cell @ (np.eye(3) + rng.uniform(-0.03, 0.03, (3, 3))), scale_atoms=True)
    atoms.positions += rng.uniform(-0.15, 0.15, atoms.positions.shape)
    return atoms


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("counted", [False, True])
def test_emt_agrees_with_ase_emt_on_cu_au(seed, counted):
    atoms = cuau_cell(seed)
    ours = atoms.copy()
    calc = make_calculator("emt")
    ours.calc = ForceCallCounter(calc) if counted else calc
    reference = atoms.copy()
    reference.calc = EMT()
    assert ours.get_potential_energy() == pytest.approx(reference.get_potential_energy(), abs=1e-10)
    np.testing.assert_allclose(ours.get_forces(), reference.get_forces(), atol=1e-10)
    np.testing.assert_allclose(ours.get_stress(), reference.get_stress(), atol=1e-12)
    assert np.abs(reference.get_forces()).max() > 0.05  # a geometry with real forces


def test_emt_elements_known_and_al_fe_refused_naming_fe_before_any_work():
    elements = calculator_elements(make_calculator("emt"))
    assert {"Cu", "Au", "Al", "Ni", "Pd", "Pt", "Ag"} <= set(elements) and "Fe" not in elements
    b2 = build_prototype("AlFe-B2")
    with pytest.raises(UnsupportedElementsError, match=r"element\(s\) Fe not covered by EMT"):
        check_elements(b2.numbers, elements, "EMT")
    with pytest.raises(UnsupportedElementsError, match=r"AlFe-B2: element\(s\) Fe not covered") as info:
        CrystalRelaxEnv(structures="AlFe-B2", calculator="emt")
    assert "NotImplementedError" not in str(info.value) and "Al," in str(info.value)  # says what EMT covers
