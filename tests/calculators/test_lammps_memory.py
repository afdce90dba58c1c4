"""LAMMPS instances are freed with their calculator and the cache is bounded in memory."""

from __future__ import annotations

import gc
import weakref
from contextlib import contextmanager

import numpy as np
import pytest
from ase.optimize import FIRE

from sb3_crystal.calculators import ForceCallCounter, LammpsEAMCalculator
from sb3_crystal.calculators.lammps_eam import instance_memory_mib, open_lammps_instances
from tests.calculators.test_lammps_eam import distorted_b2, energy_forces, random_alfe_16


@contextmanager
def no_cyclic_gc():
    """Only reference counting frees objects inside: what it cannot free (a cycle) stays alive."""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def test_calculator_dropped_without_close_frees_its_instances():
    with no_cyclic_gc():
        before = open_lammps_instances()
        calc = LammpsEAMCalculator()
        energy_forces(random_alfe_16(0), calc)
        energy_forces(distorted_b2(0), calc)
        assert open_lammps_instances() == before + 2
        ref = weakref.ref(calc)
        del calc
        assert ref() is None
        assert open_lammps_instances() == before


def test_many_relaxations_with_a_fresh_calculator_each_leave_no_instance_behind():
    with no_cyclic_gc():
        before = open_lammps_instances()
        refs = []
        for seed in range(12):
            atoms = distorted_b2(seed)
            calc = LammpsEAMCalculator()
            atoms.calc = ForceCallCounter(calc) if seed % 2 else calc  # through the counter too
            FIRE(atoms, logfile=None).run(fmax=0.05, steps=3)
            refs.append(weakref.ref(calc))
            del atoms, calc
            assert open_lammps_instances() == before
        assert all(ref() is None for ref in refs)


def test_close_keeps_the_calculator_usable_and_pickled_copies_free_theirs_too():
    import pickle

    with no_cyclic_gc():
        before = open_lammps_instances()
        calc = LammpsEAMCalculator()
        expected = energy_forces(distorted_b2(1), calc)
        calc.close()
        assert open_lammps_instances() == before
        calc.reset()  # forget ASE's cached results, so that the next call computes
        assert energy_forces(distorted_b2(1), calc)[0] == pytest.approx(expected[0], abs=1e-12)
        clone = pickle.loads(pickle.dumps(calc))
        clone.reset()
        again = energy_forces(distorted_b2(1), clone)
        assert again[0] == pytest.approx(expected[0], abs=1e-12)
        assert open_lammps_instances() == before + 2
        del clone, calc
        assert open_lammps_instances() == before


def test_cache_bounded_by_memory_and_by_count():
    cells = [random_alfe_16(seed) for seed in range(5)]
    assert len({atoms.numbers.tobytes() for atoms in cells}) == 5  # five species orders: no instance can move
    per_instance = instance_memory_mib()
    calc = LammpsEAMCalculator(max_memory_mib=3.5 * per_instance)
    assert calc.capacity == 3
    for atoms in cells:
        energy_forces(atoms, calc)
    assert len(calc._instances) == 3
    assert LammpsEAMCalculator(max_instances=2).capacity == 2
    assert LammpsEAMCalculator(max_memory_mib=0.1).capacity == 1  # one instance is always kept
    for bad in (0, -5, float("nan"), "256"):
        with pytest.raises(ValueError, match="max_memory_mib"):
            LammpsEAMCalculator(max_memory_mib=bad)


def test_instance_memory_estimate_follows_the_potential_tables():
    # 2 elements × 10,000 points (Finnis–Sinclair) > 1 element × 10,000 > 2 elements × 500 (setfl)
    alfe, fe, cuni = (instance_memory_mib(p) for p in ("AlFe_mm.eam.fs", "Fe_mm.eam.fs", "CuNi.eam.alloy"))
    assert alfe > fe > cuni > 1.0
    assert np.isfinite(alfe)
