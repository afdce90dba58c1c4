"""``CrystalSubprocVecEnv``: SB3's ``SubprocVecEnv`` whose dead workers fail fast and which always closes.

SB3's parent process waits on a worker's pipe with a plain blocking ``recv``. When a worker dies (killed, out of
memory, a crash in the calculator), the parent gets a bare ``EOFError``/``BrokenPipeError`` naming no worker, or,
when another process still holds the worker's end of the pipe (with the ``fork`` start method every later worker
does), waits forever; ``close()`` then waits for replies that never come and joins processes without a timeout.

Here every reply is awaited with ``poll`` in short slices, checking between slices that the worker process is
alive; an exception raised inside a worker is sent back with its traceback before the worker exits; and
``close()`` terminates, then kills, what does not stop within its timeout. Failures raise
:class:`~sb3_crystal.vec_env.common.EnvWorkerError` naming the worker, its process, what it was doing and the
last structure it reported (``structure_index`` and ``episode_step`` of its last info).
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import gymnasium as gym
from stable_baselines3.common.vec_env import SubprocVecEnv, VecEnv
from stable_baselines3.common.vec_env.base_vec_env import CloudpickleWrapper, VecEnvObs, VecEnvStepReturn
from stable_baselines3.common.vec_env.subproc_vec_env import _worker

from sb3_crystal.vec_env.common import EnvWorkerError, worker_error


class _WorkerFailure:
    """What a worker sends back instead of a reply when its environment raised."""

    def __init__(self, error: BaseException):
        self.summary = f"{type(error).__name__}: {error}"
        self.traceback = traceback.format_exc()


def _reporting_worker(remote: Connection, parent_remote: Connection, env_fn_wrapper: CloudpickleWrapper) -> None:
    """SB3's worker loop; an exception from the environment goes back to the parent before the worker exits."""
    try:
        _worker(remote, parent_remote, env_fn_wrapper)
    except Exception as error:
        try:
            remote.send(_WorkerFailure(error))
        except OSError:
            pass
        raise


def _exit_description(exitcode: int | None) -> str:
    if exitcode is None:
        return "its pipe closed while the process still runs"
    if exitcode < 0:
        try:
            return f"killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


class _WorkerPipe:
    """The parent's end of one worker's pipe: ``send``/``recv`` that raise :class:`EnvWorkerError` instead of
    hanging or failing anonymously. Counts the replies still owed, so closing drains only those."""

    def __init__(self, connection: Connection, process: Any, env_index: int, owner: CrystalSubprocVecEnv):
        self.connection = connection
        self.process = process
        self.env_index = env_index
        self.owner = owner
        self.pending = 0
        self.command = "start"

    def _error(self, cause: str, detail: str = "") -> EnvWorkerError:
        return worker_error(
            f"SubprocVecEnv worker {self.env_index} (pid {self.process.pid})",
            self.env_index,
            self.command,
            cause,
            self.owner.last_infos[self.env_index],
            detail,
        )

    def _death(self) -> EnvWorkerError:
        self.process.join(timeout=1.0)  # so the exit code is known
        return self._error(f"died ({_exit_description(self.process.exitcode)})")

    def send(self, message: tuple[str, Any]) -> None:
        self.command = message[0]
        try:
            self.connection.send(message)
        except (OSError, EOFError):
            raise self._death() from None  # the OS error adds nothing to the message
        self.pending += 1

    def recv(self, timeout: float | None = -1.0) -> Any:
        """The next reply. ``timeout`` -1 means the owner's ``timeout``; ``None`` waits while the worker lives."""
        timeout = self.owner.timeout if timeout == -1.0 else timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not self.connection.poll(self.owner.poll_interval):
                if not self.process.is_alive():
                    if self.connection.poll(0):  # it replied (or closed its end) before dying
                        break
                    raise self._death()
                if deadline is not None and time.monotonic() > deadline:
                    raise self._error(f"sent no reply within {timeout:g} s (the process is alive)")
            reply = self.connection.recv()
        except (OSError, EOFError):
            raise self._death() from None  # the OS error adds nothing to the message
        self.pending -= 1
        if isinstance(reply, _WorkerFailure):
            raise self._error(f"raised {reply.summary}", f"Worker traceback:\n{reply.traceback}")
        return reply

    def close(self) -> None:
        self.connection.close()


class CrystalSubprocVecEnv(SubprocVecEnv):
    """SB3's ``SubprocVecEnv`` (one environment per process) that fails fast and closes without hanging.

    Every worker is built and asked for its spaces at construction, so an environment that cannot be built is
    reported there. A worker that dies, raises, or (with ``timeout``) stops answering raises
    :class:`~sb3_crystal.vec_env.common.EnvWorkerError` naming the worker index, its pid, the command and its last
    structure; :attr:`last_infos` holds each worker's last info (its current episode's). ``close()`` returns
    within about ``close_timeout`` seconds whatever the workers do.

    :param env_fns: functions that build the environments, one per worker.
    :param start_method: multiprocessing start method; default ``"forkserver"`` where available, else ``"spawn"``.
    :param poll_interval: seconds between liveness checks while waiting for a reply.
    :param timeout: longest wait for one reply from a live worker, seconds; ``None`` (default) waits as long as the
        worker lives (calculators can be slow).
    :param close_timeout: seconds ``close()`` lets the workers shut down before terminating them.
    """

    remotes: list[_WorkerPipe]  # type: ignore[assignment]

    def __init__(
        self,
        env_fns: list[Callable[[], gym.Env]],
        start_method: str | None = None,
        poll_interval: float = 0.1,
        timeout: float | None = None,
        close_timeout: float = 5.0,
    ):
        for name, value in (("poll_interval", poll_interval), ("close_timeout", close_timeout), ("timeout", timeout)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {value!r}")
        if not env_fns:
            raise ValueError("env_fns is empty: give at least one environment function")
        self.waiting = False
        self.closed = False
        self.poll_interval = float(poll_interval)
        self.timeout = None if timeout is None else float(timeout)
        self.close_timeout = float(close_timeout)
        self.last_infos: list[dict[str, Any]] = [{} for _ in env_fns]
        if start_method is None:
            start_method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        context = mp.get_context(start_method)
        self.processes = []
        self.remotes = []
        try:
            for index, env_fn in enumerate(env_fns):
                remote, work_remote = context.Pipe()
                process = context.Process(  # type: ignore[attr-defined]
                    target=_reporting_worker, args=(work_remote, remote, CloudpickleWrapper(env_fn)), daemon=True
                )
                process.start()
                work_remote.close()
                self.processes.append(process)
                self.remotes.append(_WorkerPipe(remote, process, index, self))
            for pipe in self.remotes:
                pipe.send(("get_spaces", None))
            all_spaces = [pipe.recv() for pipe in self.remotes]  # every worker built its environment
            observation_space, action_space = all_spaces[0]
            VecEnv.__init__(self, len(env_fns), observation_space, action_space)
        except BaseException:
            self.close()
            raise

    def step_wait(self) -> VecEnvStepReturn:
        observations, rewards, dones, infos = super().step_wait()
        for index, (info, done) in enumerate(zip(infos, dones, strict=True)):
            self.last_infos[index] = dict(self.reset_infos[index] if done else info)
        return observations, rewards, dones, infos

    def reset(self) -> VecEnvObs:
        observations = super().reset()
        for index, info in enumerate(self.reset_infos):
            self.last_infos[index] = dict(info)
        return observations

    def close(self) -> None:
        """Stop the workers: owed replies are drained, live workers asked to close, and whatever still runs after
        ``close_timeout`` seconds is terminated (then killed). Never raises for a dead worker."""
        if self.closed:
            return
        deadline = time.monotonic() + self.close_timeout
        for pipe in self.remotes:
            while pipe.pending > 0 and pipe.process.is_alive():
                try:
                    pipe.recv(timeout=max(deadline - time.monotonic(), 0.01))
                except EnvWorkerError:
                    break
            if pipe.process.is_alive():
                try:
                    pipe.connection.send(("close", None))
                except (OSError, EOFError):
                    pass
        for process in self.processes:
            process.join(timeout=max(deadline - time.monotonic(), 0.0))
        for process in self.processes:
            if process.is_alive():
                process.terminate()
                process.join(timeout=1.0)
            if process.is_alive():
                process.kill()
                process.join(timeout=1.0)
        for pipe in self.remotes:
            pipe.close()
        self.waiting = False
        self.closed = True
