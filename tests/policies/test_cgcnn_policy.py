import math

import numpy as np
import torch as th
from stable_baselines3 import SAC, TD3

from sb3_crystal.policies import CrystalCGCNNPolicy, CrystalCGCNNSACPolicy
from sb3_crystal.policies.cgcnn import tanh_log_det

from .conftest import ToyCrystalEnv, learn_save_load, random_obs_batch, random_rotation

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
    _, _, action = learn_save_load(TD3, "CrystalCGCNNPolicy", TINY_CGCNN, tmp_path / "cgcnn")
    assert np.all(action[6:] == 0)


def make_sac_policy(n_max: int = 5) -> CrystalCGCNNSACPolicy:
    env = ToyCrystalEnv(n_max=n_max)
    th.manual_seed(0)
    return CrystalCGCNNSACPolicy(env.observation_space, env.action_space, lambda _: 1e-3, **TINY_CGCNN)


def test_tanh_log_det_matches_autograd():
    u = th.tensor([-2.0, -0.3, 0.0, 0.7, 3.0], dtype=th.float64)
    expected = th.log(th.autograd.functional.jacobian(th.tanh, u).diagonal())
    th.testing.assert_close(tanh_log_det(u), expected, atol=1e-9, rtol=1e-9)
    far = tanh_log_det(th.tensor([-40.0, 40.0]))  # 1 - tanh^2 underflows in float32; the stable form does not
    assert th.isfinite(far).all() and far[0] == far[1]


def test_cgcnn_sac_actor_masking_log_prob_and_not_equivariant():
    policy = make_sac_policy()
    g = th.Generator().manual_seed(3)
    obs = random_obs_batch(generator=g)
    mask = obs["mask"].bool()
    with th.no_grad():
        mean, log_std, _ = policy.actor.get_action_dist_params(obs)
        th.manual_seed(7)
        actions, log_prob = policy.actor.action_log_prob(obs)
        # garbage in the padded slots changes nothing, neither the actions nor their log-probability
        pad = ~mask[..., None]
        noisy = dict(
            obs,
            positions=th.where(pad, 50 * th.randn(obs["positions"].shape, generator=g), obs["positions"]),
            forces=th.where(pad, th.randn(obs["forces"].shape, generator=g), obs["forces"]),
            species=th.where(~mask, th.full_like(obs["species"], 26.0), obs["species"]),
        )
        th.manual_seed(7)
        actions_p, log_prob_p = policy.actor.action_log_prob(noisy)
        det = policy.actor(obs, deterministic=True).reshape(2, -1, 3)
    th.testing.assert_close(actions_p, actions, atol=1e-6, rtol=0)
    th.testing.assert_close(log_prob_p, log_prob, atol=1e-5, rtol=1e-6)
    actions = actions.reshape(2, -1, 3)
    assert th.all(actions[~mask] == 0) and actions.abs().max() < 1
    assert log_prob.shape == (2,) and th.isfinite(log_prob).all()
    th.testing.assert_close(det, th.tanh(mean) * mask[..., None], atol=1e-6, rtol=0)
    # log-prob = per-atom squashed diagonal Gaussian over real atoms, rescaled to N_max atoms
    std = log_std.exp()
    u = th.atanh(actions.clamp(-1 + 1e-6, 1 - 1e-6))
    gauss = -0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    per_atom = ((gauss - tanh_log_det(u)).sum(-1) * mask).sum(1)
    th.testing.assert_close(log_prob, per_atom * mask.shape[1] / mask.sum(1), atol=2e-3, rtol=1e-4)
    # rotation: the mean action does NOT rotate with the structure
    rot = random_rotation(g)
    obs_r = dict(obs, positions=obs["positions"] @ rot.T, cell=obs["cell"] @ rot.T, forces=obs["forces"] @ rot.T)
    with th.no_grad():
        det_r = policy.actor(obs_r, deterministic=True).reshape(2, -1, 3)
    assert (det_r - det @ rot.T)[mask].abs().max() > 1e-2


def test_cgcnn_sac_learn_save_load(tmp_path):
    model, loaded, action = learn_save_load(SAC, "CrystalCGCNNPolicy", TINY_CGCNN, tmp_path / "sac_cgcnn")
    assert isinstance(model.policy, CrystalCGCNNSACPolicy) and model.target_entropy == -12.0
    assert isinstance(loaded.policy, CrystalCGCNNSACPolicy)
    assert np.all(np.abs(action) <= 1) and np.all(action[6:] == 0) and np.any(action[:6] != 0)
