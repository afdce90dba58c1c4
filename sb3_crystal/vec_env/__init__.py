"""Vectorised environments: subprocesses whose dead workers fail fast, and Ray actors for more than one machine.

:class:`RayVecEnv` needs the optional ``ray`` package (``pip install 'sb3-crystal[ray]'``); it is imported on first
use, so this package works without Ray.
"""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from sb3_crystal.vec_env.common import EnvWorkerError
from sb3_crystal.vec_env.subproc import CrystalSubprocVecEnv

#: The choices of rl-zoo style training's ``--vec-env``.
VEC_ENV_NAMES = ("dummy", "subproc", "ray")


def vec_env_class(name: str) -> type[VecEnv]:
    """The vectorised environment class for a ``--vec-env`` name.

    :param name: ``"dummy"`` (SB3's ``DummyVecEnv``, one process), ``"subproc"`` (:class:`CrystalSubprocVecEnv`)
        or ``"ray"`` (:class:`RayVecEnv`, needs Ray).
    """
    if name == "dummy":
        return DummyVecEnv
    if name == "subproc":
        return CrystalSubprocVecEnv
    if name == "ray":
        from sb3_crystal.vec_env.ray import RayVecEnv

        return RayVecEnv
    raise ValueError(f"Unknown vec env {name!r}: choose one of {', '.join(VEC_ENV_NAMES)}")


def __getattr__(name: str) -> Any:
    if name == "RayVecEnv":
        from sb3_crystal.vec_env.ray import RayVecEnv

        return RayVecEnv
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["VEC_ENV_NAMES", "CrystalSubprocVecEnv", "EnvWorkerError", "RayVecEnv", "vec_env_class"]
