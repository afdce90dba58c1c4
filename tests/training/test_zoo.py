"""The rl-zoo routes: train.py with checkpoints, resume after SIGKILL, TensorBoard tags, plain rl_zoo3.train."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("rl_zoo3")

from sb3_crystal.algorithms import CrystalTD3
from sb3_crystal.callbacks.checkpoint import complete_checkpoints, latest_checkpoint
from sb3_crystal.training import train

REPO = Path(__file__).resolve().parents[2]
CURRICULUM = [
    {"reward": "hybrid", "reward_weights": [1.0, 0.0, 0.5], "epsilon": 0.3, "target_steps": 100, "min_success": 0.0},
    {"reward": "step", "epsilon": 0.05},
]


def tiny_config(path: Path, n_timesteps: int = 60) -> Path:
    config = {
        "CrystalRelax-v0": {
            "policy": "MultiInputPolicy",
            "n_timesteps": n_timesteps,
            "learning_starts": 10,
            "batch_size": 8,
            "buffer_size": 2000,
            "policy_kwargs": "dict(net_arch=[8])",
            "state_noise": {"level": 0.2},
            "env_kwargs": {"max_steps": 10, "epsilon": 0.05},
            "callback": [
                {
                    "sb3_crystal.callbacks.RelaxationEvalCallback": {
                        "eval_freq": 20,
                        "n_episodes": 2,
                        "max_steps": 5,
                        "curriculum": CURRICULUM,
                    }
                }
            ],
        }
    }
    path.write_text(yaml.safe_dump(config))
    return path


def zoo_args(config: Path, logs: Path, *extra: str) -> list[str]:
    """rl-zoo's arguments for a TD3 run of ``CrystalRelax-v0`` with the config file ``config``, logging into ``logs``."""
    return ["--algo", "td3", "--env", "CrystalRelax-v0", "--conf-file", str(config), "-f", str(logs), *extra]


def run_folder(logs: Path, run: int = 1) -> Path:
    """The folder of rl-zoo's ``run``-th TD3 run of ``CrystalRelax-v0`` in ``logs``."""
    return logs / "td3" / f"CrystalRelax-v0_{run}"


def saved_model(logs: Path, run: int = 1) -> Path:
    """The model file rl-zoo saves at the end of that run."""
    return run_folder(logs, run) / "CrystalRelax-v0.zip"


def event_tags(folder: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for events in folder.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    return tags


def test_train_writes_tensorboard_metrics_and_checkpoints_then_resumes(tmp_path):
    config = tiny_config(tmp_path / "tiny.yml")
    common = zoo_args(config, tmp_path / "logs")
    train([*common, "-tb", str(tmp_path / "tb"), "--save-freq", "20", "--seed", "0"])
    run = run_folder(tmp_path / "logs")
    checkpoints = complete_checkpoints(run / "checkpoints")
    assert [c.name for c in checkpoints] == ["step_000000000040", "step_000000000060"]  # keep=2
    assert (run / "checkpoints" / "latest").resolve() == checkpoints[-1].resolve()
    assert {"model.zip", "replay_buffer.pkl", "rng_state.json", "checkpoint.json"} <= {
        p.name for p in checkpoints[-1].iterdir()
    }

    tags = event_tags(tmp_path / "tb")
    for tag in [
        "relaxation/discounted_return",
        "relaxation/full_return",
        "relaxation/final_fmax",
        "relaxation/relaxation_steps",
        "relaxation/success_rate",
        "relaxation/force_calls",
        "relaxation/normalised_last_step",
        "curriculum/stage",
        "train/actor_loss",
        "train/critic_loss",
        "rollout/ep_rew_mean",
    ]:
        assert tag in tags, tag

    first = CrystalTD3.load(checkpoints[-1] / "model.zip")
    assert first.num_timesteps == 60 and first.curriculum_stage == 1
    train([*common, "-i", str(run / "checkpoints" / "latest" / "model.zip"), "-n", "100", "--save-freq", "20", "--seed", "0"])
    resumed_run = run_folder(tmp_path / "logs", run=2)
    final = CrystalTD3.load(saved_model(tmp_path / "logs", run=2))
    assert final.num_timesteps == 100  # -n is the total budget: 40 more steps
    assert final.curriculum_stage == 1
    final.load_replay_buffer(complete_checkpoints(resumed_run / "checkpoints")[-1] / "replay_buffer.pkl")
    assert final.replay_buffer.pos == 100  # the buffer continued from 60


def test_sigkill_mid_run_keeps_a_loadable_checkpoint_and_resume_finishes(tmp_path):
    config = tiny_config(tmp_path / "tiny.yml", n_timesteps=5000)
    logs = tmp_path / "logs"
    command = [sys.executable, str(REPO / "train.py"), *zoo_args(config, logs, "--save-freq", "10", "--seed", "1")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoints_dir = run_folder(logs) / "checkpoints"
    try:
        deadline = time.time() + 120
        while time.time() < deadline and process.poll() is None:
            newest = latest_checkpoint(checkpoints_dir)
            if newest is not None and int(newest.name.removeprefix("step_")) >= 40:
                break  # several checkpoints written: later ones overwrite links and delete old folders
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be killed"
        os.killpg(process.pid, signal.SIGKILL)  # mid-run, possibly mid-write
    finally:
        process.wait(timeout=30)
    latest = (checkpoints_dir / "latest").resolve()
    assert (latest / "checkpoint.json").is_file()
    model = CrystalTD3.load(latest / "model.zip")
    model.load_replay_buffer(latest / "replay_buffer.pkl")
    # saved from the step callback, which SB3 runs just before storing that step's transition
    assert 40 <= model.num_timesteps < 5000
    assert model.replay_buffer.pos in (model.num_timesteps - 1, model.num_timesteps)
    budget = model.num_timesteps + 20
    train(zoo_args(config, logs, "--seed", "1", "-i", str(checkpoints_dir / "latest" / "model.zip"), "-n", str(budget)))
    assert CrystalTD3.load(saved_model(logs, run=2)).num_timesteps == budget


def test_plain_rl_zoo_route_with_the_package_yaml(tmp_path):
    config = tiny_config(tmp_path / "tiny.yml", n_timesteps=30)
    arguments = zoo_args(config, tmp_path / "logs", "--gym-packages", "sb3_crystal", "--seed", "0")
    result = subprocess.run([sys.executable, "-m", "rl_zoo3.train", *arguments], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    model = CrystalTD3.load(saved_model(tmp_path / "logs"))
    assert model.num_timesteps == 30 and model.state_noise.level == 0.2  # state noise reached rl-zoo's td3


def test_n_envs_flag_with_subprocess_envs(tmp_path):
    config = tiny_config(tmp_path / "tiny.yml", n_timesteps=40)
    train(zoo_args(config, tmp_path / "logs", "--n-envs", "2", "--vec-env", "subproc", "--seed", "0"))
    model = CrystalTD3.load(saved_model(tmp_path / "logs"))
    assert model.n_envs == 2 and model.num_timesteps >= 40
