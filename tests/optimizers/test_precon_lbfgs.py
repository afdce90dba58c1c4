"""PreconLBFGS with the Exp preconditioner on small periodic cells with the EAM."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from ase.optimize.precon import Exp
from ase.optimize.precon.precon import SparseCoeffPrecon

from sb3_crystal.optimizers import ExpPreconLBFGS
from sb3_crystal.structures.geometry import distort
from sb3_crystal.structures.minima import max_force


def _relax(start, counter, fmax=0.01, steps=300, **kwargs):
    counter.reset()
    atoms = start.copy()
    atoms.calc = counter
    optimizer = ExpPreconLBFGS(atoms, logfile=None, **kwargs)
    converged = optimizer.run(fmax=fmax, steps=steps)
    return atoms, optimizer, converged


def test_exp_is_on_below_100_atoms(b2_minimum, lammps_counter):
    start = distort(b2_minimum, 0.3, np.random.default_rng(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ASE's "too small to benefit" warning would be raised here
        atoms, optimizer, converged = _relax(start, lammps_counter)
    assert converged and max_force(atoms.get_forces()) < 0.01
    assert isinstance(optimizer.precon, Exp)
    assert optimizer.precon.mu >= 1.0 and optimizer.precon.r_cut == pytest.approx(2 * optimizer.precon.r_NN)
    assert optimizer.precon.P is not None and optimizer.maxstep == 0.2  # the preconditioner was built and used


def test_each_optimizer_gets_its_own_preconditioner(b2_minimum):
    a, b = b2_minimum.copy(), b2_minimum.copy()
    assert ExpPreconLBFGS(a, logfile=None).precon is not ExpPreconLBFGS(b, logfile=None).precon


def test_estimating_mu_costs_one_counted_force_call(b2_minimum, lammps_counter):
    start = distort(b2_minimum, 0.5, np.random.default_rng(4))
    estimated, optimizer, _ = _relax(start, lammps_counter)
    calls_estimated = lammps_counter.force_calls
    mu, r_nn = optimizer.precon.mu, optimizer.precon.r_NN
    given, _, _ = _relax(start, lammps_counter, precon=Exp(mu=mu, r_NN=r_nn, solver="direct"))
    np.testing.assert_array_equal(estimated.positions, given.positions)  # the same path ...
    assert calls_estimated == lammps_counter.force_calls + 1  # ... plus the displaced start of the estimate


@pytest.mark.parametrize(("repeat", "change"), [(2, "antisite"), (3, "vacancy"), (4, "antisite")])
def test_relaxes_periodic_supercells_of_16_to_128_atoms(b2_minimum, lammps_counter, repeat, change):
    cell = b2_minimum.repeat(repeat)
    if change == "antisite":
        cell.numbers[0] = cell.numbers[1]
    else:
        del cell[0]
    cell.positions += np.random.default_rng(repeat).uniform(-0.05, 0.05, cell.positions.shape)
    start_fmax = max_force(_forces(cell, lammps_counter))
    atoms, optimizer, converged = _relax(cell, lammps_counter, fmax=0.05)
    assert converged and start_fmax > 0.05 and max_force(atoms.get_forces()) < 0.05
    assert isinstance(optimizer.precon, SparseCoeffPrecon) and optimizer.precon.P.shape == (3 * len(cell),) * 2
    np.testing.assert_array_equal(atoms.cell, cell.cell)
    assert 2 <= lammps_counter.force_calls < 100


def _forces(atoms, lammps_counter):
    probe = atoms.copy()
    probe.calc = lammps_counter
    return probe.get_forces()


def test_runs_are_reproducible(b2_minimum, lammps_counter):
    start = distort(b2_minimum, 0.5, np.random.default_rng(7))
    first, _, _ = _relax(start, lammps_counter)
    calls = lammps_counter.force_calls
    second, _, _ = _relax(start, lammps_counter)
    assert lammps_counter.force_calls == calls
    np.testing.assert_array_equal(first.positions, second.positions)


def test_a_precon_of_the_wrong_type_is_refused(b2_minimum):
    with pytest.raises(TypeError, match=r"precon must be an ase\.optimize\.precon Precon object, got str"):
        ExpPreconLBFGS(b2_minimum.copy(), precon="Exp")
