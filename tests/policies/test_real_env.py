import numpy as np
import pytest
import torch as th
from stable_baselines3 import SAC, TD3

from sb3_crystal.policies import register_policy_aliases
from tests.helpers import TINY_TFN

from .conftest import random_rotation

envs = pytest.importorskip("sb3_crystal.envs")


@pytest.mark.parametrize("algo", [TD3, SAC])
def test_learn_on_crystal_relax_env(algo):
    register_policy_aliases()
    env = envs.CrystalRelaxEnv(structures=["AlFe-B2"], n_max=4)
    model = algo("CrystalTFNPolicy", env, learning_starts=32, batch_size=16, policy_kwargs=dict(TINY_TFN), seed=0)
    model.learn(64)
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert action.shape == env.action_space.shape and np.all(action[6:] == 0)
    # equivariance on a real observation
    rot = random_rotation(th.Generator().manual_seed(0)).numpy()
    obs_r = dict(obs, positions=obs["positions"] @ rot.T, cell=obs["cell"] @ rot.T, forces=obs["forces"] @ rot.T)
    action_r, _ = model.predict(obs_r, deterministic=True)
    np.testing.assert_allclose(action_r.reshape(4, 3), action.reshape(4, 3) @ rot.T, atol=1e-4)
