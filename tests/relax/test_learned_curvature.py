"""LearnedCurvature: the learned Hessian's quasi-Newton steps as an ASE optimizer (the curvature agent's zero action)."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS

from sb3_crystal import LearnedCurvature, RLOptimizer
from sb3_crystal.calculators import ForceCallCounter, UnsupportedElementsError, make_calculator
from sb3_crystal.relax import load_shipped_agent
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


def _stall_after(atoms, energies, **kwargs) -> str | None:
    """Feed LearnedCurvature's stall rule steps at a constant max force of 1 eV/Å (never progress by the max force)
    with the given energies; :return: its ``stop_reason``."""
    optimizer = LearnedCurvature(atoms, logfile=None, **kwargs)
    forces = np.zeros((len(atoms), 3))
    forces[0, 0] = 1.0
    optimizer._best_fmax, optimizer._best_energy, optimizer._since_best = 1.0, 0.0, 0
    values = iter(energies)
    optimizer._current = lambda: (next(values), forces)  # type: ignore[method-assign]
    for _ in energies:
        optimizer._check_progress()
        optimizer.nsteps += 1
        if optimizer.stop_reason is not None:
            break
    return optimizer.stop_reason


def test_stall_rule_counts_a_falling_energy_as_progress_by_default(lammps):
    atoms = supercell_start(0)
    atoms.calc = lammps
    optimizer = LearnedCurvature(atoms, logfile=None)
    assert (optimizer.patience, optimizer.energy_progress) == (10, True)
    plain = bulk("Al", "fcc", a=4.05, cubic=True) * (1, 1, 1)
    plain.symbols[:2] = "Fe"
    plain.calc = make_calculator()
    # agents without the curvature proposal: the max force alone, at fixed cell; curvature-residual agents: the energy
    assert RLOptimizer(plain, logfile=None).energy_progress is False
    curvature = load_shipped_agent("curvature")
    assert RLOptimizer(plain, model=curvature, logfile=None).energy_progress is True
    assert RLOptimizer(plain, model=curvature, logfile=None, energy_progress=False).energy_progress is False
    with pytest.raises(ValueError, match="energy_progress must be True, False or 'auto'"):
        RLOptimizer(plain, model=curvature, logfile=None, energy_progress="yes")
    falling = [-0.01 * (k + 1) for k in range(12)]  # 0.01 eV a step: above 1e-4 eV/atom × 16 atoms
    assert _stall_after(atoms, falling, patience=3) is None
    with pytest.warns(UserWarning, match="stalled"):
        assert _stall_after(atoms, falling, patience=3, energy_progress=False) == "stalled"
    with pytest.warns(UserWarning, match="stalled"):  # too small a fall is no progress
        assert _stall_after(atoms, [-1e-4 * (k + 1) for k in range(12)], patience=3) == "stalled"
    with pytest.raises(ValueError, match="energy_progress must be True or False"):
        LearnedCurvature(atoms, logfile=None, energy_progress="yes")
