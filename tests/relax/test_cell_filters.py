"""Variable-cell relaxation through ASE filters with the agent optimizers (sb3_crystal.relax.filters)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from ase.build import bulk
from ase.constraints import FixAtoms
from ase.filters import ExpCellFilter, Filter, FrechetCellFilter, StrainFilter, UnitCellFilter
from ase.optimize import BFGS

from sb3_crystal.calculators import ForceCallCounter, make_calculator
from sb3_crystal.envs.observation import ObservationLayout
from sb3_crystal.relax import HybridOptimizer, RLOptimizer
from sb3_crystal.relax.agent_io import CrystalAgent, ZeroPolicy
from sb3_crystal.relax.filters import restore_geometry, save_geometry, unwrap

RESIDUAL = {
    "history": 2,
    "proposal": "lbfgs",
    "action_mode": "residual",
    "trust_region": True,
    "max_displacement": 0.05,
    "action_scale": "fixed",
    "min_distance": 1.2,
}


def zero_agent(n_max: int = 8) -> CrystalAgent:
    layout = ObservationLayout(n_max=n_max, history=RESIDUAL["history"], proposal=RESIDUAL["proposal"])
    return CrystalAgent(ZeroPolicy(), n_max, dict(RESIDUAL), ("Al", "Fe"), observation=layout.to_dict())


def strained_b2(seed: int, strain: float = 0.03, rattle: float = 0.03):
    """A 4-atom Al–Fe cell (B2 rows) under a random strain and rattle."""
    rng = np.random.default_rng(seed)
    atoms = bulk("Fe", "bcc", a=2.88, cubic=True) * (2, 1, 1)
    atoms.symbols[[1, 3]] = "Al"
    deformation = np.eye(3) + strain * rng.uniform(-1, 1, (3, 3))
    atoms.set_cell(atoms.cell @ deformation, scale_atoms=True)
    atoms.positions += rng.uniform(-rattle, rattle, atoms.positions.shape)
    return atoms


@pytest.fixture(scope="module")
def lammps():
    return make_calculator("lammps")


def generalised_fmax(filt) -> float:
    return float(np.linalg.norm(filt.get_forces(), axis=1).max())


@pytest.mark.parametrize("filter_cls", [FrechetCellFilter, UnitCellFilter, ExpCellFilter, StrainFilter])
def test_rl_optimizer_relaxes_cell_through_each_filter(filter_cls, lammps):
    atoms = strained_b2(0)
    atoms.calc = lammps
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # ExpCellFilter
        filt = filter_cls(atoms)
    stress_before = np.abs(atoms.get_stress()).max()
    optimizer = RLOptimizer(filt, model=zero_agent(), logfile=None)
    assert optimizer.run(fmax=0.02, steps=200)
    assert generalised_fmax(filt) <= 0.02  # the filter's own convergence: forces and stress rows
    assert np.abs(atoms.get_stress()).max() < 0.1 * stress_before
    assert optimizer.todict()["filter"] == filter_cls.__name__
    assert optimizer.force_calls > 1


def test_hybrid_relaxes_cell_and_counts_every_call(lammps):
    atoms = strained_b2(1)
    counter = ForceCallCounter(lammps)
    atoms.calc = counter
    filt = FrechetCellFilter(atoms)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimizer = HybridOptimizer(filt, model=zero_agent(), logfile=None)
        assert optimizer.run(fmax=0.05, steps=200)
    assert generalised_fmax(filt) <= 0.05
    assert optimizer.force_calls == counter.force_calls  # one counter saw every call, both phases included


def test_fixed_cell_relaxation_leaves_the_cell_alone(lammps):
    atoms = strained_b2(2)
    cell = np.array(atoms.cell)
    atoms.calc = lammps
    RLOptimizer(atoms, model=zero_agent(), logfile=None).run(fmax=0.05, steps=100)
    np.testing.assert_array_equal(np.array(atoms.cell), cell)


def test_fixatoms_is_respected_through_a_filter(lammps):
    atoms = strained_b2(3)
    atoms.set_constraint(FixAtoms([0]))
    fractional = atoms.get_scaled_positions(wrap=False)[0].copy()
    atoms.calc = lammps
    filt = FrechetCellFilter(atoms)
    RLOptimizer(filt, model=zero_agent(), logfile=None).run(fmax=0.05, steps=100)
    # through a cell filter a fixed atom moves only with the cell, as under ASE's own optimizers
    np.testing.assert_allclose(atoms.get_scaled_positions(wrap=False)[0], fractional, atol=1e-9)
    reference = strained_b2(3)
    reference.set_constraint(FixAtoms([0]))
    reference.calc = lammps
    BFGS(FrechetCellFilter(reference), logfile=None).run(fmax=0.05, steps=100)
    np.testing.assert_allclose(reference.get_scaled_positions(wrap=False)[0], fractional, atol=1e-9)


def test_the_log_says_who_moves_the_cell(lammps, tmp_path):
    atoms = strained_b2(4)
    atoms.calc = lammps
    log = tmp_path / "log.txt"
    RLOptimizer(FrechetCellFilter(atoms), model=zero_agent(), logfile=str(log)).run(fmax=0.05, steps=3)
    assert "agent moves the atoms, L-BFGS" in log.read_text()


def test_saved_geometry_comes_back_bit_for_bit(lammps):
    atoms = strained_b2(5)
    atoms.calc = lammps
    filt = FrechetCellFilter(atoms)
    state = save_geometry(atoms, filt)
    x = filt.get_positions()
    filt.set_positions(x + 0.01)
    restore_geometry(atoms, filt, state)
    np.testing.assert_array_equal(atoms.positions, state[0])
    np.testing.assert_array_equal(np.array(atoms.cell), state[1])


def test_unsupported_filter_is_refused_with_a_hint(lammps):
    atoms = strained_b2(6)
    atoms.calc = lammps
    with pytest.raises(TypeError, match="FixAtoms"):
        unwrap(Filter(atoms, indices=[0, 1]))
    with pytest.raises(TypeError, match="FixAtoms"):
        RLOptimizer(Filter(atoms, indices=[0, 1]), model=zero_agent(), logfile=None)


def test_fixsymmetry_keeps_the_cubic_cell_cubic(lammps):
    pytest.importorskip("spglib")
    from ase.constraints import FixSymmetry

    atoms = bulk("Fe", "bcc", a=2.88, cubic=True)
    atoms.symbols[1] = "Al"  # B2 AlFe, a little too large
    atoms.set_cell(atoms.cell * 1.02, scale_atoms=True)
    atoms.set_constraint(FixSymmetry(atoms))
    atoms.calc = lammps
    filt = FrechetCellFilter(atoms)
    assert RLOptimizer(filt, model=zero_agent(), logfile=None).run(fmax=0.01, steps=100)
    cell = np.array(atoms.cell)
    np.testing.assert_allclose(cell, np.eye(3) * cell[0, 0], atol=1e-8)  # still cubic
    assert cell[0, 0] < 2.88 * 1.02
