"""``RayVecEnv``: an SB3 ``VecEnv`` whose environments live in Ray actors, on this machine or across a cluster.

Each environment is built inside its own actor (one Ray worker process, scheduled wherever the cluster has a free
CPU); the learner stays in the driver. A step sends every action at once (``step_async``) and gathers the replies
(``step_wait``); an episode that ends is reset inside its actor, with the final observation in
``info["terminal_observation"]``, exactly as SB3's ``DummyVecEnv`` and ``SubprocVecEnv`` do, so the same seeds give
the same observations, rewards and dones.

A dead actor (killed, its node lost, out of memory) raises :class:`~sb3_crystal.vec_env.common.EnvWorkerError`
naming the environment index, the actor's pid and node, the command, and the last structure it reported; so does
an exception inside ``step``/``reset`` and, with ``timeout``, an actor that stops answering.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.env_util import is_wrapped
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn
from stable_baselines3.common.vec_env.patch_gym import _patch_env

from sb3_crystal.vec_env.common import EnvWorkerError, stack_observations, worker_error, writable_copy

try:
    import ray
    from ray.exceptions import RayError, RayTaskError
except ImportError as err:  # pragma: no cover - depends on the installation
    raise ImportError("RayVecEnv needs Ray: pip install 'sb3-crystal[ray]'") from err


class _EnvRunner:
    """One environment inside a Ray actor; the commands of SB3's subprocess worker, as methods."""

    def __init__(self, env_fn: Callable[[], gym.Env]):
        self.env = _patch_env(env_fn())

    def describe(self) -> tuple[gym.Space, gym.Space, int, str]:
        return self.env.observation_space, self.env.action_space, os.getpid(), ray.util.get_node_ip_address()

    def reset(self, seed: int | None, options: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return self.env.reset(seed=seed, **({"options": options} if options else {}))

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, dict[str, Any], dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        done = terminated or truncated
        info["TimeLimit.truncated"] = truncated and not terminated
        reset_info: dict[str, Any] = {}
        if done:
            info["terminal_observation"] = observation
            observation, reset_info = self.env.reset()
        return observation, reward, done, info, reset_info

    def render(self) -> Any:
        return self.env.render()

    def env_method(self, name: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        return self.env.get_wrapper_attr(name)(*args, **kwargs)

    def get_attr(self, name: str) -> Any:
        return self.env.get_wrapper_attr(name)

    def has_attr(self, name: str) -> bool:
        try:
            self.env.get_wrapper_attr(name)
        except AttributeError:
            return False
        return True

    def set_attr(self, name: str, value: Any) -> None:
        setattr(self.env, name, value)

    def is_wrapped(self, wrapper_class: type[gym.Wrapper]) -> bool:
        return is_wrapped(self.env, wrapper_class)

    def close(self) -> None:
        self.env.close()


_EnvActor = ray.remote(_EnvRunner)


class RayVecEnv(VecEnv):
    """Vectorised environment with one Ray actor per environment (SB3 ``VecEnv`` semantics).

    Connects to Ray when it is not initialised yet: ``address=None`` finds a running cluster (the ``RAY_ADDRESS``
    environment variable, or the cluster started on this machine with ``ray start``) and otherwise starts a local
    one; ``"auto"`` insists on a running cluster. An initialised Ray is used as it is (``address`` and
    ``init_kwargs`` are then ignored). Closing kills the actors and leaves Ray running: other vectorised
    environments (an evaluation one) may share it.

    The environment functions are sent to the actors with cloudpickle: what they import must be installed on every
    node, and files they write (``Monitor`` logs) land on the node that runs them.

    :param env_fns: functions that build the environments, one per actor.
    :param address: Ray cluster address (``"host:6379"``, ``"ray://host:10001"``, ``"auto"``, ``"local"``), used
        only when Ray is not initialised.
    :param num_cpus_per_env: CPUs Ray reserves for each actor (fractions allowed); an actor that needs more than
        the cluster has free waits, up to ``start_timeout``.
    :param actor_options: more Ray actor options (``resources``, ``num_gpus``, ``scheduling_strategy``,
        ``runtime_env``, ...).
    :param init_kwargs: keyword arguments of ``ray.init`` when this call starts or joins Ray (``num_cpus``, ...).
    :param timeout: longest wait for the replies of one step or call, seconds; ``None`` (default) waits as long
        as the actors live.
    :param start_timeout: longest wait for every actor to be placed and to build its environment, seconds.
    :param close_timeout: seconds ``close()`` lets the environments close before the actors are killed.
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], gym.Env]],
        address: str | None = None,
        num_cpus_per_env: float = 1.0,
        actor_options: dict[str, Any] | None = None,
        init_kwargs: dict[str, Any] | None = None,
        timeout: float | None = None,
        start_timeout: float = 600.0,
        close_timeout: float = 5.0,
    ):
        if not env_fns:
            raise ValueError("env_fns is empty: give at least one environment function")
        if not num_cpus_per_env >= 0:
            raise ValueError(f"num_cpus_per_env must be ≥ 0, got {num_cpus_per_env!r}")
        for name, value in (("timeout", timeout), ("start_timeout", start_timeout), ("close_timeout", close_timeout)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {value!r}")
        self.timeout = None if timeout is None else float(timeout)
        self.close_timeout = float(close_timeout)
        self.closed = False
        self.last_infos: list[dict[str, Any]] = [{} for _ in env_fns]
        self._pending: list[Any] | None = None
        self._commands = ["start"] * len(env_fns)
        self._where: list[str] = ["starting"] * len(env_fns)
        if not ray.is_initialized():
            ray.init(address=address, **(init_kwargs or {}))
        actor_class = _EnvActor.options(num_cpus=num_cpus_per_env, **(actor_options or {}))
        self.actors = [actor_class.remote(env_fn) for env_fn in env_fns]
        try:
            refs = [actor.describe.remote() for actor in self.actors]
            described = self._gather(refs, range(len(env_fns)), "start", start_timeout)
            self.pids = [pid for _, _, pid, _ in described]
            self._where = [f"pid {pid} on {node}" for _, _, pid, node in described]
            observation_space, action_space = described[0][:2]
            super().__init__(len(env_fns), observation_space, action_space)
        except BaseException:
            self._kill_actors()  # no environment to close gracefully: some were never built
            raise

    # -- gathering replies ----------------------------------------------------------------------------------------
    def _error(self, index: int, cause: str, detail: str = "") -> EnvWorkerError:
        what = f"RayVecEnv env {index} (actor {self._where[index]})"
        return worker_error(what, index, self._commands[index], cause, self.last_infos[index], detail)

    def _gather(self, refs: list[Any], indices: Iterable[int], command: str, timeout: float | None = -1.0) -> list[Any]:
        """The replies of ``refs`` (one per index), with errors turned into :class:`EnvWorkerError`.

        Exceptions raised by the environment in other commands than ``start``/``reset``/``step`` keep their type
        (Ray re-raises them as subclasses of the original), as DummyVecEnv would raise them.
        """
        indices = list(indices)
        for index in indices:
            self._commands[index] = command
        timeout = self.timeout if timeout == -1.0 else timeout
        try:
            return ray.get(refs, timeout=timeout)
        except RayError:
            pass
        # Something failed: find the first environment at fault, in index order.
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        ready_set = set(ready)
        for index, ref in zip(indices, refs, strict=True):
            if ref not in ready_set:
                continue
            try:
                ray.get(ref)
            except RayTaskError as err:
                if command not in ("start", "reset", "step"):
                    raise
                cause = err.cause if err.cause is not None else err
                raise self._error(index, f"raised {type(cause).__name__}: {cause}", str(err)) from None
            except RayError as err:
                if getattr(err, "actor_init_failed", False):
                    raise self._error(index, "could not build its environment", str(err)) from None
                raise self._error(index, f"died or is unreachable ({type(err).__name__})", str(err)) from None
        late = [i for i, ref in zip(indices, refs, strict=True) if ref not in ready_set]
        detail = ""
        if command == "start":
            detail = (
                "An actor waits until a node has the resources it asks for (num_cpus_per_env, actor_options); "
                f"free now: {ray.available_resources()}"
            )
        raise self._error(late[0] if late else indices[0], f"sent no reply within {timeout} s", detail)

    def _target(self, indices: VecEnvIndices) -> list[int]:
        return list(self._get_indices(indices))

    # -- VecEnv API -----------------------------------------------------------------------------------------------
    def reset(self) -> VecEnvObs:
        refs = [actor.reset.remote(self._seeds[i], self._options[i]) for i, actor in enumerate(self.actors)]
        results = self._gather(refs, range(self.num_envs), "reset")
        observations = [observation for observation, _ in results]
        self.reset_infos = [info for _, info in results]
        self.last_infos = [dict(info) for info in self.reset_infos]
        self._reset_seeds()
        self._reset_options()
        return stack_observations(observations, self.observation_space)

    def step_async(self, actions: np.ndarray) -> None:
        self._pending = [actor.step.remote(action) for actor, action in zip(self.actors, actions, strict=True)]

    def step_wait(self) -> VecEnvStepReturn:
        if self._pending is None:
            raise RuntimeError("step_wait() without step_async(): nothing to wait for")
        refs, self._pending = self._pending, None
        results = self._gather(refs, range(self.num_envs), "step")
        observations, rewards, dones, infos = [], np.zeros(self.num_envs, np.float32), np.zeros(self.num_envs, bool), []
        for index, (observation, reward, done, info, reset_info) in enumerate(results):
            observations.append(observation)
            rewards[index], dones[index] = reward, done
            if done:
                info["terminal_observation"] = writable_copy(info["terminal_observation"])
                self.reset_infos[index] = reset_info
            infos.append(info)
            self.last_infos[index] = dict(reset_info if done else info)
        return stack_observations(observations, self.observation_space), rewards, dones, infos

    def close(self) -> None:
        """Close the environments (waiting at most ``close_timeout`` seconds), then kill the actors. Never raises for
        a dead actor; Ray itself keeps running."""
        if self.closed:
            return
        self.closed = True
        refs = [actor.close.remote() for actor in self.actors]
        if self._pending is not None:
            refs += self._pending
            self._pending = None
        ray.wait(refs, num_returns=len(refs), timeout=self.close_timeout)
        self._kill_actors()

    def _kill_actors(self) -> None:
        self.closed = True
        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except (RayError, ValueError):
                pass

    def get_images(self) -> Sequence[np.ndarray | None]:
        if self.render_mode != "rgb_array":
            warnings.warn(f"The render mode is {self.render_mode}, but get_images() assumes 'rgb_array'.", stacklevel=2)
            return [None] * self.num_envs
        return self._gather([actor.render.remote() for actor in self.actors], range(self.num_envs), "render")

    def has_attr(self, attr_name: str) -> bool:
        return all(self._gather([actor.has_attr.remote(attr_name) for actor in self.actors], range(self.num_envs), "has_attr"))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        targets = self._target(indices)
        return self._gather([self.actors[i].get_attr.remote(attr_name) for i in targets], targets, "get_attr")

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        targets = self._target(indices)
        self._gather([self.actors[i].set_attr.remote(attr_name, value) for i in targets], targets, "set_attr")

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        targets = self._target(indices)
        refs = [self.actors[i].env_method.remote(method_name, method_args, method_kwargs) for i in targets]
        return self._gather(refs, targets, f"env_method {method_name}")

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        targets = self._target(indices)
        return self._gather([self.actors[i].is_wrapped.remote(wrapper_class) for i in targets], targets, "env_is_wrapped")
