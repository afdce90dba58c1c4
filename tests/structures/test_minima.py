import numpy as np
import pytest

from sb3_crystal.calculators import make_calculator
from sb3_crystal.structures.minima import (
    fixed_cell_hessian,
    lowest_internal_eigenvalue,
    max_force,
    relax_fixed_cell,
    relaxed_minimum,
)
from sb3_crystal.structures.prototypes import build_prototype


def forces_of(atoms, calculator="lammps"):
    atoms = atoms.copy()
    atoms.calc = make_calculator(calculator)
    return atoms.get_forces()


def test_relaxation_reaches_threshold_from_a_distorted_start():
    atoms = build_prototype("Al-I4mmm")
    atoms.positions += np.random.default_rng(0).uniform(-0.2, 0.2, atoms.positions.shape)
    relaxed, steps = relax_fixed_cell(atoms, fmax=1e-3)
    assert steps > 0 and max_force(forces_of(relaxed)) <= 1e-3
    np.testing.assert_array_equal(relaxed.cell, atoms.cell)


def test_b2_is_a_minimum_and_simple_hexagonal_alfe_a_saddle(tmp_path):
    _, b2 = relaxed_minimum(build_prototype("AlFe-B2"), cache_dir=tmp_path)
    _, hexagonal = relaxed_minimum(build_prototype("AlFe-hex"), cache_dir=tmp_path)
    assert b2.is_minimum and b2.lowest_eigenvalue > 1.0
    assert not hexagonal.is_minimum and hexagonal.lowest_eigenvalue < -1.0
    assert b2.energy / 2 == pytest.approx(-4.0249, abs=1e-4)  # B2 cohesive energy of the Mendelev potential


def test_hessian_is_symmetric_with_free_translations_and_matches_force_differences():
    atoms = build_prototype("AlFe-B2").repeat((2, 1, 1))
    atoms.positions += np.random.default_rng(1).uniform(-0.05, 0.05, atoms.positions.shape)
    hessian = fixed_cell_hessian(atoms)
    np.testing.assert_allclose(hessian, hessian.T, atol=1e-8)
    translation = np.tile([1.0, 0.0, 0.0], len(atoms))
    assert np.abs(hessian @ translation).max() < 1e-6
    step = np.random.default_rng(2).normal(size=hessian.shape[0]) * 1e-4
    moved = atoms.copy()
    moved.positions += step.reshape(-1, 3)
    predicted = forces_of(atoms).ravel() - hessian @ step
    np.testing.assert_allclose(forces_of(moved).ravel(), predicted, atol=1e-5)


def test_lowest_internal_eigenvalue_ignores_translations():
    hessian = np.diag([0.0, 0.0, 0.0, 2.0, 3.0, -1.0])
    # a 2-atom system whose only soft mode is a rigid translation: rotate into the translation basis
    n = 6
    translations = np.zeros((n, 3))
    for axis in range(3):
        translations[axis::3, axis] = 1 / np.sqrt(2)
    q, _ = np.linalg.qr(np.hstack([translations, np.eye(n)[:, :3]]))
    h = q @ hessian @ q.T
    assert lowest_internal_eigenvalue(h) == pytest.approx(-1.0)
    assert lowest_internal_eigenvalue(np.zeros((3, 3))) == float("inf")


def test_cache_is_used_keyed_by_potential_and_survives_corruption(tmp_path, monkeypatch):
    atoms = build_prototype("Al-I4mmm")
    first, report = relaxed_minimum(atoms, cache_dir=tmp_path)
    entries = list(tmp_path.glob("*.extxyz"))
    assert len(entries) == 1 and report.n_steps > 0

    import sb3_crystal.structures.minima as minima

    def fail(*args, **kwargs):
        raise AssertionError("should have come from the cache")

    monkeypatch.setattr(minima, "relax_fixed_cell", fail)
    second, cached = relaxed_minimum(atoms, cache_dir=tmp_path)
    np.testing.assert_allclose(second.positions, first.positions, atol=1e-9)
    assert cached.energy == pytest.approx(report.energy)
    monkeypatch.undo()

    relaxed_minimum(atoms, calculator="emt", cache_dir=tmp_path, check_hessian=False)  # another surface: new entry
    assert len(list(tmp_path.glob("*.extxyz"))) == 2

    entries[0].write_text("garbage")
    with pytest.warns(UserWarning, match="unreadable cache entry"):
        again, _ = relaxed_minimum(atoms, cache_dir=tmp_path)
    np.testing.assert_allclose(again.positions, first.positions, atol=1e-6)
    assert not list(tmp_path.glob("*.tmp"))
