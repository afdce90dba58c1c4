import numpy as np
import pytest

from sb3_crystal.algorithms import CrystalSAC, CrystalTD3

LEARNING_STARTS = 8


def tiny() -> dict:
    """Small settings (fresh dicts: SB3 writes into policy_kwargs)."""
    return {"policy_kwargs": {"net_arch": [8]}, "learning_starts": LEARNING_STARTS, "batch_size": 8, "seed": 0}


@pytest.mark.parametrize("algo", [CrystalTD3, CrystalSAC])
def test_actor_sees_noisy_forces_but_buffer_stores_clean_ones(relax_env, algo):
    model = algo("MultiInputPolicy", relax_env, state_noise={"level": 0.5}, **tiny())
    seen = []
    original = model.policy.predict

    def spy(observation, *args, **kwargs):
        seen.append(np.array(observation["forces"]))
        return original(observation, *args, **kwargs)

    model.policy.predict = spy
    model.learn(20)
    assert len(seen) == 20 - LEARNING_STARTS
    stored = model.replay_buffer.observations["forces"][LEARNING_STARTS:20, 0]
    clean_norms = np.linalg.norm(stored, axis=-1)
    noisy_norms = np.linalg.norm(np.concatenate(seen)[:, :2], axis=-1)
    assert not np.allclose(noisy_norms, clean_norms[: len(noisy_norms)])
    # stored forces are the physical forces at the stored positions: no noise leaked into the buffer
    positions = model.replay_buffer.observations["positions"][:20, 0, :2].astype(np.float64)
    cell = model.replay_buffer.observations["cell"][0, 0].astype(np.float64)
    for k in range(LEARNING_STARTS, 20):
        _, forces = relax_env.calculator.compute(np.array([13, 26]), cell, positions[k])
        np.testing.assert_allclose(stored[k - LEARNING_STARTS, :2], forces, rtol=1e-4, atol=1e-3)


def test_deterministic_predict_ignores_state_noise(relax_env):
    model = CrystalTD3("MultiInputPolicy", relax_env, state_noise=5.0, **tiny())
    obs, _ = relax_env.reset(seed=0)
    first, _ = model.predict(obs, deterministic=True)
    second, _ = model.predict(obs, deterministic=True)
    np.testing.assert_array_equal(first, second)


def test_greedy_levels_and_save_load(relax_env, tmp_path):
    model = CrystalTD3(
        "MultiInputPolicy", relax_env, state_noise=0.2, greedy={"n_steps": 2, "max_shift": 10.0, "min_fmax": 0.0}, **tiny()
    )
    model.learn(20)
    assert model.greedy.triggers >= 1
    model._episode_steps[:] = 0
    model.greedy._active[:] = True
    assert model.exploration_levels(1).tolist() == [20.0]
    model.save(tmp_path / "m.zip")
    loaded = CrystalTD3.load(tmp_path / "m.zip", env=relax_env)
    assert loaded.state_noise.level == 0.2 and loaded.greedy.n_steps == 2
    loaded.learn(10, reset_num_timesteps=False)
