"""The observation module: layout, history, the L-BFGS proposal, and one observation in the env and the optimizer."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sb3_crystal.envs.crystal_relax import CrystalRelaxEnv
from sb3_crystal.envs.observation import ObservationLayout, RelaxationHistory, lbfgs_step
from sb3_crystal.exploration.state_noise import StateNoise


def rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def quadratic_path(rng, n_atoms=2, n_steps=8, seed_matrix=0):
    """Points of a relaxation on E = ½ xᵀAx (A SPD): forces −Ax at random positions."""
    m = np.random.default_rng(seed_matrix).normal(size=(3 * n_atoms, 3 * n_atoms))
    a = m @ m.T + 3 * n_atoms * np.eye(3 * n_atoms)
    points = []
    for _ in range(n_steps):
        x = rng.normal(size=3 * n_atoms) * 0.1
        points.append((x.reshape(-1, 3), (-a @ x).reshape(-1, 3), 0.5 * x @ a @ x))
    return a, points


def test_paper_layout_is_the_old_observation():
    layout = ObservationLayout(n_max=3)
    assert layout.keys == ("positions", "cell", "forces", "species", "mask")
    assert ObservationLayout.from_dict(3, None) == layout == ObservationLayout.from_dict(3, {})
    assert ObservationLayout.from_space(layout.observation_space()) == layout


def test_layout_round_trips_and_reads_its_space():
    layout = ObservationLayout(n_max=4, history=2, proposal="lbfgs", proposal_memory=5)
    assert ObservationLayout.from_dict(4, layout.to_dict()) == layout
    space = layout.observation_space()
    assert space["displacements"].shape == (4, 2, 3) and space["proposal"].shape == (4, 3)
    assert ObservationLayout.from_space(space, proposal_memory=5) == layout
    assert set(layout.vector_keys) == {"positions", "forces", "displacements", "force_changes", "proposal"}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"history": -1}, "history"),
        ({"history": 1.5}, "history"),
        ({"proposal": "bfgs"}, "proposal"),
        ({"proposal_memory": 0}, "proposal_memory"),
        ({"proposal_max_step": float("nan")}, "proposal_max_step"),
    ],
)
def test_bad_layout_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ObservationLayout(n_max=2, **kwargs)
    with pytest.raises(ValueError, match="unknown observation settings"):
        ObservationLayout.from_dict(2, {"histroy": 1})


def test_lbfgs_satisfies_the_secant_condition_of_the_newest_pair():
    rng = np.random.default_rng(1)
    _, points = quadratic_path(rng, n_atoms=2, n_steps=6)
    history = RelaxationHistory(memory=5)
    history.reset(*points[0])
    for point in points[1:]:
        history.record(*point)
    pairs = [(s.ravel(), -y.ravel()) for s, y in history.steps(5)][::-1]
    s_new, y_new = pairs[-1]
    # the step for gradient y is −H·y, and H·y = s for the newest pair
    step = lbfgs_step(-y_new.reshape(-1, 3), pairs, max_step=1e6)
    np.testing.assert_allclose(step.ravel(), -s_new, rtol=1e-8, atol=1e-12)
    # and it is a descent direction for the current gradient
    _, forces, _ = history.current
    assert (history.lbfgs_step(5, 1e6).ravel() @ forces.ravel()) > 0


def test_lbfgs_without_pairs_is_steepest_descent_and_the_step_is_capped():
    forces = np.array([[1.0, 0.0, 0.0], [0.0, -30.0, 0.0]])
    step = lbfgs_step(forces, [], max_step=0.2)
    assert np.isclose(np.linalg.norm(step, axis=1).max(), 0.2)
    np.testing.assert_allclose(step / np.linalg.norm(step), forces / np.linalg.norm(forces))
    # a pair of negative curvature is skipped
    s, y = np.ones(6), -np.ones(6)
    np.testing.assert_allclose(lbfgs_step(forces, [(s, y)], max_step=10.0), forces / 70.0)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), shift=st.floats(-5, 5))
def test_history_fields_rotate_translate_and_permute_with_the_crystal(seed, shift):
    rng = np.random.default_rng(seed)
    _, points = quadratic_path(rng, n_atoms=3, n_steps=5, seed_matrix=seed)
    layout = ObservationLayout(n_max=4, history=2, proposal="lbfgs")
    numbers, cell = np.array([13, 26, 26]), np.eye(3) * 4.0
    r = rotation(rng)
    perm = rng.permutation(3)

    def observe(transform_x, transform_f, order):
        history = layout.new_history()
        for i, (x, f, e) in enumerate(points):
            args = (transform_x(x)[order], transform_f(f)[order], e)
            history.reset(*args) if i == 0 else history.record(*args)
        return layout.build(numbers[order], cell, history)

    base = observe(lambda x: x, lambda f: f, np.arange(3))
    moved = observe(lambda x: x @ r.T + shift, lambda f: f @ r.T, perm)
    for key in ("displacements", "force_changes", "proposal", "forces"):
        np.testing.assert_allclose(moved[key][:3], (base[key][:3] @ r.T)[perm], atol=2e-5, err_msg=key)
        assert not moved[key][3:].any(), f"{key}: padding must stay zero"
    np.testing.assert_allclose(moved["signals"], base["signals"], atol=1e-5)


def test_state_noise_rotates_every_vector_field_together():
    layout = ObservationLayout(n_max=2, history=1, proposal="lbfgs")
    rng = np.random.default_rng(0)
    obs = {key: rng.normal(size=(1, *space.shape)).astype(np.float32) for key, space in layout.observation_space().items()}
    noisy = StateNoise(level=0.5, seed=0).perturb(obs, np.array([0.5]))
    for key in ("positions", "cell", "species", "mask", "signals"):
        np.testing.assert_array_equal(noisy[key], obs[key])
    # one rotation and scale for all fields: the per-atom dot products scale by the same factor²
    dots = lambda o: np.einsum("nd,nd->n", o["forces"][0], o["proposal"][0])  # noqa: E731
    norms = lambda o: np.einsum("nd,nd->n", o["forces"][0], o["forces"][0])  # noqa: E731
    np.testing.assert_allclose(dots(noisy) / dots(obs), norms(noisy) / norms(obs), rtol=1e-4)
    assert not np.allclose(noisy["displacements"], obs["displacements"])


def test_residual_action_zero_is_the_lbfgs_step_and_needs_a_proposal():
    with pytest.raises(ValueError, match="proposal='lbfgs'"):
        CrystalRelaxEnv(action_mode="residual")
    env = CrystalRelaxEnv(history=1, proposal="lbfgs", action_mode="residual", beta=0.3, epsilon=0.05, max_steps=50)
    obs, _ = env.reset(seed=0)
    before = env.atoms.positions
    proposal = env.proposal
    env.step(np.zeros(env.action_space.shape, np.float32))
    np.testing.assert_allclose(env.atoms.positions - before, proposal, atol=1e-12)
    np.testing.assert_allclose(obs["proposal"][:2], proposal, atol=1e-6)
    env.close()


def test_generated_starts_are_fresh_each_episode_and_reproducible():
    spec = "generate:solid_solution,lattice=bcc,size=2,al=0.1-0.5,rattle=0.05"
    env = CrystalRelaxEnv(structures="AlFe-B2", generator=spec, max_steps=5)
    assert env.n_max == 16 and env.observation_space["positions"].shape == (16, 3)
    starts = []
    for seed in (0, 1, 0):
        _, info = env.reset(seed=seed)
        assert info["structure_index"] == -1 and info["n_atoms"] == 16
        starts.append(env.atoms)
    assert not np.allclose(starts[0].positions, starts[1].positions)
    np.testing.assert_array_equal(starts[0].positions, starts[2].positions)
    np.testing.assert_array_equal(starts[0].numbers, starts[2].numbers)
    _, info = env.reset(seed=3, options={"structure_index": 0})  # a dataset minimum on request
    assert info["structure_index"] == 0 and info["n_atoms"] == 2
    never = CrystalRelaxEnv(structures="AlFe-B2", generator=spec, generator_fraction=0.0, max_steps=5)
    assert all(never.reset(seed=s)[1]["structure_index"] == 0 for s in range(3))
    with pytest.raises(ValueError, match="n_max=4"):
        CrystalRelaxEnv(structures="AlFe-B2", generator=spec, n_max=4)
    with pytest.raises(ValueError, match="generator_fraction"):
        CrystalRelaxEnv(structures="AlFe-B2", generator=spec, generator_fraction=1.5)
    env.close()
    never.close()


def test_a_refused_step_shortens_the_next_proposal():
    from sb3_crystal.envs.observation import REFUSED_STEP_SHRINK, RelaxationHistory, step_cap

    rng = np.random.default_rng(0)
    base, forces = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    tried = 0.1 * rng.normal(size=(4, 3))
    history = RelaxationHistory(8)
    history.reset(base, forces, -1.0)
    assert step_cap(history.steps(8), 0.2) == 0.2  # nothing refused yet
    history.record(base + tried, forces + rng.normal(size=(4, 3)), -0.5)  # the refused try ...
    history.record(base, forces, -1.0)  # ... and the way back, as the trust region records them
    longest = float(np.linalg.norm(tried, axis=1).max())
    assert step_cap(history.steps(8), 0.2) == pytest.approx(min(0.2, REFUSED_STEP_SHRINK * longest))
    step = history.lbfgs_step(8, 0.2)
    assert np.linalg.norm(step, axis=1).max() <= REFUSED_STEP_SHRINK * longest + 1e-12
    history.record(base + 0.5 * tried, forces, -1.1)  # an accepted step: the cap is back
    assert step_cap(history.steps(8), 0.2) == 0.2
