import numpy as np
import pytest
from ase import Atoms
from hypothesis import given, settings
from hypothesis import strategies as st

from sb3_crystal import CrystalRelaxEnv
from sb3_crystal.algorithms import CrystalSAC, CrystalTD3
from sb3_crystal.exploration.demonstrations import (
    MAX_TARGET_NORM,
    ReferenceMoves,
    pretrain_actor,
    reference_move,
    reference_moves,
    relaxation_moves,
)
from sb3_crystal.structures import StructureDataset

TINY_TFN = {"tfn_preset": "small", "mul": 4, "radial_neurons": 8}


@pytest.fixture(scope="module")
def env():
    return CrystalRelaxEnv(epsilon=0.05, reward="step", action_scale="force", max_steps=20)


@pytest.fixture(scope="module")
def b2() -> Atoms:
    return StructureDataset("AlFe-B2").minima[0]


@settings(max_examples=25, deadline=None)
@given(
    shifts=st.lists(st.floats(-0.6, 0.6), min_size=6, max_size=6),
    translation=st.lists(st.floats(-3.0, 3.0), min_size=3, max_size=3),
    wrap=st.lists(st.integers(-2, 2), min_size=3, max_size=3),
)
def test_reference_move_undoes_a_distortion_up_to_translation_and_periodic_images(b2, shifts, translation, wrap):
    start = b2.copy()
    start.positions = b2.positions + np.reshape(shifts, (2, 3)) + np.asarray(translation)
    start.positions[1] += np.asarray(wrap) @ np.array(b2.cell)  # the same structure with atom 1 in another image
    move = reference_move(start, b2)
    np.testing.assert_allclose(move.mean(axis=0), 0.0, atol=1e-12)
    relative = lambda atoms: atoms.positions[1] - atoms.positions[0]  # noqa: E731 - two atoms: one relative vector
    moved = start.copy()
    moved.positions = start.positions + move
    difference = np.linalg.solve(np.array(b2.cell).T, relative(moved) - relative(b2))
    np.testing.assert_allclose(difference - np.round(difference), 0.0, atol=1e-9)


def test_reference_move_is_permutation_equivariant_and_rejects_other_atoms(b2):
    start = b2.copy()
    start.positions = start.positions + np.array([[0.1, -0.2, 0.3], [-0.05, 0.0, 0.2]])
    move = reference_move(start, b2)
    swapped = reference_move(start[[1, 0]], b2[[1, 0]])
    np.testing.assert_allclose(swapped, move[[1, 0]], atol=1e-12)
    with pytest.raises(ValueError, match="same atoms"):
        reference_move(start, b2[[1, 0]])
    stretched = b2.copy()
    stretched.set_cell(np.array(b2.cell) * 1.1)
    with pytest.raises(ValueError, match="cell"):
        reference_move(start, stretched)


def test_reference_moves_as_env_actions_return_starts_to_the_minimum(env):
    samples = reference_moves(env, n_samples=12, seed=3, min_beta=0.01)
    assert samples.observations["positions"].shape == (12, env.n_max, 3)
    assert samples.actions.shape == (12, 3 * env.n_max) and samples.actions.dtype == np.float32
    assert np.all((samples.betas >= 0.01) & (samples.betas <= env.beta)) and env.beta == 0.5  # β restored
    norms = np.linalg.norm(samples.actions.reshape(12, -1, 3), axis=-1)
    assert norms.max() <= MAX_TARGET_NORM + 1e-6
    unclipped = 0
    for i in range(12):  # replay: the same reset, then the target action
        env.set_beta(float(samples.betas[i]))
        obs, _ = env.reset(seed=3 + i, options={"structure_index": int(samples.structure_indices[i])})
        np.testing.assert_array_equal(obs["positions"], samples.observations["positions"][i])
        if norms[i].max() < MAX_TARGET_NORM and np.abs(samples.actions[i]).max() < 1.0:
            unclipped += 1
            _, _, terminated, _, info = env.step(samples.actions[i])
            assert terminated and info["fmax"] < 1e-3  # the exact move lands on the minimum
    env.set_beta(0.5)
    assert unclipped >= 3


def test_reference_moves_rejects_bad_arguments(env):
    with pytest.raises(ValueError, match="n_samples"):
        reference_moves(env, 0)
    with pytest.raises(ValueError, match="min_beta"):
        reference_moves(env, 5, min_beta=1.0)


def test_pretraining_moves_the_actor_towards_the_minimum(env):
    model = CrystalTD3("CrystalTFNPolicy", env, seed=0, policy_kwargs=TINY_TFN, learning_starts=10)
    train = reference_moves(env, n_samples=256, seed=0, min_beta=0.05)
    held_out = reference_moves(env, n_samples=64, seed=10_000, min_beta=0.05)

    def held_out_error() -> float:
        actions, _ = model.predict(held_out.observations, deterministic=True)
        return float(np.mean((actions - held_out.actions) ** 2))

    before = held_out_error()
    losses = pretrain_actor(model, train, epochs=15, batch_size=32, learning_rate=3e-3, verbose=0)
    assert len(losses) == 15 and losses[-1] < 0.5 * losses[0]
    assert held_out_error() < 0.5 * before  # it generalises to starts it did not see
    for actor_param, target_param in zip(model.actor.parameters(), model.actor_target.parameters(), strict=True):
        assert actor_param.data_ptr() != target_param.data_ptr()
        np.testing.assert_array_equal(actor_param.detach().numpy(), target_param.detach().numpy())
    model.learn(20)  # TD3 continues from the pretrained actor


def test_pretraining_a_sac_actor_and_bad_arguments(env):
    model = CrystalSAC("CrystalTFNPolicy", env, seed=0, policy_kwargs=TINY_TFN, learning_starts=10)
    samples = reference_moves(env, n_samples=64, seed=0)
    losses = pretrain_actor(model, samples, epochs=4, batch_size=16, verbose=0)
    assert losses[-1] < losses[0]
    with pytest.raises(ValueError, match="epochs"):
        pretrain_actor(model, samples, epochs=0)
    with pytest.raises(ValueError, match="learning_rate"):
        pretrain_actor(model, samples, learning_rate=float("nan"))
    other = reference_moves(CrystalRelaxEnv(epsilon=0.05, n_max=4), n_samples=4)
    with pytest.raises(ValueError, match="n_max"):
        pretrain_actor(model, other)


def test_relaxation_moves_take_path_points_to_the_end_of_their_relaxation(env):
    samples = relaxation_moves(env, n_samples=24, seed=1, points_per_path=4)
    assert 6 <= len(samples) <= 24 and samples.actions.shape[1] == 3 * env.n_max
    assert env.beta == 0.5  # restored
    starts = 0
    replayed = 0
    for i in range(len(samples)):
        n = int(samples.observations["mask"][i].sum())
        point = Atoms(
            numbers=samples.observations["species"][i, :n].astype(int),
            positions=samples.observations["positions"][i, :n].astype(np.float64),
            cell=samples.observations["cell"][i].astype(np.float64),
            pbc=True,
        )
        norms = np.linalg.norm(samples.actions[i].reshape(-1, 3), axis=1)
        if norms.max() < MAX_TARGET_NORM and np.abs(samples.actions[i]).max() < 1.0:
            env.reset(options={"atoms": point})
            _, _, _, _, info = env.step(samples.actions[i])
            assert info["fmax"] < 0.02  # the end of the relaxation, up to the float32 positions of the observation
            replayed += 1
        starts += int(np.linalg.norm(samples.observations["forces"][i], axis=1).max() > 1.0)
    assert replayed >= len(samples) // 3 and starts >= 3  # distorted starts and points near the minimum alike
    both = ReferenceMoves.concatenate([samples, reference_moves(env, n_samples=5, seed=0)])
    assert len(both) == len(samples) + 5 and both.observations["forces"].shape[0] == len(both)
    with pytest.raises(ValueError, match="points_per_path"):
        relaxation_moves(env, n_samples=4, points_per_path=0)
