import numpy as np
import torch as th
from stable_baselines3 import TD3

from sb3_crystal.policies import CrystalCGCNNPolicy, register_policy_aliases

from .conftest import ToyCrystalEnv, random_obs_batch, random_rotation

TINY_CGCNN = dict(hidden_dim=8, n_conv=2, species_dim=4, force_basis=4)


def make_policy(n_max: int = 5) -> CrystalCGCNNPolicy:
    env = ToyCrystalEnv(n_max=n_max)
    th.manual_seed(0)
    return CrystalCGCNNPolicy(env.observation_space, env.action_space, lambda _: 1e-3, **TINY_CGCNN)


def run(policy, obs):
    with th.no_grad():
        act = policy.actor(obs)
        return act.reshape(2, -1, 3), th.cat(policy.critic(obs, act), dim=1)


def test_cgcnn_invariances_but_not_equivariant():
    policy = make_policy()
    g = th.Generator().manual_seed(0)
    obs = random_obs_batch(generator=g)
    act, q = run(policy, obs)
    mask = obs["mask"].bool()
    assert th.all(act[~mask] == 0) and act.abs().max() <= 1
    # translation + lattice wrapping: invariant (distance-only graph)
    n = th.randint(-2, 3, obs["positions"].shape, generator=g).float() * obs["mask"][..., None]
    act_w, q_w = run(policy, dict(obs, positions=obs["positions"] + th.bmm(n, obs["cell"]) + 1.7 * obs["mask"][..., None]))
    th.testing.assert_close(act_w, act, atol=1e-5, rtol=0)
    th.testing.assert_close(q_w, q, atol=1e-5, rtol=1e-5)
    # rotation: the action does NOT rotate with the structure
    rot = random_rotation(g)
    obs_r = dict(obs, positions=obs["positions"] @ rot.T, cell=obs["cell"] @ rot.T, forces=obs["forces"] @ rot.T)
    act_r, _ = run(policy, obs_r)
    assert (act_r - act @ rot.T)[mask].abs().max() > 1e-2


def test_cgcnn_td3_learn_save_load(tmp_path):
    register_policy_aliases()
    env = ToyCrystalEnv(n_max=4)
    model = TD3("CrystalCGCNNPolicy", env, learning_starts=32, batch_size=16, policy_kwargs=dict(TINY_CGCNN), seed=0)
    model.learn(64)
    obs, _ = env.reset(seed=1)
    action, _ = model.predict(obs, deterministic=True)
    assert np.all(action[6:] == 0)
    model.save(tmp_path / "cgcnn")
    np.testing.assert_array_equal(TD3.load(tmp_path / "cgcnn").predict(obs, deterministic=True)[0], action)
