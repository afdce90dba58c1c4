"""Stress of the LAMMPS EAM calculator: matscipy's, the strain derivative of the energy, covariant, relaxable."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from sb3_crystal.calculators import ForceCallCounter, LammpsEAMCalculator, make_calculator
from sb3_crystal.structures.prototypes import build_prototype
from sb3_crystal.threads import blas_threads
from tests.calculators.test_lammps_eam import distorted_b2, random_alfe_16, stress_of


def sheared_b2_supercell() -> Atoms:
    """A 2×2×2 B2 supercell under a large shear (tilt factors near LAMMPS's half-box limit) and a strain."""
    atoms = build_prototype("AlFe-B2").repeat((2, 2, 2))
    deformation = np.array([[1.03, 0.0, 0.0], [0.45, 0.97, 0.0], [0.2, -0.3, 1.01]])
    atoms.set_cell(atoms.cell @ deformation.T, scale_atoms=True)
    atoms.positions += np.random.default_rng(3).uniform(-0.1, 0.1, atoms.positions.shape)
    return atoms


CELLS = {
    "b2": lambda: distorted_b2(0),
    "compressed_b2": lambda: _scaled(distorted_b2(1), 0.96),
    "triclinic_16": lambda: random_alfe_16(0),
    "triclinic_16b": lambda: random_alfe_16(1),
    "sheared_supercell": sheared_b2_supercell,
}


def _scaled(atoms: Atoms, factor: float) -> Atoms:
    atoms.set_cell(atoms.cell * factor, scale_atoms=True)
    return atoms


@pytest.mark.parametrize("name", sorted(CELLS))
def test_stress_agrees_with_matscipy(name):
    atoms = CELLS[name]()
    _, _, s_lmp = stress_of(atoms, LammpsEAMCalculator())
    _, _, s_ms = stress_of(atoms, make_calculator("matscipy"))
    assert np.abs(s_ms).max() > 1e-3  # not a trivially zero stress
    np.testing.assert_allclose(s_lmp, s_ms, atol=1e-7)


def _strained_energy(atoms: Atoms, calc: LammpsEAMCalculator, strain: np.ndarray) -> float:
    cell = np.asarray(atoms.cell) @ (np.eye(3) + strain)
    positions = atoms.positions @ (np.eye(3) + strain)
    return calc.compute(atoms.numbers, cell, positions)[0]


@pytest.mark.parametrize("name", ["triclinic_16", "sheared_supercell", "compressed_b2"])
def test_stress_is_the_strain_derivative_of_the_energy(name):
    """σ_ij = (1/V) ∂E/∂ε_ij by central differences under small symmetric strains (all six components)."""
    atoms = CELLS[name]()
    calc = LammpsEAMCalculator()
    _, _, stress = stress_of(atoms, calc)
    volume = atoms.get_volume()
    delta = 1e-5
    numeric = np.empty(6)
    for k, (i, j) in enumerate([(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]):
        strain = np.zeros((3, 3))
        strain[i, j] = strain[j, i] = delta if i == j else delta / 2
        numeric[k] = (_strained_energy(atoms, calc, strain) - _strained_energy(atoms, calc, -strain)) / (2 * delta)
    np.testing.assert_allclose(stress, numeric / volume, atol=2e-6)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_stress_rotates_as_a_tensor_and_ignores_translations_and_permutations(seed):
    rng = np.random.default_rng(seed)
    atoms = random_alfe_16(seed % 1000)
    calc = LammpsEAMCalculator()
    _, _, voigt = stress_of(atoms, calc)
    tensor = _full(voigt)
    rotation = Rotation.random(random_state=seed).as_matrix()
    rotated = Atoms(atoms.numbers, positions=atoms.positions @ rotation.T, cell=atoms.cell @ rotation.T, pbc=True)
    np.testing.assert_allclose(_full(stress_of(rotated, calc)[2]), rotation @ tensor @ rotation.T, atol=1e-9)
    moved = atoms[rng.permutation(len(atoms))]
    moved.positions += rng.uniform(-3, 3, 3)
    np.testing.assert_allclose(stress_of(moved, calc)[2], voigt, atol=1e-9)


def _full(voigt: np.ndarray) -> np.ndarray:
    xx, yy, zz, yz, xz, xy = voigt
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


def test_compute_fast_path_keeps_its_two_results_and_gives_stress_on_request():
    atoms = random_alfe_16(5)
    calc = LammpsEAMCalculator()
    plain = calc.compute(atoms.numbers, np.asarray(atoms.cell), atoms.positions)
    assert len(plain) == 2
    energy, forces, stress = calc.compute(atoms.numbers, np.asarray(atoms.cell), atoms.positions, stress=True)
    assert energy == plain[0]
    np.testing.assert_array_equal(forces, plain[1])
    e_ase, _, s_ase = stress_of(atoms, LammpsEAMCalculator())
    assert energy == pytest.approx(e_ase, abs=1e-12)
    np.testing.assert_allclose(stress, s_ase, atol=1e-14)


@pytest.mark.parametrize("counted", [False, True])
def test_frechet_cell_filter_relaxes_a_strained_b2_cell_to_zero_stress(counted):
    atoms = build_prototype("AlFe-B2")
    deformation = np.eye(3) + np.array([[0.04, 0.02, 0.0], [0.0, -0.03, 0.01], [0.0, 0.0, 0.02]])
    atoms.set_cell(atoms.cell @ deformation, scale_atoms=True)
    atoms.positions[0] += 0.05
    calc = LammpsEAMCalculator()
    atoms.calc = ForceCallCounter(calc) if counted else calc
    assert np.abs(atoms.get_stress()).max() > 0.02
    with blas_threads(1):  # the filter's 3×3 matrix functions are slow with BLAS threads on a busy machine
        opt = FIRE(FrechetCellFilter(atoms), logfile=None)
        assert opt.run(fmax=1e-3, steps=400)
    assert np.abs(atoms.get_stress()).max() < 1e-4  # eV/Å^3 (FrechetCellFilter's fmax bounds stress × volume)
    assert np.abs(atoms.get_forces()).max() < 1e-3
    reference = build_prototype("AlFe-B2")
    lengths = atoms.cell.cellpar()[:3]
    np.testing.assert_allclose(lengths, reference.cell.cellpar()[0], atol=2e-3)  # back to the cubic B2 lattice
    assert len(calc._instances) == 1  # one LAMMPS instance followed the cell throughout
    if counted:
        assert atoms.calc.force_calls == opt.nsteps + 1
