"""Agent folders (settings.json + weights.pt) and SB3 zips as agents."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch as th
from stable_baselines3 import TD3

from sb3_crystal.algorithms import CrystalSAC, CrystalTD3
from sb3_crystal.envs.crystal_relax import CrystalRelaxEnv
from sb3_crystal.relax import AgentFormatError, as_agent, load_agent, load_model, save_agent, trained_species

TINY_TFN = dict(n_layers=1, mul=4, lmax=1, num_basis=4, radial_neurons=8, species_dim=4, force_basis=4, action_basis=4)


@pytest.fixture(scope="module")
def env():
    environment = CrystalRelaxEnv(max_steps=10, max_displacement=0.3, action_scale="force")
    yield environment
    environment.close()


@pytest.fixture(scope="module")
def observations(env):
    return [env.reset(seed=seed)[0] for seed in range(4)]


def same_actions(a, b, observations) -> None:
    for observation in observations:
        expected, _ = a.policy.predict(observation, deterministic=True)
        actual, _ = b.policy.predict(observation, deterministic=True)
        np.testing.assert_array_equal(actual, expected)


def tfn_policy():
    return pytest.importorskip("sb3_crystal.policies").CrystalTFNPolicy


@pytest.mark.parametrize(
    "make",
    [
        lambda env: CrystalTD3("MultiInputPolicy", env, policy_kwargs={"net_arch": [8], "activation_fn": th.nn.Tanh}, seed=0),
        lambda env: CrystalSAC("MultiInputPolicy", env, policy_kwargs={"net_arch": [8]}, seed=0),
        lambda env: CrystalTD3(tfn_policy(), env, policy_kwargs=TINY_TFN, seed=0),
    ],
    ids=["td3-mlp", "sac-mlp", "td3-tfn"],
)
def test_round_trip_gives_identical_actions(env, observations, make, tmp_path):
    model = make(env)
    folder = save_agent(model, tmp_path / "agent")
    assert sorted(p.name for p in folder.iterdir()) == ["settings.json", "weights.pt"]
    settings = json.loads((folder / "settings.json").read_text())
    assert settings["algorithm"] in {"TD3", "SAC"} and settings["policy_class"] == type(model.policy).__name__
    assert settings["n_max"] == 2 and settings["species"] == ["Al", "Fe"]
    assert settings["env_settings"]["max_displacement"] == 0.3 and settings["env_settings"]["action_scale"] == "force"
    th.load(folder / "weights.pt", weights_only=True)  # plain tensors, no code

    agent = load_agent(folder)
    assert type(agent.policy) is type(model.policy) and agent.n_max == 2 and agent.species == ("Al", "Fe")
    assert agent.move_settings()["action_scale"] == "force"
    same_actions(model, agent, observations)
    again = load_agent(save_agent(agent, tmp_path / "again"))  # an agent can be written again
    same_actions(model, again, observations)


def test_classes_are_stored_by_name(env, tmp_path):
    model = CrystalTD3("MultiInputPolicy", env, policy_kwargs={"net_arch": [8], "activation_fn": th.nn.Tanh}, seed=0)
    settings = json.loads((save_agent(model, tmp_path / "a") / "settings.json").read_text())
    assert settings["policy_kwargs"]["activation_fn"] == {"__class__": "torch.nn.Tanh"}


def test_non_plain_policy_kwargs_are_refused(env, tmp_path):
    class Custom(th.nn.ReLU):
        pass

    model = CrystalTD3("MultiInputPolicy", env, policy_kwargs={"net_arch": [8], "activation_fn": Custom}, seed=0)
    with pytest.raises(ValueError, match="cannot be saved"):
        save_agent(model, tmp_path / "a")
    assert not (tmp_path / "a").exists()


def test_bad_agent_folders(env, tmp_path):
    model = CrystalTD3("MultiInputPolicy", env, policy_kwargs={"net_arch": [8]}, seed=0)
    folder = save_agent(model, tmp_path / "agent")
    settings = json.loads((folder / "settings.json").read_text())

    def write(**changes):
        (folder / "settings.json").write_text(json.dumps({**settings, **changes}))

    write(policy_class="os.system")
    with pytest.raises(AgentFormatError, match=r"unknown policy class 'os\.system'"):
        load_agent(folder)
    write(policy_kwargs={"net_arch": [8], "activation_fn": {"__class__": "os.system"}})
    with pytest.raises(AgentFormatError, match=r"not a torch\.nn / torch\.optim class"):
        load_agent(folder)
    write(policy_kwargs={"net_arch": [16]})
    with pytest.raises(AgentFormatError, match="weights do not fit"):
        load_agent(folder)
    write(format="something else")
    with pytest.raises(AgentFormatError, match="not an sb3_crystal agent"):
        load_agent(folder)
    (folder / "weights.pt").unlink()
    with pytest.raises(AgentFormatError, match=r"weights\.pt missing"):
        load_agent(folder)


def test_load_model_reads_sb3_zips(env, observations, tmp_path):
    model = CrystalTD3("MultiInputPolicy", env, policy_kwargs={"net_arch": [8]}, seed=0)
    model.save(tmp_path / "crystal.zip")
    agent = load_model(tmp_path / "crystal.zip")
    assert agent.algorithm == "TD3" and agent.species == ("Al", "Fe")  # from the recorded "AlFe-B2" structures
    assert agent.move_settings() == {
        "max_displacement": 0.3,
        "action_scale": "force",
        "force_cap": 1.0,
        "min_distance": 1.5,
        "action_mode": "absolute",
    }
    same_actions(model, agent, observations)

    sac = CrystalSAC("MultiInputPolicy", env, policy_kwargs={"net_arch": [8]}, seed=0)
    sac.save(tmp_path / "sac.zip")
    assert load_model(tmp_path / "sac.zip").algorithm == "SAC"

    plain = TD3("MultiInputPolicy", env, policy_kwargs={"net_arch": [8]}, seed=0)  # no recorded env settings
    plain.save(tmp_path / "plain.zip")
    agent = load_model(tmp_path / "plain.zip")
    assert agent.species is None and agent.move_settings()["max_displacement"] == 0.5  # the env default
    same_actions(plain, agent, observations)

    with pytest.raises(FileNotFoundError, match="No model at"):
        load_model(tmp_path / "missing.zip")
    (tmp_path / "junk.zip").write_text("not a zip")
    with pytest.raises(AgentFormatError, match="neither an SB3 model zip nor an agent folder"):
        load_model(tmp_path / "junk.zip")


def test_trained_species(env):
    model = CrystalTD3("MultiInputPolicy", env, policy_kwargs={"net_arch": [8]}, seed=0)
    assert trained_species(model) == ("Al", "Fe")  # from the training env's dataset
    model.crystal_env_kwargs = {"structures": "random:count=3,atoms=2,seed=0"}
    model.env = None
    assert trained_species(model) is None  # random crystals: unknown, the calculator decides
    assert as_agent(model).species is None
