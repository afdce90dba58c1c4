"""CrystalRelaxEnv(cell=True): the cell relaxes too, through FrechetCellFilter's coordinates; the strain head."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch as th
from ase.filters import FrechetCellFilter
from scipy.spatial.transform import Rotation

from sb3_crystal.algorithms import CrystalTD3
from sb3_crystal.calculators import make_calculator
from sb3_crystal.envs import CrystalRelaxEnv
from sb3_crystal.envs.cell import symmetric_from_voigt, voigt_from_symmetric
from sb3_crystal.envs.observation import ObservationLayout
from sb3_crystal.policies.tfn import tensor_from_irreps, tensor_irreps
from sb3_crystal.relax import RLOptimizer, load_agent, save_agent
from tests.helpers import record_observations

RESIDUAL_CELL = dict(
    cell=True,
    history=2,
    proposal="lbfgs",
    action_mode="residual",
    trust_region=True,
    max_displacement=0.05,
    epsilon=0.05,
    beta=0.1,
    max_steps=10,
)


@pytest.fixture(scope="module")
def env():
    environment = CrystalRelaxEnv(**RESIDUAL_CELL)
    yield environment
    environment.close()


@pytest.fixture(scope="module")
def model(env):
    agent = CrystalTD3("CrystalTFNPolicy", env, learning_starts=8, batch_size=4, seed=0, train_freq=4)
    agent.learn(16)
    return agent


def test_spaces_and_zero_action_relaxes_forces_and_cell(env):
    assert env.observation_space["cell_forces"].shape == (3, 3)
    assert env.observation_space["cell_proposal"].shape == (3, 3)
    assert env.action_space.shape == (3 * env.n_max + 6,)
    obs, info = env.reset(seed=0)
    np.testing.assert_allclose(obs["cell_forces"], obs["cell_forces"].T, atol=1e-6)  # the virial is symmetric
    volume = env.atoms.get_volume()
    for _ in range(10):
        obs, _, terminated, _, info = env.step(np.zeros(env.action_space.shape, np.float32))
        if terminated:
            break
    assert terminated and info["fmax"] <= 0.05
    assert env.atoms.get_volume() != volume  # the cell moved
    filt = FrechetCellFilter(env.atoms)  # a new filter's reference is the relaxed cell: its rows differ slightly
    filt.atoms.calc = make_calculator("lammps")
    assert np.linalg.norm(filt.get_forces(), axis=1).max() == pytest.approx(info["fmax"], rel=1e-2)


def test_strain_action_strains_the_cell(env):
    env.reset(seed=1)
    cell = np.array(env.atoms.cell)
    action = np.zeros(env.action_space.shape, np.float32)
    action[-6:] = [1, 0, 0, 0, 0, 0]  # +max_strain along x on top of the proposal's cell step
    env_absolute = CrystalRelaxEnv(**{**RESIDUAL_CELL, "action_mode": "absolute", "proposal": "none", "trust_region": None})
    env_absolute.reset(seed=1)
    start = np.array(env_absolute.atoms.cell)
    env_absolute.step(action)
    stretched = np.array(env_absolute.atoms.cell)
    deformation = np.linalg.solve(start, stretched)  # start @ D = stretched (rows)
    np.testing.assert_allclose(deformation, np.diag([np.exp(0.01), 1, 1]), atol=1e-9)
    assert cell.shape == (3, 3)
    env_absolute.close()


def test_voigt_round_trip_and_irreps_basis():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(4, 6))
    np.testing.assert_allclose(voigt_from_symmetric(symmetric_from_voigt(values)), values)
    tensor = th.as_tensor(symmetric_from_voigt(values), dtype=th.float32)
    irreps = tensor_irreps(tensor)
    np.testing.assert_allclose(tensor_from_irreps(irreps).numpy(), tensor.numpy(), atol=1e-5)
    np.testing.assert_allclose(irreps.norm(dim=-1).numpy(), tensor.flatten(1).norm(dim=-1).numpy(), rtol=1e-5)


def _rotated(obs: dict[str, np.ndarray], rotation: np.ndarray) -> dict[str, np.ndarray]:
    layout = ObservationLayout.from_space(CrystalRelaxEnv(**RESIDUAL_CELL).observation_space)
    out = {key: np.array(value, dtype=np.float64) for key, value in obs.items()}
    for key in layout.vector_keys:
        out[key] = out[key] @ rotation.T
    out["cell"] = out["cell"] @ rotation.T
    for key in layout.tensor_keys:
        out[key] = rotation @ out[key] @ rotation.T
    return {key: value.astype(np.float32) for key, value in out.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_strain_head_and_critic_are_equivariant(env, model, seed):
    obs, _ = env.reset(seed=seed)
    rotation = Rotation.random(random_state=seed).as_matrix()
    n = env.n_max
    action, _ = model.predict(obs, deterministic=True)
    turned, _ = model.predict(_rotated(obs, rotation), deterministic=True)
    strain, strain_turned = symmetric_from_voigt(action[3 * n :]), symmetric_from_voigt(turned[3 * n :])
    np.testing.assert_allclose(rotation @ strain @ rotation.T, strain_turned, atol=1e-5)
    np.testing.assert_allclose(action[: 3 * n].reshape(-1, 3) @ rotation.T, turned[: 3 * n].reshape(-1, 3), atol=1e-5)
    # Q is invariant when the action turns with the crystal
    rotated_action = np.concatenate([turned[: 3 * n], voigt_from_symmetric(rotation @ strain @ rotation.T)])
    policy = model.policy
    q = policy.critic(policy.obs_to_tensor(obs)[0], th.as_tensor(action[None], dtype=th.float32))
    q_turned = policy.critic(
        policy.obs_to_tensor(_rotated(obs, rotation))[0], th.as_tensor(rotated_action[None], dtype=th.float32)
    )
    np.testing.assert_allclose(q[0].detach().numpy(), q_turned[0].detach().numpy(), atol=1e-4)


def test_optimizer_and_env_observe_the_same_cell_relaxation(env, model, tmp_path):
    save_agent(model, tmp_path / "agent")
    agent = load_agent(tmp_path / "agent")
    assert agent.layout.cell
    check = CrystalRelaxEnv(**{**RESIDUAL_CELL, "max_steps": 30})
    obs, _ = check.reset(seed=4)
    atoms = check.atoms
    atoms.calc = make_calculator("lammps")
    optimizer = RLOptimizer(FrechetCellFilter(atoms), model=agent, logfile=None)
    seen = record_observations(optimizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimizer.run(fmax=0.05, steps=4)
    assert seen
    for observation in seen:
        for key in obs:
            np.testing.assert_allclose(observation[key], obs[key], atol=1e-6, err_msg=key)
        obs, _, terminated, _, _ = check.step(agent.policy.predict(obs, deterministic=True)[0])
        if terminated:
            break
    check.close()


def test_cell_agent_needs_the_frechet_filter(env, model):
    atoms = env.atoms
    atoms.calc = make_calculator("lammps")
    with pytest.raises(ValueError, match="FrechetCellFilter"):
        RLOptimizer(atoms, model=model, logfile=None)


def test_sac_and_cgcnn_refuse_a_cell_layout(env):
    from sb3_crystal.algorithms import CrystalSAC

    with pytest.raises(ValueError, match="no strain head"):
        CrystalSAC("CrystalTFNPolicy", env, seed=0)
    with pytest.raises(ValueError, match="no strain head"):
        CrystalTD3("CrystalCGCNNPolicy", env, seed=0)


def test_state_noise_turns_the_cell_tensors_with_the_forces(env):
    from sb3_crystal.exploration.state_noise import StateNoise

    obs, _ = env.reset(seed=5)
    batch = {key: value[None] for key, value in obs.items()}
    noisy = StateNoise(level=3.0, seed=0).perturb(batch, np.array([3.0]))
    rotation, scale = StateNoise(level=3.0, seed=0).sample(3.0)  # the same draw
    np.testing.assert_allclose(noisy["forces"][0], scale * obs["forces"] @ rotation.T, atol=1e-5)
    for key in ("cell_forces", "cell_proposal"):
        np.testing.assert_allclose(noisy[key][0], scale * rotation @ obs[key] @ rotation.T, atol=1e-5)
    np.testing.assert_array_equal(noisy["cell"][0], obs["cell"])
