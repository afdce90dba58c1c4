"""Agents that observe the relaxation history: the env and RLOptimizer build the same observations, files keep it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sb3_crystal.algorithms import CrystalTD3
from sb3_crystal.calculators import LammpsEAMCalculator
from sb3_crystal.envs.crystal_relax import CrystalRelaxEnv
from sb3_crystal.relax import RLOptimizer, load_agent, save_agent
from sb3_crystal.structures.geometry import distort
from tests.helpers import TINY_TFN, record_observations

HISTORY_ENV = dict(history=2, proposal="lbfgs", action_mode="residual", max_displacement=0.1, epsilon=0.05, max_steps=20)


@pytest.fixture(scope="module")
def env():
    environment = CrystalRelaxEnv(**HISTORY_ENV)
    yield environment
    environment.close()


@pytest.fixture(scope="module")
def model(env):
    return CrystalTD3("CrystalTFNPolicy", env, policy_kwargs=TINY_TFN, seed=0)


def assert_same_observations(recorded, expected) -> None:
    """The optimizer's observations are the environment's, step by step (up to float32 round-off)."""
    for step, (mine, theirs) in enumerate(zip(recorded, expected, strict=False)):
        assert mine.keys() == theirs.keys()
        for key in mine:
            np.testing.assert_allclose(mine[key], theirs[key], rtol=1e-5, atol=1e-6, err_msg=f"step {step}, {key}")


def test_env_and_rl_optimizer_build_identical_observations_step_by_step(env, model):
    start = distort(env.dataset[0], 0.3, np.random.default_rng(5), min_distance=1.6)
    obs, _ = env.reset(options={"atoms": start})
    env_observations = [obs]
    for _ in range(6):
        action, _ = model.predict(obs, deterministic=True)
        obs, *_ = env.step(action)
        env_observations.append(obs)

    atoms = start.copy()
    atoms.calc = LammpsEAMCalculator()
    optimizer = RLOptimizer(atoms, model=model, logfile=None, trust_region=False)  # the env has none either
    recorded = record_observations(optimizer)
    optimizer.run(fmax=1e-9, steps=6)
    assert len(recorded) == 6
    assert_same_observations(recorded, env_observations)
    np.testing.assert_allclose(atoms.positions, env.atoms.positions, atol=1e-9)


def test_with_the_trust_region_too_and_its_refused_tries_in_the_history():
    kwargs = {**HISTORY_ENV, "max_displacement": 0.5, "trust_region": {"max_energy_rise": 0.0, "retries": 1}}
    guarded = CrystalRelaxEnv(**kwargs)
    agent = CrystalTD3("CrystalTFNPolicy", guarded, policy_kwargs=TINY_TFN, seed=3)
    start = distort(guarded.dataset[0], 0.3, np.random.default_rng(11), min_distance=1.6)
    obs, _ = guarded.reset(options={"atoms": start})
    seen, rejected = [obs], 0
    for _ in range(5):
        obs, _, terminated, _, info = guarded.step(agent.predict(obs, deterministic=True)[0])
        seen.append(obs)
        rejected += info["rejected"]
        if terminated:
            break
    assert rejected > 0, "the test needs refused tries"
    atoms = start.copy()
    atoms.calc = LammpsEAMCalculator()
    optimizer = RLOptimizer(atoms, model=agent, logfile=None, patience=None)  # the trust region comes with the agent
    assert optimizer.trust_region == guarded.trust_region
    recorded = record_observations(optimizer)
    optimizer.run(fmax=guarded.epsilon, steps=len(seen) - 1)
    assert_same_observations(recorded, seen)
    assert optimizer.force_calls == info["force_calls"] and optimizer.rejected == rejected
    guarded.close()


def test_a_new_run_starts_a_new_history(env, model):
    atoms = distort(env.dataset[0], 0.3, np.random.default_rng(6), min_distance=1.6)
    atoms.calc = LammpsEAMCalculator()
    optimizer = RLOptimizer(atoms, model=model, logfile=None, trust_region=False, patience=None)
    recorded = record_observations(optimizer)
    optimizer.run(fmax=1e-9, steps=3)
    optimizer.run(fmax=1e-9, steps=1)
    assert optimizer.history.n_steps == 0 and not recorded[-1]["displacements"].any()
    assert recorded[2]["displacements"].any()


def test_agent_files_record_the_layout_and_old_files_load_as_before(env, model, tmp_path):
    folder = save_agent(model, tmp_path / "agent")
    settings = json.loads((folder / "settings.json").read_text())
    assert settings["observation"]["history"] == 2 and settings["observation"]["proposal"] == "lbfgs"
    agent = load_agent(folder)
    assert agent.layout == env.layout
    assert agent.move_settings()["action_mode"] == "residual"
    obs, _ = env.reset(seed=1)
    np.testing.assert_allclose(agent.policy.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])

    # a file of today's format (no observation entry) is the paper's observation
    plain_env = CrystalRelaxEnv(max_steps=5)
    plain = CrystalTD3("CrystalTFNPolicy", plain_env, policy_kwargs=TINY_TFN, seed=0)
    old = save_agent(plain, tmp_path / "old")
    data = json.loads((old / "settings.json").read_text())
    del data["observation"]
    (old / "settings.json").write_text(json.dumps(data))
    loaded = load_agent(old)
    assert loaded.layout.keys == ("positions", "cell", "forces", "species", "mask")
    obs, _ = plain_env.reset(seed=2)
    np.testing.assert_allclose(loaded.policy.predict(obs, deterministic=True)[0], plain.predict(obs, deterministic=True)[0])
    plain_env.close()


def test_shipped_agents_still_load_and_act():
    from sb3_crystal.relax import load_shipped_agent

    for name in ("alfe", "b2"):
        agent = load_shipped_agent(name)
        assert agent.layout.history == 0 and agent.layout.proposal == "none"


# -- safeguards ---------------------------------------------------------------------------------------------------------
class ConstantPolicy:
    """A stand-in policy: the same action whatever it sees, the two atoms pushed towards each other."""

    def __init__(self, value: float, n_max: int = 2) -> None:
        self.action = np.zeros((n_max, 3), np.float32)
        self.action[0], self.action[1] = value, -value
        self.action = self.action.ravel()

    def predict(self, observation, deterministic=False):
        return self.action.copy(), None


def constant_agent(value: float):
    from sb3_crystal.relax import CrystalAgent

    settings = {"max_displacement": 0.4, "min_distance": 1.5}
    return CrystalAgent(ConstantPolicy(value), n_max=2, env_settings=settings, species=("Al", "Fe"))


class DistinctGeometries(LammpsEAMCalculator):
    """The LAMMPS EAM, remembering every geometry it evaluated."""

    def compute(self, numbers, cell, positions, **kwargs):
        self.seen = {*getattr(self, "seen", set()), np.asarray(positions).tobytes()}
        return super().compute(numbers, cell, positions, **kwargs)


def b2_start(seed: int):
    env = CrystalRelaxEnv(max_steps=5)
    atoms = distort(env.dataset[0], 0.3, np.random.default_rng(seed), min_distance=1.6)
    env.close()
    atoms.calc = DistinctGeometries()
    return atoms


def test_a_stalled_agent_stops_and_says_so_instead_of_burning_the_budget():
    atoms = b2_start(0)
    optimizer = RLOptimizer(atoms, model=constant_agent(0.0), logfile=None, patience=4)
    with pytest.warns(UserWarning, match="stalled"):
        converged = optimizer.run(fmax=0.05, steps=200)
    assert not converged and optimizer.stop_reason == "stalled"
    assert optimizer.nsteps == 4 and optimizer.force_calls == 1  # zero moves cost nothing


def test_the_trust_region_never_lets_the_energy_rise_and_counts_every_try():
    atoms = b2_start(1)
    energies = []
    optimizer = RLOptimizer(atoms, model=constant_agent(1.0), logfile=None, patience=3)
    optimizer.attach(lambda: energies.append(atoms.get_potential_energy()))
    with pytest.warns(UserWarning):
        optimizer.run(fmax=0.05, steps=50)
    assert np.all(np.diff(energies) <= optimizer.trust_region.max_energy_rise * len(atoms) + 1e-12)
    assert optimizer.rejected > 0
    # every distinct geometry evaluated is a call, the rejected tries included
    assert optimizer.force_calls == len(atoms.calc.seen) > len(set(np.round(energies, 12)))

    unguarded = b2_start(1)
    free = RLOptimizer(unguarded, model=constant_agent(1.0), logfile=None, trust_region=False, patience=3)
    rises = []
    free.attach(lambda: rises.append(unguarded.get_potential_energy()))
    with pytest.warns(UserWarning):
        free.run(fmax=0.05, steps=50)
    assert np.diff(rises).max() > 0.01  # the same agent goes uphill without the safeguard


def test_env_and_optimizer_share_the_trust_region(model):
    env = CrystalRelaxEnv(**{**HISTORY_ENV, "trust_region": {"max_energy_rise": 0.0, "retries": 1}})
    start = distort(env.dataset[0], 0.3, np.random.default_rng(9), min_distance=1.6)
    env.reset(options={"atoms": start})
    rng = np.random.default_rng(0)
    energies, accepted, rejected = [env._energy], 0, 0
    for _ in range(8):
        _, _, _, _, info = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        energies.append(info["energy"])
        rejected += info["rejected"]
        accepted += info["rejected"] < 2  # one retry: a step is refused after two rejected tries
    assert np.all(np.diff(energies) <= 1e-12)
    assert rejected > 0 and info["force_calls"] == 1 + accepted + rejected  # each try is one call
    env.close()


def test_the_optimizers_warn_when_the_agent_learned_on_another_calculator(model):
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from sb3_crystal.relax import HybridOptimizer
    from sb3_crystal.relax.agent_io import CalculatorMismatchWarning

    atoms = bulk("Al", "fcc", a=4.05).repeat((2, 1, 1))  # EMT has Al, not Fe
    atoms.calc = EMT()  # the model was trained on the LAMMPS EAM
    with pytest.warns(CalculatorMismatchWarning, match="trained with calculator 'lammps'"):
        RLOptimizer(atoms, model=model, logfile=None)
    with pytest.warns(CalculatorMismatchWarning):
        HybridOptimizer(atoms, model=model, logfile=None)


@pytest.mark.parametrize("policy", ["CrystalTFNPolicy", "CrystalCGCNNPolicy"])
@pytest.mark.parametrize("algorithm", ["TD3", "SAC"])
def test_every_crystal_policy_reads_the_history_layout(env, policy, algorithm):
    from sb3_crystal.algorithms import CrystalSAC

    cls = CrystalTD3 if algorithm == "TD3" else CrystalSAC
    kwargs = dict(TINY_TFN) if policy == "CrystalTFNPolicy" else {"hidden_dim": 8, "n_conv": 1}
    model = cls(policy, env, policy_kwargs=kwargs, seed=0, learning_starts=4, batch_size=4)
    obs, _ = env.reset(seed=0)
    first, _ = model.predict(obs, deterministic=True)
    changed = dict(obs, displacements=obs["displacements"] + 0.05)  # the history enters the action
    assert not np.allclose(model.predict(changed, deterministic=True)[0], first)
    model.learn(8)


@pytest.mark.parametrize("action_scale", ["fixed", "proposal"])
def test_curvature_proposal_env_and_optimizer_agree_and_its_zero_action_relaxes(action_scale):
    kwargs = {**HISTORY_ENV, "proposal": "curvature", "structures": "AlFe-B2", "trust_region": True, "max_steps": 30}
    curved = CrystalRelaxEnv(**kwargs, action_scale=action_scale)
    assert curved.layout.proposal == "curvature" and curved.layout.proposal_max_step == 0.3
    agent = CrystalTD3("CrystalTFNPolicy", curved, policy_kwargs=dict(TINY_TFN), seed=0)
    start = distort(curved.dataset[0], 0.3, np.random.default_rng(7), min_distance=1.6)
    obs, _ = curved.reset(options={"atoms": start})
    seen = [obs]
    for _ in range(3):
        obs, _, terminated, _, _ = curved.step(agent.predict(obs, deterministic=True)[0])
        seen.append(obs)
        if terminated:
            break
    atoms = start.copy()
    atoms.calc = LammpsEAMCalculator()
    optimizer = RLOptimizer(atoms, model=agent, logfile=None, patience=None)
    assert optimizer.settings["action_scale"] == action_scale
    recorded = record_observations(optimizer)
    optimizer.run(fmax=1e-9, steps=len(seen) - 1)
    assert_same_observations(recorded, seen)
    np.testing.assert_allclose(atoms.positions, curved.atoms.positions, atol=1e-9)
    # a zero action takes the learned Hessian's step: it relaxes B2 to 0.05 eV/Å within a few force calls
    obs, _ = curved.reset(options={"atoms": start})
    for _ in range(10):
        obs, _, terminated, _, info = curved.step(np.zeros(curved.action_space.shape, np.float32))
        if terminated:
            break
    assert terminated and info["force_calls"] <= 6
    curved.close()
