"""LearnedCurvature: the learned Hessian's quasi-Newton steps as an ASE optimizer (the curvature agent's zero action)."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS

from sb3_crystal import LearnedCurvature
from sb3_crystal.calculators import ForceCallCounter, UnsupportedElementsError, make_calculator
from sb3_crystal.structures.geometry import distort, max_force
from sb3_crystal.structures.prototypes import build_prototype


@pytest.fixture(scope="module")
def lammps():
    return make_calculator("lammps")


def supercell_start(seed: int):
    atoms = build_prototype("AlFe-B2") * (2, 2, 2)
    atoms.symbols[[0]] = "Fe"  # an antisite: no longer a perfect crystal
    return distort(atoms, 0.1, np.random.default_rng(seed), min_distance=1.6)


@pytest.mark.parametrize("seed", [0, 1])
def test_converges_in_fewer_force_calls_than_bfgs(seed, lammps):
    start = supercell_start(seed)
    atoms = start.copy()
    atoms.calc = ForceCallCounter(lammps)
    optimizer = LearnedCurvature(atoms, logfile=None)
    assert optimizer.run(fmax=0.05, steps=200)
    assert max_force(atoms.get_forces()) <= 0.05
    assert optimizer.force_calls == atoms.calc.force_calls  # every try counted, trust region included
    reference = start.copy()
    reference.calc = ForceCallCounter(lammps)
    BFGS(reference, logfile=None).run(fmax=0.05, steps=200)
    assert optimizer.force_calls < reference.calc.force_calls


def test_relaxes_the_cell_through_a_filter(lammps):
    atoms = build_prototype("AlFe-B2")
    atoms.set_cell(atoms.cell * 1.03, scale_atoms=True)
    atoms.calc = lammps
    filt = FrechetCellFilter(atoms)
    assert LearnedCurvature(filt, logfile=None).run(fmax=0.01, steps=100)
    assert np.linalg.norm(filt.get_forces(), axis=1).max() <= 0.01


def test_refuses_elements_outside_its_model(lammps):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.calc = make_calculator("emt")
    with pytest.raises(UnsupportedElementsError, match="Cu"):
        LearnedCurvature(atoms, logfile=None)
