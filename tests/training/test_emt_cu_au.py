"""A second chemistry end to end: the EMT environment on generated Cu–Au cells, the residual start, and a tiny
train.py run with zoo_configs/td3_emt.yml whose agent relaxes a Cu–Au cell."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch as th
import yaml
from ase.calculators.emt import EMT

pytest.importorskip("rl_zoo3")

from sb3_crystal import CrystalRelaxEnv, RLOptimizer, cli
from sb3_crystal.algorithms import CrystalTD3
from sb3_crystal.calculators import make_calculator
from sb3_crystal.callbacks.residual_start import ZeroActionStart
from sb3_crystal.relax import load_agent
from sb3_crystal.structures.generators import parse_generator_spec
from sb3_crystal.training.zoo import train

CONFIG = Path(__file__).resolve().parents[2] / "zoo_configs" / "td3_emt.yml"
ENV_KWARGS = yaml.safe_load(CONFIG.read_text())["CrystalRelax-v0"]["env_kwargs"]
TINY_TFN = dict(n_layers=1, mul=4, lmax=1, num_basis=4, radial_neurons=8)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SB3_CRYSTAL_CACHE", str(tmp_path / "cache"))
    return tmp_path


def emt_env(**overrides) -> CrystalRelaxEnv:
    return CrystalRelaxEnv(**{**ENV_KWARGS, **overrides})


def test_emt_env_episode_on_generated_cu_au_agrees_with_ases_emt(cache):
    env = emt_env(max_steps=40)
    obs, info = env.reset(seed=3)
    real = obs["mask"] > 0
    assert set(obs["species"][real].astype(int)) <= {29, 79} and np.all(obs["species"][~real] == 0)
    atoms = env.atoms  # the generated start, no calculator
    reference = atoms.copy()
    reference.calc = EMT()
    np.testing.assert_allclose(obs["forces"][real], reference.get_forces(), atol=1e-5)  # float32 observation
    assert info["energy"] == pytest.approx(reference.get_potential_energy(), abs=1e-9)
    first = info["fmax"]
    zero = np.zeros(env.action_space.shape, np.float32)  # residual: the L-BFGS proposal
    for _ in range(40):
        obs, _, terminated, truncated, info = env.step(zero)
        if terminated or truncated:
            break
    assert info["fmax"] < first and info["force_calls"] >= 2
    # the package's EMT route on the relaxed geometry: ASE's numbers
    moved = env.atoms
    ours, theirs = moved.copy(), moved.copy()
    ours.calc, theirs.calc = make_calculator("emt"), EMT()
    assert ours.get_potential_energy() == pytest.approx(theirs.get_potential_energy(), abs=1e-10)
    np.testing.assert_allclose(ours.get_forces(), theirs.get_forces(), atol=1e-10)


def test_zero_action_start_makes_the_untrained_agent_the_proposal(cache):
    env = emt_env(max_steps=5)
    model = CrystalTD3("CrystalTFNPolicy", env, policy_kwargs=TINY_TFN, learning_starts=100, seed=0, verbose=0)
    obs, _ = env.reset(seed=1)
    before, _ = model.predict(obs, deterministic=True)
    assert np.abs(before).max() > 0  # a random output layer: not the proposal
    model.learn(2, callback=ZeroActionStart())
    after, _ = model.predict(obs, deterministic=True)
    assert np.abs(after).max() == 0.0
    for name, value in model.actor_target.state_dict().items():
        th.testing.assert_close(value, model.actor.state_dict()[name], msg=name)


def test_tiny_train_run_with_the_emt_config_gives_a_cu_au_agent(cache, tmp_path):
    logs = tmp_path / "logs"
    policy_kwargs = "dict(n_layers=1, mul=4, lmax=1, num_basis=4, radial_neurons=8)"
    run = ["--algo", "td3", "--env", "CrystalRelax-v0", "--conf-file", str(CONFIG), "-f", str(logs), "-n", "24"]
    tiny = ["--hyperparams", "learning_starts:12", "batch_size:4", f"policy_kwargs:{policy_kwargs}"]
    train([*run, "--seed", "0", "--eval-freq", "-1", "--env-kwargs", "max_steps:6", *tiny])
    zips = list(logs.glob("td3/CrystalRelax-v0_1/CrystalRelax-v0.zip"))
    assert zips, sorted(str(p) for p in logs.rglob("*"))
    folder = tmp_path / "agent"
    assert cli.main(["convert", str(zips[0]), str(folder)]) == 0  # the documented sb3-crystal convert
    agent = load_agent(folder)
    assert agent.species == ("Cu", "Au") and agent.calculator == "emt"
    assert agent.env_settings["generator"] == ENV_KWARGS["generator"]
    start = parse_generator_spec("generate:solid_solution,elements=Cu+Au,lattice=fcc,size=1,rattle=0.1").sample(
        np.random.default_rng(4)
    )
    start.calc = make_calculator("emt")
    optimizer = RLOptimizer(start, model=agent, logfile=None)
    optimizer.run(fmax=0.05, steps=5)
    assert optimizer.force_calls >= 2  # it ran on Cu–Au: no species or calculator refusal
