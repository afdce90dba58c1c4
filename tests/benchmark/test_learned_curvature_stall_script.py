"""benchmarks/learned_curvature_stall.py: its streak count and its extra validation starts (run by hand)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from sb3_crystal.structures.families import FAMILIES, SEEDS_PER_FAMILY, family_seed

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def script():
    sys.path.insert(0, str(BENCHMARKS))  # the script imports the scripts beside it
    try:
        spec = importlib.util.spec_from_file_location("learned_curvature_stall", BENCHMARKS / "learned_curvature_stall.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_longest_streak_counts_steps_without_progress_before_the_threshold(script):
    # (energy, max force): a new lowest max force, three steps without one while the energy falls, then convergence
    trace = [(0.0, 1.0), (-0.1, 0.5), (-0.2, 0.6), (-0.3, 0.7), (-0.4, 0.499), (-0.5, 0.2), (-0.6, 0.01)]
    assert script.longest_streak(trace, 0.05, n_atoms=4, energy=False) == 3  # 0.499 is not 1 % below 0.5
    assert script.longest_streak(trace, 0.05, n_atoms=4, energy=True) == 0  # every one of them lowered the energy
    assert script.longest_streak(trace, 0.55, n_atoms=4, energy=False) == 0  # converged at 0.5, before the streak
    flat = [(0.0, 1.0)] + [(-1e-5 * k, 1.0) for k in range(1, 6)]  # energy falls by less than 1e-4 eV/atom
    assert script.longest_streak(flat, 0.05, n_atoms=4, energy=True) == 5


def test_extra_starts_are_validation_starts_the_family_does_not_use(script):
    name = "b2_defect_16"
    starts = script.extra_starts(name, {f"{name}[0]", f"{name}[3]"}, per_cell=3)
    first = family_seed(name, "validation")
    own = {first + 1 + k for k in range(FAMILIES[name].n_cells * FAMILIES[name].starts_per_cell)}
    seeds = [s.info["start_seed"] for s in starts]
    assert [s.info["name"] for s in starts] == [f"{name}[0]"] * 3 + [f"{name}[3]"] * 3
    assert len(set(seeds)) == 6 and not set(seeds) & own
    assert all(first <= seed < first + SEEDS_PER_FAMILY for seed in seeds)
    again = script.extra_starts(name, {f"{name}[0]"}, per_cell=3)
    for a, b in zip(again, starts[:3], strict=True):
        np.testing.assert_array_equal(a.positions, b.positions)


def test_patience_values(script):
    assert script._patience("none") is None and script._patience("None") is None and script._patience("20") == 20
    for bad in ("0", "-3", "ten"):
        with pytest.raises(argparse.ArgumentTypeError, match="positive integer or 'none'"):
            script._patience(bad)
