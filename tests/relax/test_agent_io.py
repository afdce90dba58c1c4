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
from sb3_crystal.relax.agent_io import (
    CalculatorMismatchWarning,
    CrystalAgent,
    PickleNotAllowedError,
    calculator_mismatch,
    check_calculator,
    trained_calculator,
)
from tests.helpers import TINY_TFN, mlp_td3, planted_zip


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
    model = mlp_td3(env)
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
    model = mlp_td3(env)
    model.save(tmp_path / "crystal.zip")
    with pytest.raises(PickleNotAllowedError, match=r"crystal\.zip is an SB3 model zip: loading it unpickles"):
        load_model(tmp_path / "crystal.zip")
    agent = load_model(tmp_path / "crystal.zip", allow_pickle=True)
    assert agent.algorithm == "TD3" and agent.species == ("Al", "Fe")  # from the recorded "AlFe-B2" structures
    assert agent.move_settings() == {
        "max_displacement": 0.3,
        "action_scale": "force",
        "force_cap": 1.0,
        "min_distance": 1.5,
        "action_mode": "absolute",
        "max_strain": 0.01,
    }
    same_actions(model, agent, observations)
    same_actions(model, load_agent(save_agent(agent, tmp_path / "converted")), observations)  # zip → folder

    sac = CrystalSAC("MultiInputPolicy", env, policy_kwargs={"net_arch": [8]}, seed=0)
    sac.save(tmp_path / "sac.zip")
    assert load_model(tmp_path / "sac.zip", allow_pickle=True).algorithm == "SAC"

    plain = TD3("MultiInputPolicy", env, policy_kwargs={"net_arch": [8]}, seed=0)  # no recorded env settings
    plain.save(tmp_path / "plain.zip")
    agent = load_model(tmp_path / "plain.zip", allow_pickle=True)
    assert agent.species is None and agent.move_settings()["max_displacement"] == 0.5  # the env default
    same_actions(plain, agent, observations)

    with pytest.raises(FileNotFoundError, match="No model at"):
        load_model(tmp_path / "missing.zip")
    (tmp_path / "junk.zip").write_text("not a zip")
    with pytest.raises(AgentFormatError, match="neither an SB3 model zip nor an agent folder"):
        load_model(tmp_path / "junk.zip")


def test_trained_species(env):
    model = mlp_td3(env)
    assert trained_species(model) == ("Al", "Fe")  # from the training env's dataset
    model.crystal_env_kwargs = {"structures": "random:count=3,atoms=2,seed=0"}
    model.env = None
    assert trained_species(model) is None  # random crystals: unknown, the calculator decides
    assert as_agent(model).species is None


def test_zips_are_not_unpickled_unless_allowed(tmp_path):
    marker = tmp_path / "code_ran"
    model = planted_zip(tmp_path / "model.zip", marker)
    with pytest.raises(PickleNotAllowedError, match="sb3-crystal convert"):
        load_model(model)
    assert not marker.exists()
    with pytest.raises(AgentFormatError, match="no policy class recorded"):
        load_model(model, allow_pickle=True)
    assert marker.exists()  # the danger is real: allowing the zip ran the planted code


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: TD3("MlpPolicy", "Pendulum-v1", policy_kwargs={"net_arch": [4]}), "Not a crystal agent"),
        (lambda: __import__("stable_baselines3").PPO("MlpPolicy", "Pendulum-v1", n_steps=8, batch_size=8), "not TD3 or SAC"),
    ],
    ids=["td3-pendulum", "ppo"],
)
def test_foreign_sb3_zips_give_one_format_error(make, message, tmp_path):
    make().save(tmp_path / "foreign.zip")
    with pytest.raises(AgentFormatError, match=message) as info:
        load_model(tmp_path / "foreign.zip", allow_pickle=True)
    assert str(tmp_path / "foreign.zip") in str(info.value) and "\n" not in str(info.value)


def test_the_training_calculator_is_recorded(tmp_path):
    emt_env = CrystalRelaxEnv(structures="Al-fcc", calculator="emt", max_steps=5)
    model = mlp_td3(emt_env)
    assert trained_calculator(model) == "emt" and as_agent(model).calculator == "emt"
    folder = save_agent(model, tmp_path / "agent")
    assert json.loads((folder / "settings.json").read_text())["calculator"] == "emt"
    assert load_agent(folder).calculator == "emt"
    # a folder written before the entry existed: the env settings' calculator
    settings = json.loads((folder / "settings.json").read_text())
    del settings["calculator"]
    (folder / "settings.json").write_text(json.dumps(settings))
    assert load_agent(folder).calculator == "emt"
    emt_env.close()
    # an object in the env kwargs is named by its class
    from ase.calculators.emt import EMT

    model.crystal_env_kwargs = {"calculator": EMT()}
    assert trained_calculator(model) == "ase.calculators.emt:EMT"


def test_check_calculator_warns_on_another_energy_surface(env):
    from ase.calculators.emt import EMT

    from sb3_crystal.calculators import make_calculator

    agent = as_agent(mlp_td3(env))
    assert agent.calculator == "lammps"
    lammps = make_calculator("lammps")
    # the same potential: LAMMPS or matscipy, named or built, the default file named explicitly
    for same in ("lammps", "LAMMPS", "matscipy", "lammps:AlFe_mm.eam.fs", lammps, make_calculator("matscipy")):
        assert calculator_mismatch(agent, same) is None, same
    for other in ("emt", EMT(), "ase.calculators.emt:EMT"):
        with pytest.warns(CalculatorMismatchWarning, match="trained with calculator 'lammps' but relaxes with"):
            assert "another energy surface" in check_calculator(agent, other)
    emt_agent = CrystalAgent(policy=agent.policy, n_max=2, calculator="emt")
    assert calculator_mismatch(emt_agent, EMT()) is None and calculator_mismatch(emt_agent, "ase.calculators.emt:EMT") is None
    assert "relaxes with 'lammps'" in calculator_mismatch(emt_agent, "lammps")
    unknown = CrystalAgent(policy=agent.policy, n_max=2)  # nothing recorded: nothing to compare
    assert calculator_mismatch(unknown, "emt") is None
    lammps.close()
