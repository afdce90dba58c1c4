"""The force-call counter: one call per new geometry, stress included in the same call."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.emt import EMT
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE

from sb3_crystal.calculators import ForceCallCounter
from sb3_crystal.threads import blas_threads


class _CountingEMT(EMT):
    """EMT that counts how often it really computes."""

    def __init__(self) -> None:
        super().__init__()
        self.runs = 0

    def calculate(self, *args, **kwargs):
        self.runs += 1
        super().calculate(*args, **kwargs)


def cuau(seed: int = 0):
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
    atoms.numbers[[1, 2]] = 79
    atoms.positions += np.random.default_rng(seed).uniform(-0.1, 0.1, atoms.positions.shape)
    return atoms


def test_old_import_path_is_the_same_class():
    from sb3_crystal.benchmark import ForceCallCounter as FromBenchmark
    from sb3_crystal.benchmark.classical import ForceCallCounter as FromClassical

    assert FromClassical is ForceCallCounter and FromBenchmark is ForceCallCounter


def test_stress_is_part_of_the_geometry_call_and_agrees_with_the_wrapped_calculator():
    inner = _CountingEMT()
    counter = ForceCallCounter(inner)
    assert "stress" in counter.implemented_properties
    atoms = cuau()
    atoms.calc = counter
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    stress = atoms.get_stress()
    assert counter.force_calls == 1
    reference = cuau()
    reference.calc = EMT()
    assert energy == pytest.approx(reference.get_potential_energy(), abs=1e-12)
    np.testing.assert_allclose(forces, reference.get_forces(), atol=1e-12)
    np.testing.assert_allclose(stress, reference.get_stress(), atol=1e-12)
    np.testing.assert_allclose(counter.evaluate_stress(atoms), stress, atol=0)  # remembered: no new call
    assert counter.force_calls == 1
    # once stress was asked, a new geometry gets energy, forces and stress in one evaluation of the inner code
    runs = inner.runs
    atoms.positions[0] += 0.01
    atoms.get_forces()
    atoms.get_stress()
    assert counter.force_calls == 2 and inner.runs == runs + 1


def test_cell_filter_relaxation_counts_one_call_per_geometry():
    inner = _CountingEMT()
    counter = ForceCallCounter(inner)
    atoms = cuau(1)
    atoms.set_cell(atoms.cell * 1.03, scale_atoms=True)
    atoms.calc = counter
    with blas_threads(1):  # the filter's 3×3 matrix functions are slow with BLAS threads on a busy machine
        opt = FIRE(FrechetCellFilter(atoms), logfile=None)
        assert opt.run(fmax=0.05, steps=60)
    assert counter.force_calls == opt.nsteps + 1  # the start and one geometry per step
    # EMT computes stress with the forces, so the stress asked after the start's forces costs it nothing either
    assert inner.runs == counter.force_calls
    counter.reset()
    assert counter.force_calls == 0 and not counter._with_stress


def test_no_stress_when_the_wrapped_calculator_has_none():
    class NoStress(EMT):
        implemented_properties = ("energy", "free_energy", "forces")

    counter = ForceCallCounter(NoStress())
    assert "stress" not in counter.implemented_properties
    atoms = cuau()
    atoms.calc = counter
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()
    with pytest.raises(PropertyNotImplementedError, match="NoStress"):
        counter.evaluate_stress(atoms)
