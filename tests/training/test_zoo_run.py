"""train.py behaviour around a run: merged --env-kwargs, --eval-freq for the relaxation metrics, no empty run
folders after a failure, and a clear -i error that points at the last good checkpoint."""

import json
import re
import subprocess

import pytest
import yaml

pytest.importorskip("rl_zoo3")

from sb3_crystal import cli
from sb3_crystal.callbacks.checkpoint import RESUMED_FROM, complete_checkpoints
from sb3_crystal.envs.crystal_relax import CrystalRelaxEnv
from sb3_crystal.training.zoo import TrainingError, main, train, zoo_config


def write_config(path, n_timesteps=12, eval_freq=1000, env_kwargs=None):
    config = {
        "CrystalRelax-v0": {
            "policy": "MultiInputPolicy",
            "n_timesteps": n_timesteps,
            "learning_starts": 8,
            "batch_size": 4,
            "buffer_size": 500,
            "policy_kwargs": "dict(net_arch=[4])",
            "env_kwargs": env_kwargs if env_kwargs is not None else {"max_steps": 5, "epsilon": 0.05, "beta": 0.3},
            "callback": [
                {"sb3_crystal.callbacks.RelaxationEvalCallback": {"eval_freq": eval_freq, "n_episodes": 1, "max_steps": 3}}
            ],
        }
    }
    path.write_text(yaml.safe_dump(config))
    return path


def common_args(tmp_path, config):
    return ["--algo", "td3", "--env", "CrystalRelax-v0", "--conf-file", str(config), "-f", str(tmp_path / "logs")]


def dead_pid():
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_package_ships_the_zoo_configs():
    for algo in ("td3", "crystal_td3", "sac", "td3bc"):
        assert zoo_config(algo) is not None, algo
        assert "CrystalRelax-v0" in yaml.safe_load(zoo_config(algo).read_text())
    assert zoo_config("ppo") is None


def test_env_kwargs_merge_into_the_config_and_are_printed(tmp_path, monkeypatch, capsys):
    built = []
    original_init = CrystalRelaxEnv.__init__

    def recording_init(self, *args, **kwargs):
        built.append(kwargs)
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(CrystalRelaxEnv, "__init__", recording_init)
    config = write_config(tmp_path / "tiny.yml")
    train([*common_args(tmp_path, config), "--env-kwargs", "epsilon:0.1", "--eval-freq", "-1", "--seed", "0"])
    expected = {"max_steps": 5, "epsilon": 0.1, "beta": 0.3}
    assert built and built[0] == expected  # the training env: the config's β and max_steps kept
    saved = (tmp_path / "logs/td3/CrystalRelax-v0_1/CrystalRelax-v0/config.yml").read_text()
    assert dict(yaml.load(saved, Loader=yaml.UnsafeLoader))["env_kwargs"] == expected  # rl-zoo's OrderedDict
    out = capsys.readouterr().out
    assert "env_kwargs: {'beta': 0.3, 'epsilon': 0.1, 'max_steps': 5}" in out
    assert "hyperparameters: {" in out and "'batch_size': 4" in out and "'learning_starts': 8" in out


def test_relaxation_metrics_follow_eval_freq(tmp_path, capsys):
    config = write_config(tmp_path / "tiny.yml", n_timesteps=12, eval_freq=1000)
    config_data = yaml.safe_load(config.read_text())
    config_data["CrystalRelax-v0"]["callback"][0]["sb3_crystal.callbacks.RelaxationEvalCallback"]["verbose"] = 1
    config.write_text(yaml.safe_dump(config_data))
    train([*common_args(tmp_path, config), "--eval-freq", "4", "--eval-episodes", "1", "--seed", "0"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[eval] t=")]
    assert [line.split()[1] for line in lines] == ["t=4", "t=8", "t=12"]  # not the config's 1000


def test_failed_run_leaves_no_run_folder(tmp_path):
    config = write_config(tmp_path / "tiny.yml", env_kwargs={"max_steps": 5, "beta": -1.0})
    with pytest.raises(ValueError, match="beta"):
        train([*common_args(tmp_path, config), "--seed", "0"])
    assert list((tmp_path / "logs" / "td3").iterdir()) == []


def test_resume_killed_before_its_first_checkpoint_points_at_the_last_good_one(tmp_path, capsys):
    config = write_config(tmp_path / "tiny.yml")
    train([*common_args(tmp_path, config), "--save-freq", "6", "--eval-freq", "-1", "--seed", "0"])
    first = tmp_path / "logs/td3/CrystalRelax-v0_1/checkpoints"
    good = complete_checkpoints(first)[-1]
    stale = first / f".tmp-{dead_pid()}-step_000000000018"  # a write killed mid-way
    stale.mkdir()
    (stale / "model.zip").write_bytes(b"partial")
    # a resumed run that saves no checkpoint (as if killed before its first one)
    train([*common_args(tmp_path, config), "-i", str(first / "latest/model.zip"), "-n", "14", "--eval-freq", "-1"])
    assert not stale.exists()  # the source run's stale temporary folder is cleaned at the resume
    second = tmp_path / "logs/td3/CrystalRelax-v0_2/checkpoints"
    assert complete_checkpoints(second) == [] and not (second / "latest").exists()
    assert json.loads((second / RESUMED_FROM).read_text())["checkpoint"] == str(good.resolve())

    missing = str(second / "latest/model.zip")
    with pytest.raises(TrainingError, match=re.escape(f"last good checkpoint is {good.resolve()}")):
        train([*common_args(tmp_path, config), "-i", missing])
    assert main([*common_args(tmp_path, config), "-i", missing]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"train.py: error: -i {missing}: no such model file; the last good checkpoint is {good.resolve()} " + (
        f"(resume with -i {good.resolve() / 'model.zip'})"
    )
    assert cli.main(["train", *common_args(tmp_path, config), "-i", missing]) == 2
    assert "the last good checkpoint is" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "logs/td3").iterdir()) == ["CrystalRelax-v0_1", "CrystalRelax-v0_2"]


def test_trained_agent_that_is_no_model_file(tmp_path):
    config = write_config(tmp_path / "tiny.yml")
    with pytest.raises(TrainingError, match="no such model file, and no complete checkpoint beside it"):
        train([*common_args(tmp_path, config), "-i", str(tmp_path / "nothing.zip")])
    with pytest.raises(TrainingError, match=r"not a \.zip file"):
        train([*common_args(tmp_path, config), "-i", str(config)])
    assert not (tmp_path / "logs").exists()
