import numpy as np
import pytest

from sb3_crystal import CrystalRelaxEnv
from sb3_crystal.algorithms import CrystalTD3, CrystalTD3BC
from sb3_crystal.exploration.demonstrations import pretrain_actor, reference_moves

TINY_TFN = {"tfn_preset": "small", "mul": 4, "radial_neurons": 8}
FAST = {"learning_starts": 40, "batch_size": 32, "learning_rate": 1e-3, "policy_kwargs": TINY_TFN}


@pytest.fixture(scope="module")
def env():
    return CrystalRelaxEnv(epsilon=0.05, reward="step", action_scale="force", max_steps=20)


@pytest.fixture(scope="module")
def demonstrations(env):
    return reference_moves(env, n_samples=256, seed=0, min_beta=0.05)


def regression_error(model, samples) -> float:
    actions, _ = model.predict(samples.observations, deterministic=True)
    return float(np.mean((actions - samples.actions) ** 2))


def test_the_behaviour_cloning_term_alone_fits_the_demonstrations(env, demonstrations):
    model = CrystalTD3BC("CrystalTFNPolicy", env, seed=0, demonstrations=demonstrations, bc_alpha=0.0, **FAST)
    before = regression_error(model, demonstrations)
    model.learn(240)  # 100 actor updates (policy_delay 2), each a behaviour-cloning step only
    assert regression_error(model, demonstrations) < 0.5 * before


def test_td3_bc_keeps_a_cloned_actor_near_its_demonstrations_where_td3_drifts(env, demonstrations):
    errors = {}
    for cls, extra in ((CrystalTD3, {}), (CrystalTD3BC, {"demonstrations": demonstrations})):
        model = cls("CrystalTFNPolicy", env, seed=0, **FAST, **extra)
        pretrain_actor(model, demonstrations, epochs=10, batch_size=32, learning_rate=3e-3, verbose=0)
        cloned = regression_error(model, demonstrations)
        model.learn(240)
        errors[cls.__name__] = (cloned, regression_error(model, demonstrations))
    (td3_cloned, td3_after), (bc_cloned, bc_after) = errors["CrystalTD3"], errors["CrystalTD3BC"]
    assert td3_cloned == pytest.approx(bc_cloned, rel=1e-5)  # the same clone before RL
    assert bc_after < 0.5 * td3_after


def test_demonstrations_are_checked_and_not_saved(env, demonstrations, tmp_path):
    with pytest.raises(ValueError, match="bc_alpha"):
        CrystalTD3BC("CrystalTFNPolicy", env, bc_alpha=-1.0, policy_kwargs=TINY_TFN)
    with pytest.raises(ValueError, match="bc_batch_size"):
        CrystalTD3BC("CrystalTFNPolicy", env, bc_batch_size=0, policy_kwargs=TINY_TFN)
    model = CrystalTD3BC("CrystalTFNPolicy", env, seed=0, **FAST)
    other = reference_moves(CrystalRelaxEnv(epsilon=0.05, n_max=4), n_samples=4)
    with pytest.raises(ValueError, match="n_max"):
        model.set_demonstrations(other)
    with pytest.raises(RuntimeError, match="demonstrations"):
        model.learn(60)  # the first gradient step needs them
    model.set_demonstrations(demonstrations)
    model.learn(60)
    model.save(tmp_path / "td3bc.zip")
    loaded = CrystalTD3BC.load(tmp_path / "td3bc.zip", env=env)
    assert loaded.bc_alpha == 0.02 and loaded._demonstrations is None
    loaded.set_demonstrations(demonstrations)
    loaded.learn(10)


def test_demonstrations_by_number_are_drawn_from_the_training_env_and_cloned_first(env):
    settings = {"seed": 0, "policy_kwargs": TINY_TFN, "verbose": 0}
    held_out = reference_moves(env, n_samples=32, seed=5, min_beta=0.05)
    raw = CrystalTD3BC("CrystalTFNPolicy", env, demonstrations=96, **settings)
    cloned = CrystalTD3BC("CrystalTFNPolicy", env, demonstrations=96, pretrain_epochs=40, **settings)
    assert len(raw._demonstrations["actions"]) == 96
    np.testing.assert_array_equal(raw._demonstrations["actions"], cloned._demonstrations["actions"])  # seeded draws
    assert regression_error(cloned, held_out) < 0.5 * regression_error(raw, held_out)
    with pytest.raises(ValueError, match="pretrain_epochs needs demonstrations"):
        CrystalTD3BC("CrystalTFNPolicy", env, pretrain_epochs=2, **settings)
