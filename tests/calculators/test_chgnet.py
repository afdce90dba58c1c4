"""CHGNet (optional extra) through ``make_calculator("chgnet")``: the same numbers as CHGNet's own calculator."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

pytest.importorskip("chgnet")

from chgnet.model.dynamics import CHGNetCalculator

from sb3_crystal.calculators import ForceCallCounter, calculator_elements, make_calculator


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small cells: one thread is as fast, and two threads on a busy 2-core machine are many times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ours():
    return make_calculator("chgnet")


@pytest.fixture(scope="module")
def theirs():
    return CHGNetCalculator()


def srtio3(seed: int) -> Atoms:
    """Cubic perovskite SrTiO3 (5 atoms), strained and displaced."""
    rng = np.random.default_rng(seed)
    scaled = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    atoms = Atoms("SrTiO3", scaled_positions=scaled, cell=np.eye(3) * 3.905, pbc=True)
    atoms.set_cell(atoms.cell @ (np.eye(3) + rng.uniform(-0.02, 0.02, (3, 3))), scale_atoms=True)
    atoms.positions += rng.uniform(-0.1, 0.1, atoms.positions.shape)
    return atoms


def results(atoms: Atoms, calc) -> tuple[float, np.ndarray, np.ndarray]:
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()


def test_make_calculator_gives_chgnet_with_its_own_numbers(ours, theirs):
    assert isinstance(ours, CHGNetCalculator)
    for seed in (0, 1):
        atoms = srtio3(seed)
        e, f, s = results(atoms, ours)
        e_ref, f_ref, s_ref = results(atoms, theirs)
        assert e == pytest.approx(e_ref, abs=1e-5)
        np.testing.assert_allclose(f, f_ref, atol=1e-5)
        np.testing.assert_allclose(s, s_ref, atol=1e-6)
        assert np.abs(f_ref).max() > 0.05


def test_counted_chgnet_counts_one_call_per_geometry_with_the_same_numbers(ours, theirs):
    counter = ForceCallCounter(ours)
    atoms = srtio3(2)
    atoms.calc = counter
    energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    assert counter.force_calls == 1
    e_ref, f_ref, s_ref = results(srtio3(2), theirs)
    assert energy == pytest.approx(e_ref, abs=1e-5)
    np.testing.assert_allclose(forces, f_ref, atol=1e-5)
    np.testing.assert_allclose(stress, s_ref, atol=1e-6)


def test_chgnet_energy_invariant_under_rotation_and_permutation(ours):
    from scipy.spatial.transform import Rotation

    atoms = srtio3(3)
    energy, forces, _ = results(atoms, ours)
    rotation = Rotation.random(random_state=4).as_matrix()
    rotated = Atoms(atoms.numbers, positions=atoms.positions @ rotation.T, cell=atoms.cell @ rotation.T, pbc=True)
    e_rot, f_rot, _ = results(rotated, ours)
    assert e_rot == pytest.approx(energy, abs=1e-4)  # float32 network
    np.testing.assert_allclose(f_rot, forces @ rotation.T, atol=1e-4)
    order = np.random.default_rng(5).permutation(len(atoms))
    e_perm, f_perm, _ = results(atoms[order], ours)
    assert e_perm == pytest.approx(energy, abs=1e-4)
    np.testing.assert_allclose(f_perm, forces[order], atol=1e-4)


def test_chgnet_covers_hydrogen_to_plutonium_and_names_unknown_models(ours):
    elements = calculator_elements(ours)
    assert elements[0] == "H" and elements[-1] == "Pu" and len(elements) == 94
    with pytest.raises(ValueError, match="nosuchmodel"):
        make_calculator("chgnet:nosuchmodel")
