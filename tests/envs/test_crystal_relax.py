import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from ase.build import bulk
from gymnasium.utils.env_checker import check_env as gym_check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

from sb3_crystal import ENV_ID, CrystalRelaxEnv
from sb3_crystal.calculators import UnsupportedElementsError
from sb3_crystal.structures import AtomsTooCloseError, EmptyDatasetError, build_prototype, closest_pair


@pytest.fixture(scope="module")
def env() -> CrystalRelaxEnv:
    return CrystalRelaxEnv(structures="AlFe-B2", n_max=4)


def test_gymnasium_and_sb3_checkers_pass():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the infinite Box bounds and (n, 3) shapes only warn
        gym_check_env(gym.make(ENV_ID, n_max=3).unwrapped, skip_render_check=True)
        sb3_check_env(CrystalRelaxEnv(n_max=3), warn=True, skip_render_check=True)


def test_spaces_and_padding(env):
    obs, info = env.reset(seed=1)
    assert env.action_space.shape == (12,) and env.action_space.dtype == np.float32
    assert set(obs) == {"positions", "cell", "forces", "species", "mask"}
    assert all(value.dtype == np.float32 for value in obs.values())
    np.testing.assert_array_equal(obs["mask"], [1, 1, 0, 0])
    np.testing.assert_array_equal(obs["species"], [13, 26, 0, 0])
    assert not obs["positions"][2:].any() and not obs["forces"][2:].any()
    np.testing.assert_allclose(obs["forces"][:2], env.forces, rtol=1e-6, atol=1e-6)
    assert info["fmax"] == pytest.approx(np.linalg.norm(env.forces, axis=1).max())
    assert info["force_calls"] == 1 and info["episode_step"] == 0


def test_padded_action_slots_are_ignored(env):
    action = np.zeros(12, np.float32)
    action[:6] = 0.3
    noisy = action.copy()
    noisy[6:] = np.random.default_rng(0).uniform(-1, 1, 6)
    results = []
    for a in (action, noisy):
        env.reset(seed=5)
        results.append(env.step(a)[0])
    for key in results[0]:
        np.testing.assert_array_equal(results[0][key], results[1][key])


def test_seed_reproduces_episode_and_observations_are_fresh(env):
    actions = np.random.default_rng(3).uniform(-1, 1, (5, 12)).astype(np.float32)
    runs = []
    for _ in range(2):
        obs, _ = env.reset(seed=42)
        trajectory = [obs["positions"].copy()]
        for a in actions:
            obs, reward, *_ = env.step(a)
            trajectory.append(obs["positions"].copy())
            trajectory.append(np.array([reward]))
        runs.append(np.concatenate([t.ravel() for t in trajectory]))
    np.testing.assert_array_equal(runs[0], runs[1])
    first, _ = env.reset(seed=7)
    second = env.step(np.zeros(12, np.float32))[0]
    assert not np.shares_memory(first["positions"], second["positions"])
    assert env.reset(seed=8)[0]["positions"].tolist() != env.reset(seed=9)[0]["positions"].tolist()


def test_distortion_is_beta_uniform_per_coordinate():
    env = CrystalRelaxEnv(structures="AlFe-B2", beta=0.2, min_distance=0.0)
    minimum = env.dataset[0].positions
    shifts = np.array([env.reset(seed=s)[0]["positions"] - minimum for s in range(300)]).ravel()
    assert shifts.min() >= -0.2 and shifts.max() <= 0.2
    assert shifts.min() < -0.19 and shifts.max() > 0.19  # fills the whole interval
    assert abs(shifts.mean()) < 0.02  # symmetric, unlike the reference code's U[0, β)


@pytest.mark.parametrize("reward", ["force", "step", "log_force", "hybrid"])
def test_rewards_follow_the_paper(reward):
    env = CrystalRelaxEnv(reward=reward, reward_weights=(1.0, 2.0, 0.5), epsilon=0.01)
    env.reset(seed=0)
    _, r, terminated, truncated, info = env.step(np.full(6, 0.1, np.float32))
    f = info["fmax"]
    expected = {"force": -f, "step": -1.0, "log_force": -np.log10(f), "hybrid": -f - 2.0 - 0.5 * np.log10(f)}[reward]
    assert not terminated and not truncated
    assert r == pytest.approx(expected)


def test_terminates_at_epsilon_with_zero_step_reward():
    env = CrystalRelaxEnv(reward="step", epsilon=0.05)
    minimum = env.dataset[0]
    env.reset(options={"atoms": minimum})
    _, r, terminated, truncated, info = env.step(np.zeros(6, np.float32))
    assert terminated and not truncated and info["is_success"] and r == 0.0
    assert info["fmax"] <= 0.05


def test_truncates_at_step_limit_without_terminating():
    env = CrystalRelaxEnv(max_steps=3, epsilon=1e-6)
    env.reset(seed=0)
    flags = [env.step(np.zeros(6, np.float32))[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]


def test_info_reports_shift_and_force_calls(env):
    env.reset(seed=3)
    before = env.atoms.positions
    action = np.zeros(12, np.float32)
    action[:3] = [0.2, -0.1, 0.0]
    _, _, _, _, info = env.step(action)
    moved = env.atoms.positions - before
    assert info["max_shift"] == pytest.approx(np.linalg.norm(moved, axis=1).max())
    np.testing.assert_allclose(
        moved[0], np.array([0.2, -0.1, 0.0]) * env.max_displacement * info["action_fraction"], atol=1e-7
    )
    assert info["force_calls"] == 2 and info["episode_step"] == 1


def test_force_adaptive_scale_limits_each_atom_by_its_force():
    env = CrystalRelaxEnv(action_scale="force", force_cap=20.0, max_displacement=0.4, min_distance=0.0)
    env.reset(seed=2)
    norms = np.linalg.norm(env.forces, axis=1)
    before = env.atoms.positions
    env.step(np.ones(6, np.float32))
    moved = np.abs(env.atoms.positions - before)
    np.testing.assert_allclose(moved, (0.4 * np.minimum(norms, 20.0) / 20.0)[:, None] * np.ones((2, 3)), rtol=1e-9)


def test_colliding_action_is_shortened_not_crashing():
    env = CrystalRelaxEnv(max_displacement=3.0, min_distance=1.5, beta=0.0)
    env.reset(seed=0)
    al, fe = env.atoms.positions
    direction = (fe - al) / np.linalg.norm(fe - al)
    action = np.concatenate([direction * 0.33, np.zeros(3)]).astype(np.float32)  # ~1 Å onto the Fe atom
    obs, reward, *_, info = env.step(action)
    assert 0.0 <= info["action_fraction"] < 1.0
    assert closest_pair(env.atoms, 3.0)[2] >= 1.5 - 1e-9
    assert np.isfinite(reward) and np.isfinite(obs["forces"]).all()


def test_settings_change_between_episodes_in_vec_envs():
    # A subprocess started by forkserver has not imported sb3_crystal: the "module:id" form imports it there.
    for vec_cls, env_id in ((DummyVecEnv, ENV_ID), (SubprocVecEnv, f"sb3_crystal:{ENV_ID}")):
        vec = make_vec_env(env_id, n_envs=2, vec_env_cls=vec_cls, env_kwargs={"max_steps": 5})
        try:
            vec.env_method("set_epsilon", 0.2)
            vec.env_method("set_reward", "hybrid", (1.0, 0.0, 0.5))
            vec.env_method("set_beta", 0.1)
            settings_ = vec.env_method("get_settings")
            assert settings_ == [{"epsilon": 0.2, "beta": 0.1, "reward": "hybrid", "reward_weights": [1.0, 0.0, 0.5]}] * 2
            vec.reset()
            vec.step(np.zeros((2, 6), np.float32))
        finally:
            vec.close()


def test_env_pickles_and_keeps_stepping(env):
    env.reset(seed=0)
    clone = pickle.loads(pickle.dumps(env))
    a = np.full(12, 0.05, np.float32)
    np.testing.assert_allclose(clone.step(a)[0]["forces"], env.step(a)[0]["forces"], atol=1e-6)


def test_other_ase_calculator_plugs_in():
    from ase.calculators.emt import EMT

    env = CrystalRelaxEnv(structures=bulk("Cu", "fcc", a=3.6, cubic=True), calculator=EMT, beta=0.1, cache_dir=False)
    obs, info = env.reset(seed=0)
    assert obs["species"][0] == 29 and info["fmax"] > 0
    assert np.isfinite(env.step(env.action_space.sample())[1])


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(structure=st.sampled_from(["AlFe-B2", "AlFe-hex", "Al-I4mmm", "Fe-bcc"]), seed=st.integers(0, 10_000))
def test_random_in_box_actions_keep_everything_finite(structure, seed):
    env = CrystalRelaxEnv(structures=structure, max_steps=60, max_displacement=1.0)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    for _ in range(60):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert all(np.isfinite(v).all() for v in obs.values())
        assert np.isfinite(reward) and np.isfinite(info["energy"])
        assert closest_pair(env.atoms, 3.0)[2] >= env.min_distance - 1e-9
        if terminated or truncated:
            break


# -- bad input: a clear error naming what is wrong ---------------------------------------------------------------
def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="epsilon must be a finite number > 0"):
        CrystalRelaxEnv(epsilon=0.0)
    with pytest.raises(ValueError, match="beta"):
        CrystalRelaxEnv(beta=-0.1)
    with pytest.raises(EmptyDatasetError):
        CrystalRelaxEnv(structures=[])
    with pytest.raises(ValueError, match="4 atoms, more than n_max=2"):
        CrystalRelaxEnv(structures="Al-I4mmm", n_max=2)
    with pytest.raises(UnsupportedElementsError, match=r"Cu.*AlFe_mm"):
        CrystalRelaxEnv(structures=bulk("Cu", "fcc", a=3.6, cubic=True))
    squeezed = build_prototype("AlFe-B2")
    squeezed.positions[1] = squeezed.positions[0] + [0.2, 0.0, 0.0]
    with pytest.raises(AtomsTooCloseError, match=r"atoms 0 \(Al\) and 1 \(Fe\) are 0.200 Å apart"):
        CrystalRelaxEnv(structures=squeezed)
    with pytest.raises(FileNotFoundError, match=r"no_such_file\.cif"):
        CrystalRelaxEnv(structures=str(tmp_path / "no_such_file.cif"))
    with pytest.raises(FileNotFoundError, match=r"neither a prototype"):
        CrystalRelaxEnv(structures="AlFe-B3")
    env = CrystalRelaxEnv()
    env.reset(seed=0)
    bad = np.zeros(6, np.float32)
    bad[4] = np.nan
    with pytest.raises(ValueError, match="NaN or inf for atom 1"):
        env.step(bad)
    with pytest.raises(ValueError, match="6 numbers"):
        env.step(np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="action_scale"):
        CrystalRelaxEnv(action_scale="adaptive")
    with pytest.raises(ValueError, match="min_distance"):
        CrystalRelaxEnv(min_distance=2.6)
