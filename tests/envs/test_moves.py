"""The move rule's ``"proposal"`` scale: corrections of a classical proposal shrink with it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sb3_crystal import CrystalRelaxEnv
from sb3_crystal.envs.moves import PROPOSAL_REFERENCE, MoveRule


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), length=st.floats(0.0, 0.5))
def test_a_proposal_scaled_correction_is_bounded_by_the_proposal(seed, length):
    rng = np.random.default_rng(seed)
    rule = MoveRule(max_displacement=0.05, action_scale="proposal", action_mode="residual")
    n = 4
    base = rng.normal(size=(n, 3))
    base *= length / np.linalg.norm(base, axis=1, keepdims=True)
    action = rng.uniform(-3.0, 3.0, size=3 * n)  # beyond ±1: clipped
    shifts = rule.shifts(action, rng.normal(size=(n, 3)), n, base)
    correction = np.abs(shifts - base)
    bound = 0.05 * min(length, PROPOSAL_REFERENCE) / PROPOSAL_REFERENCE
    assert np.all(correction <= bound + 1e-12)


def test_at_a_vanishing_proposal_the_atoms_stay_whatever_the_action():
    rule = MoveRule(max_displacement=0.05, action_scale="proposal", action_mode="residual")
    shifts = rule.shifts(np.ones(6), np.ones((2, 3)), 2, np.zeros((2, 3)))
    assert not shifts.any()


def test_action_for_inverts_shifts_under_the_proposal_scale():
    rng = np.random.default_rng(1)
    rule = MoveRule(max_displacement=0.05, action_scale="proposal", action_mode="residual")
    base = rng.normal(size=(3, 3)) * 0.08
    action = rng.uniform(-0.9, 0.9, size=9)
    forces = rng.normal(size=(3, 3))
    shifts = rule.shifts(action, forces, 3, base)
    np.testing.assert_allclose(rule.action_for(shifts, forces, 3, base), action, atol=1e-6)


def test_the_proposal_scale_needs_a_proposal():
    rule = MoveRule(action_scale="proposal")
    with pytest.raises(ValueError, match="proposal"):
        rule.shifts(np.zeros(3), np.zeros((1, 3)), 1)
    with pytest.raises(ValueError, match="action_scale='proposal'"):
        CrystalRelaxEnv(action_scale="proposal")
