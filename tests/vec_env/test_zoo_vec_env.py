"""rl-zoo style training's ``--vec-env``: the classes it selects, and a killed subprocess worker ending a train.py
run at once with a message naming the worker, its last checkpoint intact."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("rl_zoo3")

from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_crystal.algorithms import CrystalTD3
from sb3_crystal.callbacks.checkpoint import latest_checkpoint
from sb3_crystal.training.zoo import _select_vec_env
from sb3_crystal.vec_env import CrystalSubprocVecEnv, vec_env_class

REPO = Path(__file__).resolve().parents[2]


def test_vec_env_flag_selects_our_classes() -> None:
    args = ["--algo", "td3", "--vec-env", "subproc", "--seed", "0"]
    assert _select_vec_env(args) == (args, CrystalSubprocVecEnv)
    assert _select_vec_env(["--vec-env=subproc"]) == (["--vec-env", "subproc"], CrystalSubprocVecEnv)
    assert _select_vec_env(["--vec-env", "dummy"]) == (["--vec-env", "dummy"], None)
    assert _select_vec_env(["--algo", "td3"]) == (["--algo", "td3"], None)
    assert vec_env_class("dummy") is DummyVecEnv
    with pytest.raises(ValueError, match=r"'threads'.*dummy, subproc, ray"):
        vec_env_class("threads")


def test_vec_env_ray_becomes_dummy_for_rl_zoo_and_ray_vec_env_for_us() -> None:
    pytest.importorskip("ray")
    from sb3_crystal.vec_env.ray import RayVecEnv

    assert _select_vec_env(["--vec-env", "ray", "-n", "9"]) == (["--vec-env", "dummy", "-n", "9"], RayVecEnv)
    assert _select_vec_env(["--vec-env=ray"]) == (["--vec-env", "dummy"], RayVecEnv)


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _env_workers(train_pid: int) -> list[int]:
    """The environment workers of a train.py run: the children of its multiprocessing forkserver."""
    for child in _children(train_pid):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"multiprocessing.forkserver" in command:
            return _children(child)
    return []


def _gone(pid: int, wait: float = 5.0) -> bool:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the workers through /proc")
def test_train_py_with_subproc_envs_fails_fast_when_a_worker_is_killed(tmp_path: Path) -> None:
    config = tmp_path / "tiny.yml"
    hyperparams = {"policy": "MultiInputPolicy", "n_timesteps": 100000, "learning_starts": 10, "batch_size": 8}
    hyperparams |= {"buffer_size": 2000, "policy_kwargs": "dict(net_arch=[8])", "env_kwargs": {"max_steps": 10}}
    config.write_text(yaml.safe_dump({"CrystalRelax-v0": hyperparams}))
    logs = tmp_path / "logs"
    command = [sys.executable, str(REPO / "train.py"), "--algo", "td3", "--env", "CrystalRelax-v0", "--conf-file", str(config)]
    command += ["-f", str(logs), "--n-envs", "2", "--vec-env", "subproc", "--save-freq", "10", "--eval-freq", "-1"]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=tmp_path
    )
    checkpoints = logs / "td3" / "CrystalRelax-v0_1" / "checkpoints"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None and latest_checkpoint(checkpoints) is None:
            time.sleep(0.2)
        workers = _env_workers(process.pid)
        if process.poll() is not None or len(workers) != 2:
            returncode = process.poll()
            if returncode is None:
                os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"exit code {returncode}, workers {workers}; stderr: {process.communicate()[1][-3000:]}")
        os.kill(workers[-1], signal.SIGKILL)
        killed_at = time.monotonic()
        _, stderr = process.communicate(timeout=60)
        seconds_to_exit = time.monotonic() - killed_at
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    assert process.returncode != 0
    assert re.search(
        rf"EnvWorkerError: SubprocVecEnv worker [01] \(pid {workers[-1]}\) died \(killed by signal SIGKILL\)", stderr
    )
    assert "its last structure: structure_index=0" in stderr
    assert seconds_to_exit < 30, seconds_to_exit  # not a hang: the error ends the run
    assert all(_gone(pid) for pid in workers)  # the other worker was stopped too
    model = CrystalTD3.load(latest_checkpoint(checkpoints) / "model.zip")
    assert model.num_timesteps >= 10


def test_vec_env_ray_without_ray_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    monkeypatch.delitem(sys.modules, "sb3_crystal.vec_env.ray", raising=False)
    with pytest.raises(SystemExit, match=r"RayVecEnv needs Ray: pip install 'sb3-crystal\[ray\]'"):
        _select_vec_env(["--vec-env", "ray"])
