import numpy as np
import pytest
import torch as th
from stable_baselines3 import SAC, TD3

from sb3_crystal.policies import CrystalTFNPolicy, register_policy_aliases
from sb3_crystal.policies.tfn import radial_squash
from tests.helpers import TINY_TFN

from .conftest import ToyCrystalEnv, learn_save_load, random_obs_batch, random_rotation

# second configuration exercising both parities, lmax 2, fully connected TPs, 2 gated layers
TINY_PAPER_LIKE = dict(TINY_TFN, tfn_preset="paper", n_layers=2, mul=2, lmax=2, radial_neurons=8)
CONFIGS = {"tiny": TINY_TFN, "tiny_paper": TINY_PAPER_LIKE}


def make_policy(n_max: int = 5, seed: int = 0, **kwargs) -> CrystalTFNPolicy:
    env = ToyCrystalEnv(n_max=n_max)
    th.manual_seed(seed)
    return CrystalTFNPolicy(env.observation_space, env.action_space, lambda _: 1e-3, **kwargs)


def run(policy: CrystalTFNPolicy, obs: dict[str, th.Tensor], actions: th.Tensor | None = None):
    with th.no_grad():
        act = policy.actor(obs)
        q = th.cat(policy.critic(obs, act if actions is None else actions), dim=1)
    return act.reshape(act.shape[0], -1, 3), q


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def policy(request) -> CrystalTFNPolicy:
    return make_policy(**CONFIGS[request.param])


def test_outputs_nontrivial_and_padding_zero(policy):
    obs = random_obs_batch()
    act, q = run(policy, obs)
    mask = obs["mask"].bool()
    assert act[mask].norm(dim=-1).min() > 1e-3, "untrained actor output too small for the symmetry tests to mean much"
    assert th.all(act[~mask] == 0)
    assert act.abs().max() < 1 and q.shape == (2, 2) and th.isfinite(q).all()


def test_rotation(policy):
    g = th.Generator().manual_seed(1)
    obs = random_obs_batch(generator=g)
    act, q = run(policy, obs)
    for _ in range(3):
        rot = random_rotation(g)
        obs_r = dict(obs, positions=obs["positions"] @ rot.T, cell=obs["cell"] @ rot.T, forces=obs["forces"] @ rot.T)
        act_r, q_r = run(policy, obs_r, actions=(act @ rot.T).reshape(2, -1))
        th.testing.assert_close(act_r, act @ rot.T, atol=1e-4, rtol=0)
        th.testing.assert_close(q_r, q, atol=1e-4, rtol=1e-5)


def test_translation_and_lattice_wrapping(policy):
    g = th.Generator().manual_seed(2)
    obs = random_obs_batch(generator=g)
    act, q = run(policy, obs)
    shift = th.randn(2, 1, 3, generator=g) * 3.0
    act_t, q_t = run(policy, dict(obs, positions=(obs["positions"] + shift) * obs["mask"][..., None]))
    th.testing.assert_close(act_t, act, atol=1e-4, rtol=0)
    th.testing.assert_close(q_t, q, atol=1e-4, rtol=1e-5)
    # move every real atom by its own integer lattice vector
    n = th.randint(-2, 3, obs["positions"].shape, generator=g).float() * obs["mask"][..., None]
    act_w, q_w = run(policy, dict(obs, positions=obs["positions"] + th.bmm(n, obs["cell"])))
    th.testing.assert_close(act_w, act, atol=1e-4, rtol=0)
    th.testing.assert_close(q_w, q, atol=1e-4, rtol=1e-5)


def test_permutation(policy):
    obs = random_obs_batch()
    act, q = run(policy, obs)
    perm = th.tensor([3, 0, 4, 1, 2])  # also moves padding slots between atoms
    obs_p = {k: (v[:, perm] if k != "cell" else v) for k, v in obs.items()}
    act_p, q_p = run(policy, obs_p, actions=act[:, perm].reshape(2, -1))
    th.testing.assert_close(act_p, act[:, perm], atol=1e-5, rtol=0)
    th.testing.assert_close(q_p, q, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_extra_padding_changes_nothing(config):
    small, large = make_policy(5, **CONFIGS[config]), make_policy(9, seed=1, **CONFIGS[config])
    large.load_state_dict(small.state_dict())
    obs = random_obs_batch(5)
    obs_l = {k: (th.cat([v, th.zeros(2, 4, *v.shape[2:])], dim=1) if k != "cell" else v) for k, v in obs.items()}
    act, q = run(small, obs)
    act_l, q_l = run(large, obs_l)
    th.testing.assert_close(act_l[:, :5], act, atol=1e-6, rtol=0)
    assert th.all(act_l[:, 5:] == 0)
    th.testing.assert_close(q_l, q, atol=1e-6, rtol=1e-6)


def test_padded_actions_do_not_affect_q(policy):
    obs = random_obs_batch()
    act, q = run(policy, obs)
    noisy = act.clone()
    noisy[~obs["mask"].bool()] = th.rand(int((~obs["mask"].bool()).sum()), 3) * 2 - 1
    _, q_noisy = run(policy, obs, actions=noisy.reshape(2, -1))
    th.testing.assert_close(q_noisy, q, atol=0, rtol=0)


def test_radial_squash_bounds_and_gradients():
    v = th.tensor([[0.0, 0.0, 0.0], [1e-9, 0.0, 0.0], [1e4, -1e4, 3e3], [0.3, -0.2, 0.1]], requires_grad=True)
    out = radial_squash(v)
    out.sum().backward()
    assert th.isfinite(v.grad).all() and out.abs().max() <= 1.0
    assert out[0].eq(0).all() and out[2].norm() <= 1.0
    th.testing.assert_close(out[3] / out[3].norm(), v[3].detach() / v[3].detach().norm())


def test_aliases_idempotent():
    register_policy_aliases()
    register_policy_aliases()
    assert TD3.policy_aliases["CrystalTFNPolicy"] is CrystalTFNPolicy
    assert "CrystalTFNPolicy" in SAC.policy_aliases
    assert TD3.policy_aliases["MlpPolicy"] is not CrystalTFNPolicy


def test_policy_kwargs_validation():
    with pytest.raises(TypeError, match="Unknown TFN"):
        make_policy(muls=3)
    with pytest.raises(ValueError, match="tfn_preset"):
        make_policy(tfn_preset="huge")


@pytest.mark.parametrize("policy_ref", ["CrystalTFNPolicy", CrystalTFNPolicy])
def test_td3_learn_save_load(tmp_path, policy_ref):
    model, loaded, action = learn_save_load(TD3, policy_ref, TINY_TFN, tmp_path / "td3_tfn")
    assert action.shape == (12,) and np.all(np.abs(action) <= 1) and np.all(action[6:] == 0)
    assert loaded.policy.tfn_kwargs == model.policy.tfn_kwargs


@pytest.mark.parametrize(
    ("irreps_in", "irreps_out"),
    [("24x0e+2x1o", "16x0e+8x1o"), ("16x0e+1x1o", "16x0e+8x1o"), ("8x0e+8x1o", "1x1o"), ("8x0e+8x1o", "1x0e")],
)
def test_fast_depthwise_tensor_product_matches_e3nn(irreps_in, irreps_out):
    from sb3_crystal.policies.tfn import EquivariantConvolution

    conv = EquivariantConvolution(irreps_in, "1x0e+1x1o", irreps_out, num_basis=4, radial_neurons=8)
    assert conv.fast_tp is not None
    g = th.Generator().manual_seed(0)
    x = th.randn(40, conv.tp.irreps_in1.dim, generator=g, requires_grad=True)
    y = th.randn(40, 4, generator=g)
    w = th.randn(40, conv.tp.weight_numel, generator=g, requires_grad=True)
    fast, reference = conv.fast_tp(x, y, w), conv.tp(x, y, w)
    th.testing.assert_close(fast, reference, atol=1e-5, rtol=1e-5)
    upstream = th.randn(fast.shape, generator=g)
    grads_fast = th.autograd.grad((fast * upstream).sum(), (x, w))
    grads_reference = th.autograd.grad((reference * upstream).sum(), (x, w))
    for a, b in zip(grads_fast, grads_reference, strict=True):
        th.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_fast_tensor_product_only_where_it_applies():
    from sb3_crystal.policies.tfn import EquivariantConvolution

    assert EquivariantConvolution("8x0e+8x1o+8x2e", "1x0e+1x1o+1x2e", "8x0e+8x1o", 4, 8).fast_tp is None
    assert EquivariantConvolution("8x0e+8x1o", "1x0e+1x1o", "8x0e+8x1o", 4, 8, tp_mode="uvw").fast_tp is None


def test_the_interaction_block_is_injected_as_a_class():
    from sb3_crystal.policies.tfn import EquivariantConvolution, TensorFieldNetwork

    built = []

    class Counting(EquivariantConvolution):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    network = TensorFieldNetwork("4x0e+1x1o", "1x1o", n_layers=1, mul=4, convolution_cls=Counting)
    assert len(built) == 2 and network.output is built[-1]  # the gated layer and the output convolution
