import pickle

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from sb3_crystal.calculators import (
    LammpsEAMCalculator,
    PotentialNotFoundError,
    UnsupportedElementsError,
    calculator_elements,
    calculator_fingerprint,
    make_calculator,
)
from sb3_crystal.structures.prototypes import build_prototype


def random_alfe_16(seed: int) -> Atoms:
    """A 16-atom Al–Fe cell: bcc 2×2×2 supercell, random species, strained triclinic cell, displaced atoms."""
    rng = np.random.default_rng(seed)
    atoms = bulk("Fe", "bcc", a=2.87, cubic=True).repeat((2, 2, 2))
    atoms.numbers = rng.choice([13, 26], size=16)
    strain = np.eye(3) + rng.uniform(-0.04, 0.04, (3, 3))
    atoms.set_cell(atoms.cell @ strain, scale_atoms=True)
    atoms.positions += rng.uniform(-0.15, 0.15, (16, 3))
    return atoms


def distorted_b2(seed: int, beta: float = 0.3) -> Atoms:
    atoms = build_prototype("AlFe-B2")
    atoms.positions += np.random.default_rng(seed).uniform(-beta, beta, (2, 3))
    return atoms


def energy_forces(atoms: Atoms, calc) -> tuple[float, np.ndarray]:
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms.get_potential_energy(), atoms.get_forces()


def stress_of(atoms: Atoms, calc) -> tuple[float, np.ndarray, np.ndarray]:
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()


@pytest.mark.parametrize("make_atoms", [distorted_b2, random_alfe_16])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lammps_agrees_with_matscipy(make_atoms, seed):
    atoms = make_atoms(seed)
    e_lmp, f_lmp = energy_forces(atoms, make_calculator("lammps"))
    e_ms, f_ms = energy_forces(atoms, make_calculator("matscipy"))
    assert abs(e_lmp - e_ms) < 1e-6
    assert np.abs(f_lmp - f_ms).max() < 1e-5


def test_instance_reused_for_same_structure_kept_for_a_return_after_a_cell_change():
    calc = LammpsEAMCalculator()
    atoms = random_alfe_16(3)
    energy_forces(atoms, calc)
    handle = calc._lmp
    for shift in (0.05, 0.1):  # three evaluations at this cell: an instance worth keeping
        moved = atoms.copy()
        moved.positions += shift
        energy_forces(moved, calc)
        assert calc._lmp is handle
    strained = atoms.copy()
    strained.set_cell(atoms.cell * 1.01, scale_atoms=True)
    e2, f2 = energy_forces(strained, calc)
    assert calc._lmp is not handle
    e_fresh, f_fresh = energy_forces(strained, LammpsEAMCalculator())
    assert e2 == pytest.approx(e_fresh, abs=1e-10)
    np.testing.assert_allclose(f2, f_fresh, atol=1e-10)
    energy_forces(atoms, calc)
    assert calc._lmp is handle and len(calc._instances) == 2
    assert calc.force_calls == 5


def test_transient_instance_moves_to_the_new_cell_and_agrees_with_fresh_set_ups():
    """A variable-cell relaxation changes the cell at every evaluation: one instance follows it, results exact."""
    calc = LammpsEAMCalculator()
    rng = np.random.default_rng(11)
    base = random_alfe_16(8)
    handles = set()
    for _ in range(6):
        atoms = base.copy()
        atoms.set_cell(base.cell @ (np.eye(3) + rng.uniform(-0.03, 0.03, (3, 3))), scale_atoms=True)
        atoms.positions += rng.uniform(-0.05, 0.05, atoms.positions.shape)
        e, f, s = stress_of(atoms, calc)
        e_ref, f_ref, s_ref = stress_of(atoms, LammpsEAMCalculator())
        assert e == pytest.approx(e_ref, abs=1e-10)
        np.testing.assert_allclose(f, f_ref, atol=1e-10)
        np.testing.assert_allclose(s, s_ref, atol=1e-12)
        handles.add(id(calc._lmp))
    assert len(handles) == 1 and len(calc._instances) == 1


def test_one_instance_per_structure_kept_across_switches_and_evicted_beyond_max_instances():
    cells = [random_alfe_16(4), distorted_b2(5), random_alfe_16(6)]
    expected = [energy_forces(atoms, LammpsEAMCalculator()) for atoms in cells]
    calc = LammpsEAMCalculator(max_instances=2)
    handles = []
    for atoms, (energy, forces) in zip(cells[:2] * 2, expected[:2] * 2, strict=True):  # A, B, A, B
        e, f = energy_forces(atoms, calc)
        assert e == pytest.approx(energy, abs=1e-10)
        np.testing.assert_allclose(f, forces, atol=1e-10)
        handles.append(calc._lmp)
    assert handles[0] is handles[2] and handles[1] is handles[3] and handles[0] is not handles[1]  # set up once each
    e, f = energy_forces(cells[2], calc)  # a third structure evicts the least recently used (A)
    assert e == pytest.approx(expected[2][0], abs=1e-10)
    assert len(calc._instances) == 2 and calc._lmp not in handles
    e, _ = energy_forces(cells[0], calc)  # A again: set up anew, still right
    assert e == pytest.approx(expected[0][0], abs=1e-10) and calc._lmp is not handles[0]
    calc.close()
    assert not calc._instances and calc._lmp is None
    with pytest.raises(ValueError, match="max_instances"):
        LammpsEAMCalculator(max_instances=0)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_energy_invariant_forces_equivariant_under_rotation_translation_permutation_wrapping(seed):
    rng = np.random.default_rng(seed)
    atoms = random_alfe_16(seed % 1000)
    calc = LammpsEAMCalculator()
    energy, forces = energy_forces(atoms, calc)

    rotation = Rotation.random(random_state=seed).as_matrix()
    rotated = Atoms(atoms.numbers, positions=atoms.positions @ rotation.T, cell=atoms.cell @ rotation.T, pbc=True)
    e_rot, f_rot = energy_forces(rotated, calc)
    assert e_rot == pytest.approx(energy, abs=1e-8)
    np.testing.assert_allclose(f_rot, forces @ rotation.T, atol=1e-8)

    shifted = atoms.copy()
    shifted.positions += rng.uniform(-5, 5, 3)
    shifted.positions += rng.integers(-3, 4, (16, 1)) * atoms.cell[0]  # whole lattice vectors: same crystal
    e_shift, f_shift = energy_forces(shifted, calc)
    assert e_shift == pytest.approx(energy, abs=1e-8)
    np.testing.assert_allclose(f_shift, forces, atol=1e-8)

    order = rng.permutation(16)
    e_perm, f_perm = energy_forces(atoms[order], calc)
    assert e_perm == pytest.approx(energy, abs=1e-8)
    np.testing.assert_allclose(f_perm, forces[order], atol=1e-8)


def test_forces_are_minus_energy_gradient():
    atoms = random_alfe_16(7)
    calc = LammpsEAMCalculator()
    _, forces = energy_forces(atoms, calc)
    delta = 1e-4
    for atom, axis in [(0, 0), (5, 1), (11, 2)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[atom, axis] += delta
        minus.positions[atom, axis] -= delta
        numeric = -(energy_forces(plus, calc)[0] - energy_forces(minus, calc)[0]) / (2 * delta)
        assert numeric == pytest.approx(forces[atom, axis], abs=1e-4)


def test_pickled_calculator_rebuilds_lammps():
    calc = LammpsEAMCalculator()
    atoms = distorted_b2(0)
    expected = energy_forces(atoms, calc)
    clone = pickle.loads(pickle.dumps(calc))
    assert clone._lmp is None
    result = energy_forces(atoms, clone)
    assert result[0] == pytest.approx(expected[0], abs=1e-12)


def test_unsupported_element_names_it_and_the_potential():
    atoms = bulk("Cu", "fcc", a=3.6).repeat((2, 1, 1))
    with pytest.raises(UnsupportedElementsError, match=r"Cu.*AlFe_mm\.eam\.fs"):
        energy_forces(atoms, LammpsEAMCalculator())


def test_non_periodic_cell_is_refused():
    atoms = distorted_b2(0)
    atoms.pbc = (True, True, False)
    with pytest.raises(ValueError, match="periodic"):
        energy_forces(atoms, LammpsEAMCalculator())


def test_make_calculator_specs():
    assert isinstance(make_calculator(), LammpsEAMCalculator)
    assert isinstance(make_calculator("lammps:AlFe_mm.eam.fs"), LammpsEAMCalculator)
    assert calculator_elements(make_calculator("matscipy")) == ("Al", "Fe")
    emt = make_calculator("ase.calculators.emt:EMT")
    assert type(emt).__name__ == "EMT"
    assert make_calculator(emt) is emt
    assert type(make_calculator(lambda: emt)).__name__ == "EMT"
    assert calculator_fingerprint(make_calculator("lammps")) == calculator_fingerprint(make_calculator("matscipy"))
    assert calculator_fingerprint(emt) != calculator_fingerprint(make_calculator("lammps"))
    with pytest.raises(ValueError, match="Unknown calculator 'vasp'"):
        make_calculator("vasp")
    with pytest.raises(PotentialNotFoundError, match=r"nothere\.eam\.fs"):
        make_calculator("lammps:nothere.eam.fs")
    with pytest.raises(TypeError, match="not an ASE calculator"):
        make_calculator(lambda: 42)
