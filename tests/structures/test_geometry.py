import numpy as np
import pytest

from sb3_crystal.structures.geometry import AtomsTooCloseError, check_min_distance, closest_pair, distort
from sb3_crystal.structures.prototypes import build_prototype


def test_closest_pair_sees_periodic_images():
    atoms = build_prototype("Fe-bcc", cubic=True)
    atoms.positions[1] = atoms.cell[0] * 0.95  # near the image of atom 0 across the cell face
    i, j, d = closest_pair(atoms)
    assert {i, j} == {0, 1} and d == pytest.approx(0.05 * atoms.cell[0, 0])


def test_check_min_distance_names_pair():
    atoms = build_prototype("AlFe-B2")
    atoms.positions[1] = [0.3, 0.0, 0.0]
    with pytest.raises(AtomsTooCloseError, match=r"mine.cif: atoms 0 \(Al\) and 1 \(Fe\) are 0\.300 Å apart"):
        check_min_distance(atoms, 1.0, where="mine.cif")
    check_min_distance(atoms, 0.2)


def test_distort_is_reproducible_and_respects_min_distance():
    atoms = build_prototype("AlFe-B2")
    a = distort(atoms, 1.2, np.random.default_rng(0), min_distance=2.0)
    b = distort(atoms, 1.2, np.random.default_rng(0), min_distance=2.0)
    np.testing.assert_array_equal(a.positions, b.positions)
    assert np.abs(a.positions - atoms.positions).max() <= 1.2
    for seed in range(30):
        assert closest_pair(distort(atoms, 1.2, np.random.default_rng(seed), min_distance=2.0), 2.0)[2] >= 2.0
    with pytest.raises(ValueError, match="beta"):
        distort(atoms, -1.0, np.random.default_rng(0))
    with pytest.raises(RuntimeError, match="lower beta or min_distance"):
        distort(atoms, 0.1, np.random.default_rng(0), min_distance=2.6, max_tries=5)
