"""rl-zoo integration: our algorithms and samplers in rl-zoo's tables, and an ExperimentManager with
crash-safe checkpoints and resumable runs.

Two routes (see docs/training.md):

- ``python train.py ...`` / ``sb3-crystal train ...``: rl-zoo's ``train()`` with :class:`CrystalExperimentManager`
  (atomic checkpoints with replay buffer and RNG state, resume that continues timesteps and curriculum,
  ``--n-envs``, crystal hyperparameter samplers for ``-optimize``).
- ``python -m rl_zoo3.train --gym-packages sb3_crystal ...``: plain rl-zoo. Importing ``sb3_crystal`` there maps
  rl-zoo's ``td3``/``sac`` to :class:`~sb3_crystal.algorithms.CrystalTD3`/``CrystalSAC`` (identical to TD3/SAC
  unless ``state_noise``/``greedy`` are set), so the same YAML files work; checkpoints are rl-zoo's own.
"""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import CheckpointCallback
from stable_baselines3.common.vec_env import VecEnv

from sb3_crystal.algorithms import CrystalSAC, CrystalTD3, CrystalTD3BC
from sb3_crystal.callbacks.checkpoint import RNG_FILE, CrystalCheckpointCallback, set_rng_state
from sb3_crystal.vec_env import vec_env_class

#: Where our algorithms go in rl-zoo's ALGOS table.
ZOO_ALGOS = {
    "td3": CrystalTD3,
    "sac": CrystalSAC,
    "td3bc": CrystalTD3BC,
    "crystal_td3": CrystalTD3,
    "crystal_sac": CrystalSAC,
    "crystal_td3bc": CrystalTD3BC,
}


def register_with_zoo() -> None:
    """Put :data:`ZOO_ALGOS` into rl-zoo's algorithm table (idempotent)."""
    from rl_zoo3 import utils as zoo_utils

    zoo_utils.ALGOS.update(ZOO_ALGOS)


def sample_crystal_td3_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """Optuna search space for TD3 on crystal relaxation: optimiser, discount, state noise and TFN size.

    Action noise is left out: per-component noise on the action breaks the equivariance that state noise keeps.
    """
    gamma = trial.suggest_categorical("gamma", [0.9, 0.99, 0.999, 0.9999])
    return {
        "gamma": gamma,
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-3, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 100, 256]),
        "tau": trial.suggest_float("tau", 0.001, 0.05, log=True),
        "state_noise": {"level": trial.suggest_float("state_noise_level", 0.02, 0.5, log=True)},
        "policy_kwargs": {
            "mul": trial.suggest_categorical("mul", [4, 8, 16]),
            "n_layers": trial.suggest_int("n_layers", 1, 2),
        },
    }


def sample_crystal_sac_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """Optuna search space for SAC on crystal relaxation (as TD3's, with the entropy coefficient learned)."""
    params = sample_crystal_td3_params(trial, n_actions, n_envs, additional_args)
    params["learning_starts"] = trial.suggest_categorical("learning_starts", [100, 1000])
    return params


def _experiment_manager_class() -> type:
    from rl_zoo3.exp_manager import ExperimentManager

    class CrystalExperimentManager(ExperimentManager):
        """rl-zoo's ExperimentManager with crash-safe checkpoints and runs that resume where they stopped.

        ``--save-freq`` writes :func:`~sb3_crystal.callbacks.save_checkpoint` folders (model, replay buffer, RNG
        state) under ``<run>/checkpoints``; ``-i <run>/checkpoints/latest/model.zip`` resumes: the model with its
        curriculum stage and exploration state, the replay buffer, the RNG state, and the remaining timesteps
        of the ``-n`` budget (counted from the checkpoint's timesteps).
        """

        resumed_timesteps: int | None = None

        def create_callbacks(self) -> None:
            super().create_callbacks()
            for i, callback in enumerate(self.callbacks):
                if isinstance(callback, CheckpointCallback):
                    self.callbacks[i] = CrystalCheckpointCallback(
                        save_freq=callback.save_freq, save_path=Path(self.save_path) / "checkpoints", verbose=1
                    )

        def _load_pretrained_agent(self, hyperparams: dict[str, Any], env: VecEnv) -> BaseAlgorithm:
            # The saved exploration objects carry their generator state and stall counters: keep them.
            hyperparams = {k: v for k, v in hyperparams.items() if k not in {"state_noise", "greedy"}}
            model = super()._load_pretrained_agent(hyperparams, env)
            rng_path = Path(self.trained_agent).parent / RNG_FILE
            if rng_path.is_file():
                with open(rng_path, "rb") as handle:
                    set_rng_state(pickle.load(handle))
            # Fresh episodes from a seed that depends on where the run stopped: a resume is reproducible.
            env.seed(int(self.seed) + int(model.num_timesteps))
            self.resumed_timesteps = int(model.num_timesteps)
            return model

        def learn(self, model: BaseAlgorithm) -> None:
            if self.resumed_timesteps is None:
                return super().learn(model)
            remaining = max(int(self.n_timesteps) - self.resumed_timesteps, 0)
            print(f"Resuming at {self.resumed_timesteps} timesteps: {remaining} to go")
            kwargs: dict[str, Any] = {"reset_num_timesteps": False, "callback": self.callbacks}
            if self.log_interval > -1:
                kwargs["log_interval"] = self.log_interval
            try:
                model.learn(remaining, **kwargs)
            except KeyboardInterrupt:
                pass
            finally:
                if self.callbacks:
                    self.callbacks[0].on_training_end()
                if model.env is not None:
                    model.env.close()

    return CrystalExperimentManager


def _translate_args(argv: Sequence[str]) -> list[str]:
    """Our additions to rl-zoo's flags: ``--n-envs N`` (becomes the ``n_envs`` hyperparameter); the package
    is always among the gym packages, and ``zoo_configs/<algo>.yml`` is the default config when it exists."""
    args = list(argv)
    if "--n-envs" in args:
        i = args.index("--n-envs")
        n_envs = args[i + 1]
        del args[i : i + 2]
        if "--hyperparams" in args or "-params" in args:
            j = args.index("--hyperparams") if "--hyperparams" in args else args.index("-params")
            args.insert(j + 1, f"n_envs:{n_envs}")
        else:
            args += ["--hyperparams", f"n_envs:{n_envs}"]
    if "--gym-packages" not in args:
        args += ["--gym-packages", "sb3_crystal"]
    if "--conf-file" not in args and "-conf" not in args:
        algo = args[args.index("--algo") + 1] if "--algo" in args else "td3"
        default_conf = Path(__file__).resolve().parents[2] / "zoo_configs" / f"{algo.removeprefix('crystal_')}.yml"
        if default_conf.is_file():
            args += ["--conf-file", str(default_conf)]
    return args


def _select_vec_env(args: list[str]) -> tuple[list[str], type[VecEnv] | None]:
    """``--vec-env subproc`` runs :class:`~sb3_crystal.vec_env.CrystalSubprocVecEnv` (a dead worker fails fast) and
    ``--vec-env ray`` :class:`~sb3_crystal.vec_env.RayVecEnv`; rl-zoo accepts only ``dummy``/``subproc``, so it is
    given ``dummy`` and the class goes into the ExperimentManager's ``default_vec_env_cls``."""
    for i, arg in enumerate(args):
        if arg == "--vec-env" and i + 1 < len(args):
            name, replace = args[i + 1], slice(i, i + 2)
        elif arg.startswith("--vec-env="):
            name, replace = arg.partition("=")[2], slice(i, i + 1)
        else:
            continue
        if name not in ("subproc", "ray"):
            return args, None
        try:
            cls = vec_env_class(name)
        except ImportError as err:  # --vec-env ray without Ray installed
            raise SystemExit(str(err)) from err
        zoo_name = "subproc" if name == "subproc" else "dummy"
        return [*args[: replace.start], "--vec-env", zoo_name, *args[replace.stop :]], cls
    return args, None


def train(argv: Sequence[str] | None = None) -> None:
    """rl-zoo's ``train()`` with the crystal algorithms, samplers and :class:`CrystalExperimentManager`.

    :param argv: rl-zoo command-line arguments (default ``sys.argv[1:]``), plus ``--n-envs`` and ``--vec-env ray``.
    """
    try:
        import rl_zoo3.train as zoo_train
        from rl_zoo3 import hyperparams_opt
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise SystemExit("Training needs rl-zoo3: pip install 'sb3-crystal[zoo]'") from err
    register_with_zoo()
    hyperparams_opt.HYPERPARAMS_SAMPLER.update(
        {
            "td3": sample_crystal_td3_params,
            "sac": sample_crystal_sac_params,
            "crystal_td3": sample_crystal_td3_params,
            "crystal_sac": sample_crystal_sac_params,
        }
    )
    zoo_train.ExperimentManager = _experiment_manager_class()
    args = _translate_args(sys.argv[1:] if argv is None else argv)
    args, zoo_train.ExperimentManager.default_vec_env_cls = _select_vec_env(args)
    saved = sys.argv
    sys.argv = [saved[0] if saved else "train.py", *args]
    try:
        np.seterr(all="warn")
        zoo_train.train()
    finally:
        sys.argv = saved


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    train()
