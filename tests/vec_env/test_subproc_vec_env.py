"""CrystalSubprocVecEnv: a dead, failing or silent worker raises an error naming it, and close() never hangs."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import time

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_crystal.envs import CrystalRelaxEnv
from sb3_crystal.vec_env import CrystalSubprocVecEnv, EnvWorkerError

MAKE_B2 = functools.partial(CrystalRelaxEnv, structures="AlFe-B2", calculator="lammps")


def _actions(env, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (env.num_envs, *env.action_space.shape)).astype(np.float32)


def _close_seconds(env) -> float:
    start = time.monotonic()
    env.close()
    return time.monotonic() - start


@pytest.mark.parametrize("victim", [0, 1])
def test_killed_worker_names_itself_and_close_returns(victim: int) -> None:
    # fork: every worker shares the parent's memory, and it is the start method with which SB3's own SubprocVecEnv
    # waits forever for a killed worker (another process keeps the worker's end of the pipe open).
    env = CrystalSubprocVecEnv([MAKE_B2, MAKE_B2], start_method="fork", close_timeout=2.0)
    env.seed(3)
    env.reset()
    for i in range(3):
        env.step(_actions(env, i))
    assert env.last_infos[victim]["episode_step"] == 3
    pid = env.processes[victim].pid
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(EnvWorkerError) as caught:
        env.step(_actions(env))
    message = str(caught.value)
    assert f"worker {victim} (pid {pid})" in message
    assert "SIGKILL" in message and "'step'" in message
    assert "structure_index=0" in message and "episode_step=3" in message
    assert caught.value.env_index == victim and caught.value.last_info["structure_index"] == 0
    assert _close_seconds(env) < 5.0
    assert not any(process.is_alive() for process in env.processes)
    env.close()  # idempotent


def test_worker_killed_between_step_async_and_step_wait() -> None:
    # The step was sent (step_async) when the worker died: step_wait fails, close() neither waits for the reply
    # nor raises.
    env = CrystalSubprocVecEnv([MAKE_B2, MAKE_B2], start_method="fork", close_timeout=2.0)
    env.reset()
    env.step_async(_actions(env))
    os.kill(env.processes[1].pid, signal.SIGKILL)
    with pytest.raises(EnvWorkerError, match="worker 1"):
        env.step_wait()
    assert _close_seconds(env) < 5.0


def test_exception_inside_worker_comes_back_with_its_traceback() -> None:
    env = CrystalSubprocVecEnv([MAKE_B2, MAKE_B2], start_method="fork", close_timeout=2.0)
    env.set_options([{"structure_index": 99}, {}])
    with pytest.raises(EnvWorkerError) as caught:
        env.reset()
    message = str(caught.value)
    assert "worker 0" in message and "raised IndexError" in message and "structure_index 99 out of range" in message
    assert "Worker traceback" in message and "crystal_relax.py" in message
    assert _close_seconds(env) < 5.0


def test_silent_worker_times_out_and_is_killed_on_close() -> None:
    env = CrystalSubprocVecEnv([MAKE_B2, MAKE_B2], start_method="fork", timeout=1.0, close_timeout=1.0)
    env.reset()
    os.kill(env.processes[1].pid, signal.SIGSTOP)  # alive, never answers
    try:
        with pytest.raises(EnvWorkerError, match=r"worker 1 .* sent no reply within 1 s"):
            env.step(_actions(env))
        assert _close_seconds(env) < 6.0
        assert not env.processes[1].is_alive()
    finally:
        if env.processes[1].is_alive():
            os.kill(env.processes[1].pid, signal.SIGKILL)


def test_steps_match_dummy_vec_env() -> None:
    # Same seeds, same actions: identical observations, rewards, dones and infos as DummyVecEnv.
    subproc = CrystalSubprocVecEnv([MAKE_B2, MAKE_B2], start_method="fork")
    dummy = DummyVecEnv([MAKE_B2, MAKE_B2])
    try:
        for env in (subproc, dummy):
            env.seed(11)
        obs_s, obs_d = subproc.reset(), dummy.reset()
        for i in range(5):
            for key in obs_d:
                np.testing.assert_array_equal(obs_s[key], obs_d[key])
            actions = _actions(dummy, i)
            obs_s, rew_s, done_s, info_s = subproc.step(actions)
            obs_d, rew_d, done_d, info_d = dummy.step(actions)
            # DummyVecEnv keeps rewards in a float32 buffer, SB3's SubprocVecEnv stacks the envs' floats
            np.testing.assert_array_equal(rew_s.astype(np.float32), rew_d)
            np.testing.assert_array_equal(done_s, done_d)
            assert [info["fmax"] for info in info_s] == [info["fmax"] for info in info_d]
        assert subproc.env_method("get_settings") == dummy.env_method("get_settings")
    finally:
        subproc.close()
        dummy.close()


def test_bad_arguments_fail_before_any_worker_starts() -> None:
    with pytest.raises(ValueError, match="timeout"):
        CrystalSubprocVecEnv([MAKE_B2], timeout=0)
    with pytest.raises(ValueError, match="env_fns"):
        CrystalSubprocVecEnv([])


class _PipeHoldingEnv(gym.Env):
    """A tiny environment whose reset starts a child process that inherits every file descriptor, as a calculator
    started from a worker can: the worker's end of the pipe stays open after the worker dies."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.child = subprocess.Popen(["sleep", "30"], close_fds=False)
        return np.zeros(1, np.float32), {"child_pid": self.child.pid}

    def step(self, action):
        return np.zeros(1, np.float32), 0.0, False, False, {}


def test_killed_worker_whose_pipe_another_process_holds() -> None:
    # No end-of-file ever reaches the parent: only the liveness check finds the dead worker.
    env = CrystalSubprocVecEnv([_PipeHoldingEnv, _PipeHoldingEnv], start_method="fork", close_timeout=2.0)
    env.reset()
    children = [info["child_pid"] for info in env.reset_infos]
    try:
        os.kill(env.processes[1].pid, signal.SIGKILL)
        with pytest.raises(EnvWorkerError, match=r"worker 1 .*SIGKILL.*'step'"):
            env.step(_actions(env))
        assert _close_seconds(env) < 5.0
    finally:
        for pid in children:
            os.kill(pid, signal.SIGKILL)
