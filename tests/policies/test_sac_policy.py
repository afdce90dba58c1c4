import math

import numpy as np
import torch as th
from stable_baselines3 import SAC

from sb3_crystal.policies import CrystalTFNSACPolicy
from sb3_crystal.policies.sac import radial_squash_log_det
from sb3_crystal.policies.tfn import radial_squash
from tests.helpers import TINY_TFN

from .conftest import ToyCrystalEnv, learn_save_load, random_obs_batch, random_rotation


def test_log_det_matches_autograd_jacobian():
    for v in [th.tensor([0.3, -0.2, 0.5]), th.tensor([2.0, 1.0, -0.5]), th.tensor([1e-4, 0.0, 0.0])]:
        jac = th.autograd.functional.jacobian(radial_squash, v.double())
        expected = th.linalg.slogdet(jac).logabsdet
        th.testing.assert_close(radial_squash_log_det(v.double()), expected, atol=1e-6, rtol=1e-6)


def test_log_prob_is_density_of_squashed_gaussian():
    """Monte-Carlo check: the density integrates to 1 over the unit ball (importance sampling with a uniform proposal)."""
    g = th.Generator().manual_seed(0)
    mean, log_std = th.tensor([0.4, -0.3, 0.2]), th.tensor(-0.5)
    y = th.rand(400_000, 3, generator=g, dtype=th.float64) * 2 - 1
    y = y[y.norm(dim=-1) < 1 - 1e-6]
    r_y = y.norm(dim=-1, keepdim=True)
    v = y * th.atanh(r_y) / r_y  # inverse squash
    gaussian = -0.5 * ((v - mean) ** 2).sum(-1) / math.exp(2 * log_std) - 3 * log_std - 1.5 * math.log(2 * math.pi)
    density = th.exp(gaussian - radial_squash_log_det(v))
    integral = density.mean() * 8 * (y.shape[0] / 400_000)  # cube volume times fraction inside the ball
    assert abs(integral.item() - 1.0) < 0.03


def make_policy(n_max: int = 5) -> CrystalTFNSACPolicy:
    env = ToyCrystalEnv(n_max=n_max)
    th.manual_seed(0)
    return CrystalTFNSACPolicy(env.observation_space, env.action_space, lambda _: 1e-3, **TINY_TFN)


def test_sac_actor_equivariance_and_masking():
    policy = make_policy()
    g = th.Generator().manual_seed(3)
    obs = random_obs_batch(generator=g)
    rot = random_rotation(g)
    obs_r = dict(obs, positions=obs["positions"] @ rot.T, cell=obs["cell"] @ rot.T, forces=obs["forces"] @ rot.T)
    with th.no_grad():
        mean, log_std, mask = policy.actor.get_action_dist_params(obs)
        mean_r, log_std_r, _ = policy.actor.get_action_dist_params(obs_r)
        actions, log_prob = policy.actor.action_log_prob(obs)
    th.testing.assert_close(mean_r, mean @ rot.T, atol=1e-4, rtol=0)
    th.testing.assert_close(log_std_r, log_std, atol=1e-4, rtol=0)
    actions = actions.reshape(2, -1, 3)
    assert th.all(actions[~mask.bool()] == 0) and actions.norm(dim=-1).max() < 1
    assert log_prob.shape == (2,) and th.isfinite(log_prob).all()


def test_sac_learn_save_load(tmp_path):
    model, _, action = learn_save_load(SAC, "CrystalTFNPolicy", TINY_TFN, tmp_path / "sac_tfn")
    assert isinstance(model.policy, CrystalTFNSACPolicy) and model.target_entropy == -12.0
    assert np.all(np.abs(action) <= 1) and np.all(action[6:] == 0)
