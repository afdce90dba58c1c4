"""Force-call counter and classical relaxers."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.optimize.sciopt import OptimizerConvergenceError, SciPyFminCG

from sb3_crystal.benchmark.classical import (
    DEFAULT_OPTIMIZERS,
    OPTIMIZERS,
    ForceCallCounter,
    GPMinFitted,
    Relaxer,
    make_relaxer,
)
from sb3_crystal.benchmark.harness import compare_to_reference
from sb3_crystal.structures.geometry import distort
from sb3_crystal.structures.minima import max_force, relaxed_minimum

EPS = (0.1, 0.05, 0.01)


def starts(minimum, n, seed=0, beta=0.5):
    return [distort(minimum, beta, np.random.default_rng(seed + k)) for k in range(n)]


# -- counter ------------------------------------------------------------------------------------------------------
def test_counter_counts_new_geometries_only(b2_minimum):
    counter = ForceCallCounter("lammps")
    atoms = b2_minimum.copy()
    atoms.calc = counter
    energy = atoms.get_potential_energy()
    atoms.get_forces()
    atoms.get_potential_energy()
    assert counter.force_calls == 1  # energy and forces at one geometry: one call

    first = atoms.positions.copy()
    atoms.positions += 0.05
    atoms.get_forces()
    assert counter.force_calls == 2

    atoms.positions = first  # back to a geometry seen before, and a separate copy of it
    assert atoms.get_potential_energy() == energy
    twin = b2_minimum.copy()
    twin.calc = counter
    twin.get_forces()
    assert counter.force_calls == 2
    assert counter.n_queries >= 3

    counter.reset()
    atoms.positions = first + 1e-9  # any change of positions is a new geometry
    atoms.get_forces()
    assert counter.force_calls == 1


def test_counter_returns_what_the_wrapped_calculator_returns():
    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    atoms.positions += np.random.default_rng(1).uniform(-0.1, 0.1, atoms.positions.shape)
    reference = atoms.copy()
    reference.calc = EMT()
    counter = ForceCallCounter(EMT())
    atoms.calc = counter
    assert atoms.get_potential_energy() == pytest.approx(reference.get_potential_energy(), abs=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), reference.get_forces(), atol=1e-12)
    assert counter.force_calls == 1


def test_counter_memory_is_bounded(b2_minimum):
    counter = ForceCallCounter("lammps", memory=2)
    atoms = b2_minimum.copy()
    atoms.calc = counter
    base = atoms.positions.copy()
    for shift in (0.01, 0.02, 0.03, 0.01):  # the first geometry was forgotten before it comes back
        atoms.positions = base + shift
        atoms.get_forces()
    assert counter.force_calls == 4


# -- relaxers -----------------------------------------------------------------------------------------------------
def test_make_relaxer_names():
    assert make_relaxer("bfgs").name == "BFGS"
    assert make_relaxer("SciPyFminCG").name == "CG"
    relaxer = make_relaxer("FIRE")
    assert make_relaxer(relaxer) is relaxer
    with pytest.raises(KeyError, match="Unknown optimizer 'Newton'"):
        make_relaxer("Newton")


def test_default_baselines_are_the_issue_list_and_gpmin_fitted_is_extra():
    assert DEFAULT_OPTIMIZERS == ("BFGS", "LBFGS", "BFGSLineSearch", "FIRE", "GPMin", "PreconLBFGS", "CG")
    assert set(OPTIMIZERS) == {*DEFAULT_OPTIMIZERS, "GPMinFitted"}
    assert make_relaxer("gpminfitted").name == "GPMinFitted"
    assert make_relaxer("preconlbfgs").name == "PreconLBFGS" and make_relaxer("PreconLBFGS").fmax_independent


def test_gpmin_fitted_refits_its_kernel_and_plain_gpmin_does_not(b2_minimum, lammps_counter):
    scales = {}
    for fitted in (True, False):
        atoms = distort(b2_minimum, 0.5, np.random.default_rng(3))
        atoms.calc = lammps_counter
        optimizer = GPMinFitted(atoms, logfile=None, update_hyperparams=fitted)
        assert optimizer.update_hp is fitted
        optimizer.run(fmax=0.01, steps=200)
        assert max_force(atoms.get_forces()) < 0.01
        scales[fitted] = float(optimizer.kernel.l)
    assert scales[False] == pytest.approx(0.4)  # ASE's default length scale, never touched
    assert scales[True] != pytest.approx(0.4, abs=1e-3)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_relaxes_distorted_b2_into_its_minimum(name, b2_minimum, lammps_counter):
    relaxer = make_relaxer(name)
    reference_energy = relaxed_minimum(b2_minimum, cache_dir=False)[1].energy
    for start in starts(b2_minimum, 3):
        result = relaxer.relax(start, lammps_counter, 0.01, 1000)
        assert result.converged, result.error
        assert result.fmax < 0.01 and result.error == ""
        assert 1 <= result.force_calls < 100 and result.steps >= 1
        np.testing.assert_array_equal(result.atoms.cell, b2_minimum.cell)  # fixed cell
        same, energy_error, deviation = compare_to_reference(
            result.atoms, b2_minimum, reference_energy, lammps_counter.calculator
        )
        assert same, (energy_error, deviation)


def test_result_force_calls_match_an_independent_count(b2_minimum):
    """The counter sees every evaluation: wrap the calculator once more and count ASE's calculate() calls."""
    calls = []
    inner = ForceCallCounter("lammps")
    original = inner.evaluate

    def spy(atoms):
        calls.append(atoms.positions.tobytes())
        return original(atoms)

    inner.evaluate = spy
    result = make_relaxer("BFGS").relax(starts(b2_minimum, 1)[0], inner, 0.01, 1000)
    assert result.force_calls == len(set(calls)) == len(calls)  # BFGS never revisits a geometry


@pytest.mark.parametrize("name", [name for name, make in OPTIMIZERS.items() if make().fmax_independent])
def test_multi_threshold_read_off_equals_separate_runs(name, b2_minimum, lammps_counter):
    relaxer = make_relaxer(name)
    assert relaxer.fmax_independent
    for start in starts(b2_minimum, 5, seed=10):
        read_off = relaxer.relax_thresholds(start, lammps_counter, EPS, 1000)
        for fmax in EPS:
            alone = relaxer.relax(start, lammps_counter, fmax, 1000)
            got = read_off[fmax]
            assert (got.converged, got.force_calls, got.steps) == (alone.converged, alone.force_calls, alone.steps)
            assert got.fmax == alone.fmax and got.energy == alone.energy
            np.testing.assert_array_equal(got.atoms.positions, alone.atoms.positions)


def test_scipy_cg_path_depends_on_fmax_so_it_is_run_per_threshold(b2_minimum, lammps_counter):
    """SciPy's gtol = 0.1·fmax enters its line-search acceptance: a read-off of one run is not always exact.

    (Seed 16 was the first such start found with SciPy 1.17; any seed shows the point.)
    """
    relaxer = make_relaxer("CG")
    assert not relaxer.fmax_independent and not make_relaxer("GPMin").fmax_independent
    forced = make_relaxer("CG")
    forced.fmax_independent = True  # an honest read-off at SciPy's per-iteration convergence checks
    differs = False
    for start in starts(b2_minimum, 40):
        read_off = forced.relax_thresholds(start, lammps_counter, (0.1, 0.001), 1000)
        separate = relaxer.relax_thresholds(start, lammps_counter, (0.1, 0.001), 1000)
        assert read_off[0.001].force_calls == separate[0.001].force_calls  # the run to the smallest ε is the same
        assert separate[0.1].force_calls == relaxer.relax(start, lammps_counter, 0.1, 1000).force_calls
        if read_off[0.1].force_calls != separate[0.1].force_calls:
            differs = True
            break
    assert differs


def test_step_cap_gives_unconverged_results(b2_minimum, lammps_counter):
    start = starts(b2_minimum, 1)[0]
    results = make_relaxer("FIRE").relax_thresholds(start, lammps_counter, EPS, 2)
    for result in results.values():
        assert not result.converged and result.steps == 2 and result.force_calls == 3
        assert result.fmax == pytest.approx(max_force(_forces(result.atoms)))


def _forces(atoms):
    atoms = atoms.copy()
    atoms.calc = ForceCallCounter("lammps")
    return atoms.get_forces()


def test_scipy_failure_is_recorded_as_not_converged(b2_minimum, lammps_counter, monkeypatch):
    def fail(self, fmax, steps):
        self.optimizable.get_gradient()
        raise OptimizerConvergenceError("Desired error not necessarily achieved due to precision loss")

    monkeypatch.setattr(SciPyFminCG, "call_fmin", fail)
    result = make_relaxer("CG").relax(starts(b2_minimum, 1)[0], lammps_counter, 10.0, 100)  # even a threshold already met
    assert not result.converged
    assert result.error.startswith("OptimizerConvergenceError: Desired error")
    assert result.force_calls == 1


def test_thresholds_are_validated(b2_minimum, lammps_counter):
    with pytest.raises(ValueError, match="> 0"):
        make_relaxer("BFGS").relax_thresholds(b2_minimum, lammps_counter, [0.1, 0.0], 10)


def test_a_new_relaxer_needs_only_relax(b2_minimum, lammps_counter):
    class Still(Relaxer):
        name = "still"

        def relax(self, start, calculator, fmax, max_steps):
            from sb3_crystal.benchmark.classical import RelaxResult

            calculator.reset()
            atoms = start.copy()
            atoms.calc = calculator
            f = max_force(atoms.get_forces())
            return RelaxResult(fmax, f < fmax, calculator.force_calls, 0, f, atoms.get_potential_energy(), start.copy(), 0.0)

    results = Still().relax_thresholds(b2_minimum, lammps_counter, EPS, 10)
    assert sorted(results) == sorted(EPS) and all(r.converged and r.force_calls == 1 for r in results.values())
