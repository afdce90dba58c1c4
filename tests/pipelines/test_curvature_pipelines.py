"""The curvature-residual pipelines: the along-proposal probe, the B2 clone's labels and the demonstrations file."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from sb3_crystal import CrystalRelaxEnv
from sb3_crystal.exploration.demonstrations import reference_move
from sb3_crystal.structures.generators import parse_generator_spec

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


@pytest.fixture(scope="module")
def modules():
    sys.path.insert(0, str(PIPELINES))
    try:
        import clone_curvature_residual
        import scan_proposal_scale
        import train_curvature_agent
    finally:
        sys.path.remove(str(PIPELINES))
    return clone_curvature_residual, scan_proposal_scale, train_curvature_agent


@pytest.fixture(scope="module")
def env(modules):
    settings = dict(modules[2].ENV_KWARGS, max_displacement=0.4, max_steps=6)
    generator = parse_generator_spec("generate:random_cell,atoms=4-5,rattle=0.15")
    environment = CrystalRelaxEnv(**settings, generator=generator, n_max=6)
    yield environment
    environment.close()


def test_along_proposal_scales_each_atoms_step(modules, env):
    scan = modules[1]
    obs, _ = env.reset(seed=3)
    proposal = env.proposal
    n = len(env.atoms)
    lengths = np.linalg.norm(proposal, axis=1, keepdims=True)
    for k in (0.0, 0.5, -0.5):
        action, _ = scan.AlongProposal(k).predict(obs)
        assert action.shape == env.action_space.shape
        assert np.all(action.reshape(env.n_max, 3)[n:] == 0)  # padding stays still
        shifts = env.moves.shifts(action, env.forces, env.n_max, proposal)
        # the correction is k·max_displacement·min(|p|, 0.1)/0.1 along p̂ (the "proposal" action scale)
        expected = proposal * (1 + k * 0.4 * np.minimum(lengths, 0.1) / 0.1 / lengths)
        np.testing.assert_allclose(shifts, expected, rtol=1e-5, atol=1e-6)
    batch = {key: np.stack([value, value]) for key, value in obs.items()}
    actions, _ = scan.AlongProposal(0.5).predict(batch)
    np.testing.assert_array_equal(actions[0], actions[1])


def test_clone_labels_b2_with_the_move_to_its_minimum_and_pool_cells_with_zero(modules, env):
    clone = modules[0]
    samples = clone.collect(env, b2_episodes=2, pool_episodes=1, beta=(0.05, 0.1), seed=11)
    b2 = samples.structure_indices == 0
    assert b2.sum() >= 2 and (~b2).sum() >= 1
    assert np.all(samples.actions[~b2] == 0)
    # a B2 start's label turns its proposal into the move back to the relaxed cell (β ≤ 0.1 Å: no clipping)
    env.set_beta(float(samples.betas[0]))
    env.reset(seed=clone.EPISODE_SEEDS * 11, options={"structure_index": 0})
    move = reference_move(env.atoms, env.dataset[0])
    shifts = env.moves.shifts(samples.actions[0], env.forces, env.n_max, env.proposal)
    np.testing.assert_allclose(shifts, move, atol=1e-5)


def test_demonstrations_file_round_trips(modules, env, tmp_path):
    clone, _, train = modules
    samples = clone.collect(env, b2_episodes=1, pool_episodes=1, beta=(0.05, 0.1), seed=5)
    path = tmp_path / "demonstrations.npz"
    train.save_samples(samples, path)
    again = train.load_samples(path)
    assert again.observations.keys() == samples.observations.keys()
    for key in samples.observations:
        np.testing.assert_array_equal(again.observations[key], samples.observations[key])
    np.testing.assert_array_equal(again.actions, samples.actions)
    np.testing.assert_array_equal(again.structure_indices, samples.structure_indices)
