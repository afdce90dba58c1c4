"""Every experiment of zoo_configs/*.yml builds: environment, algorithm, policy and callbacks."""

from pathlib import Path

import gymnasium as gym
import pytest
import yaml

pytest.importorskip("rl_zoo3")
from rl_zoo3.utils import get_callback_list

import sb3_crystal  # noqa: F401 - registers the env ids and policy names
from sb3_crystal.envs import EXPERIMENT_ENVS
from sb3_crystal.training.zoo import ZOO_ALGOS

CONFIGS = Path(__file__).resolve().parents[2] / "zoo_configs"
# rl-zoo's own keys, consumed before the algorithm is built
ZOO_KEYS = {"n_timesteps", "normalize", "env_kwargs", "callback", "n_envs", "noise_type", "noise_std", "policy"}
SLOW = {"CrystalRelaxRandomAlFe-v0"}  # relaxes 120 random cells with Hessians the first time


def entries():
    for algo in ("td3", "sac", "td3bc"):
        for env_id, hyperparams in yaml.safe_load((CONFIGS / f"{algo}.yml").read_text()).items():
            yield pytest.param(algo, env_id, hyperparams, id=f"{algo}-{env_id}")


def test_every_experiment_env_has_an_entry_in_td3_yml():
    assert set(yaml.safe_load((CONFIGS / "td3.yml").read_text())) == set(EXPERIMENT_ENVS)


@pytest.mark.parametrize(("algo", "env_id", "hyperparams"), list(entries()))
def test_entry_builds(algo, env_id, hyperparams):
    assert hyperparams.get("normalize") is False  # per-axis normalisation would break equivariance
    callbacks = get_callback_list({"callback": hyperparams.get("callback", [])})
    assert callbacks, "every experiment logs relaxation metrics"
    if env_id in SLOW:
        return
    env = gym.make(env_id, **hyperparams["env_kwargs"])
    kwargs = {k: v for k, v in hyperparams.items() if k not in ZOO_KEYS}
    if "demonstrations" in kwargs:  # a few reference moves and one pretraining epoch are enough to build
        kwargs.update(demonstrations=8, pretrain_epochs=1, verbose=0)
    model = ZOO_ALGOS[algo](hyperparams["policy"], env, **kwargs)
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(action)
