"""rl-zoo integration: our algorithms and samplers in rl-zoo's tables, and an ExperimentManager with
crash-safe checkpoints and resumable runs.

Two routes (see docs/training.md):

- ``python train.py ...`` / ``sb3-crystal train ...``: rl-zoo's ``train()`` with :class:`CrystalExperimentManager`
  (atomic checkpoints with replay buffer and RNG state, resume that continues timesteps and curriculum,
  ``--n-envs``, crystal hyperparameter samplers for ``-optimize``, the package's ``zoo_configs/<algo>.yml`` as the
  default config, ``--env-kwargs`` merged into the config's).
- ``python -m rl_zoo3.train --gym-packages sb3_crystal ...``: plain rl-zoo. Importing ``sb3_crystal`` there maps
  rl-zoo's ``td3``/``sac`` to :class:`~sb3_crystal.algorithms.CrystalTD3`/``CrystalSAC`` (identical to TD3/SAC
  unless ``state_noise``/``greedy`` are set), so the same YAML files work; checkpoints are rl-zoo's own.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from importlib.resources import as_file, files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import CheckpointCallback
from stable_baselines3.common.vec_env import VecEnv

from sb3_crystal.algorithms import CrystalSAC, CrystalTD3, CrystalTD3BC
from sb3_crystal.callbacks.checkpoint import (
    META_FILE,
    MODEL_FILE,
    RESUMED_FROM,
    CrystalCheckpointCallback,
    clean_stale_temporaries,
    last_good_checkpoint,
    load_rng_state,
    record_resume,
)
from sb3_crystal.callbacks.evaluation import RelaxationEvalCallback
from sb3_crystal.vec_env import vec_env_class

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

#: Files rl-zoo writes into a run folder before any training: a failed run holding only these is removed.
RUN_RECORDS = frozenset({"config.yml", "args.yml", "command.txt", RESUMED_FROM})


class TrainingError(ValueError):
    """A training command that cannot start (e.g. ``-i`` names no checkpoint): one line, before any work."""


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


def zoo_config(algo: str) -> Traversable | None:
    """The package's rl-zoo hyperparameter file for ``algo`` (``zoo_configs/<algo>.yml``, shipped in the wheel).

    :param algo: an rl-zoo algorithm name (``td3``, ``sac``, ``td3bc``; a ``crystal_`` prefix is ignored).
    :return: the file as an :mod:`importlib.resources` resource, or ``None`` when the package has none for it.
    """
    resource = files("sb3_crystal").joinpath("zoo_configs", f"{algo.removeprefix('crystal_')}.yml")
    return resource if resource.is_file() else None


def _option_value(args: Sequence[str], *names: str) -> str | None:
    """The value of the last ``--name value`` / ``--name=value`` among ``args``, or ``None``."""
    value = None
    for i, arg in enumerate(args):
        if arg in names and i + 1 < len(args):
            value = args[i + 1]
        for name in names:
            if arg.startswith(f"{name}="):
                value = arg.split("=", 1)[1]
    return value


def _run_is_empty(folder: Path) -> bool:
    """Whether a run folder holds nothing training produced: only rl-zoo's records, empty folders and monitor
    files without an episode."""
    for path in folder.rglob("*"):
        if path.is_dir() or path.name in RUN_RECORDS:
            continue
        if path.name.endswith("monitor.csv"):
            with open(path, errors="replace") as handle:
                if sum(1 for _ in handle) <= 2:  # the JSON comment and the column names
                    continue
        return False
    return True


def check_trained_agent(path: str) -> None:
    """Fail before any work when ``-i`` names no model file, pointing at the last good checkpoint nearby.

    A resumed run killed before its first checkpoint has no ``latest``: the message names the checkpoint that
    run started from (see :func:`~sb3_crystal.callbacks.last_good_checkpoint`).

    :param path: the ``-i`` / ``--trained-agent`` value.
    :raises TrainingError: if ``path`` is not an existing ``.zip`` file.
    """
    agent = Path(path)
    if agent.suffix == ".zip" and agent.is_file():
        return
    good = None
    for ancestor in (agent.parent, agent.parent.parent):
        for folder in (ancestor, ancestor / "checkpoints"):
            if good is None and folder.is_dir():
                good = last_good_checkpoint(folder)
    problem = "not a .zip file" if agent.suffix != ".zip" else "no such model file"
    if good is None:
        raise TrainingError(f"-i {path}: {problem}, and no complete checkpoint beside it")
    raise TrainingError(f"-i {path}: {problem}; the last good checkpoint is {good} (resume with -i {good / MODEL_FILE})")


def _follow_eval_freq(callbacks: list[Any], eval_freq: int) -> list[Any]:
    """Set the relaxation evaluations to rl-zoo's ``--eval-freq`` (already divided by n_envs: vectorised steps,
    as ``n_calls`` counts); ``--eval-freq`` ≤ 0 drops them, except those that advance a curriculum."""
    kept = []
    for callback in callbacks:
        if isinstance(callback, RelaxationEvalCallback):
            if eval_freq > 0:
                callback.eval_freq = eval_freq
            elif callback.callback is not None:
                print(
                    f"--eval-freq {eval_freq}: relaxation evaluations kept every {callback.eval_freq} steps "
                    "(the config's), as they advance the curriculum"
                )
            else:
                continue
        kept.append(callback)
    return kept


def _resume_from_checkpoint(source: Path, checkpoints: Path) -> None:
    """For a resume from one of our checkpoint folders: restore its random-number state, clean its run's stale
    temporary folders and note in the new run's ``checkpoints`` where it started."""
    if not (source / META_FILE).is_file():  # not one of our checkpoints (e.g. rl-zoo's final model)
        return
    load_rng_state(source)
    clean_stale_temporaries(source.parent)
    record_resume(checkpoints, source)


def _print_settings(manager: Any) -> None:
    """Print what a run trains with: the config merged with the command line."""
    print("Training with (the config merged with the command line):")
    print(f"  n_timesteps: {manager.n_timesteps}, n_envs: {manager.n_envs}")
    print(f"  env_kwargs: {dict(sorted(manager.env_kwargs.items()))}")
    print(f"  hyperparameters: {dict(sorted(manager._hyperparams.items()))}")
    for callback in manager.callbacks:
        if isinstance(callback, RelaxationEvalCallback):
            print(f"  relaxation evaluation every {callback.eval_freq} steps of each environment")


def _learn_resumed(manager: Any, model: BaseAlgorithm) -> None:
    """Train a resumed model for the rest of the ``-n`` budget, continuing its timestep count."""
    remaining = max(int(manager.n_timesteps) - manager.resumed_timesteps, 0)
    print(f"Resuming at {manager.resumed_timesteps} timesteps: {remaining} to go")
    kwargs: dict[str, Any] = {"reset_num_timesteps": False, "callback": manager.callbacks}
    if manager.log_interval > -1:
        kwargs["log_interval"] = manager.log_interval
    try:
        model.learn(remaining, **kwargs)
    except KeyboardInterrupt:
        pass
    finally:
        if manager.callbacks:
            manager.callbacks[0].on_training_end()
        if model.env is not None:
            model.env.close()


def _experiment_manager_class(eval_freq_given: bool = False) -> type:
    """:class:`CrystalExperimentManager`, built on first use (it subclasses rl-zoo's ExperimentManager).

    :param eval_freq_given: ``--eval-freq`` is on the command line: the relaxation evaluations follow it.
    """
    from rl_zoo3.exp_manager import ExperimentManager

    class CrystalExperimentManager(ExperimentManager):
        """rl-zoo's ExperimentManager with crash-safe checkpoints and runs that resume where they stopped.

        ``--save-freq`` writes :func:`~sb3_crystal.callbacks.save_checkpoint` folders (model, replay buffer, RNG
        state) under ``<run>/checkpoints``; ``-i <run>/checkpoints/latest/model.zip`` resumes: the model with its
        curriculum stage and exploration state, the replay buffer, the RNG state, and the remaining timesteps
        of the ``-n`` budget (counted from the checkpoint's timesteps). ``--env-kwargs`` are merged into the
        YAML's ``env_kwargs`` (rl-zoo replaces them), and ``--eval-freq`` sets the frequency of the relaxation
        evaluations too.
        """

        resumed_timesteps: int | None = None
        #: run folders created by managers of this class (a failed run's empty folder is removed).
        run_folders: list[Path] = []  # noqa: RUF012 - shared by design: train() reads it after rl-zoo's train()

        def read_hyperparameters(self) -> tuple[dict[str, Any], dict[str, Any]]:
            command_line = dict(self.env_kwargs)
            self.env_kwargs = {}  # so that rl-zoo does not replace the YAML's env_kwargs with them
            try:
                hyperparams, saved_hyperparams = super().read_hyperparameters()
            finally:
                self.env_kwargs = command_line
            merged = {**(hyperparams.get("env_kwargs") or {}), **command_line}
            if merged:
                hyperparams["env_kwargs"] = saved_hyperparams["env_kwargs"] = merged
            self.env_kwargs = merged
            if self._eval_env_kwargs_args is None:  # rl-zoo's --eval-freq EvalCallback: the same environment
                self.eval_env_kwargs = merged
            return hyperparams, saved_hyperparams

        def create_log_folder(self) -> None:
            type(self).run_folders.append(Path(self.save_path))
            super().create_log_folder()

        def create_callbacks(self) -> None:
            super().create_callbacks()
            for i, callback in enumerate(self.callbacks):
                if isinstance(callback, CheckpointCallback):
                    self.callbacks[i] = CrystalCheckpointCallback(
                        save_freq=callback.save_freq, save_path=Path(self.save_path) / "checkpoints", verbose=1
                    )
            if eval_freq_given and not self.optimize_hyperparameters:
                self.callbacks = _follow_eval_freq(self.callbacks, int(self.eval_freq))

        def _load_pretrained_agent(self, hyperparams: dict[str, Any], env: VecEnv) -> BaseAlgorithm:
            # The saved exploration objects carry their generator state and stall counters: keep them.
            hyperparams = {k: v for k, v in hyperparams.items() if k not in {"state_noise", "greedy"}}
            model = super()._load_pretrained_agent(hyperparams, env)
            _resume_from_checkpoint(Path(self.trained_agent).resolve().parent, Path(self.save_path) / "checkpoints")
            # Fresh episodes from a seed that depends on where the run stopped: a resume is reproducible.
            env.seed(int(self.seed) + int(model.num_timesteps))
            self.resumed_timesteps = int(model.num_timesteps)
            return model

        def learn(self, model: BaseAlgorithm) -> None:
            _print_settings(self)
            if self.resumed_timesteps is None:
                return super().learn(model)
            _learn_resumed(self, model)

    return CrystalExperimentManager


def _translate_args(argv: Sequence[str]) -> list[str]:
    """Our additions to rl-zoo's flags: ``--n-envs N`` (becomes the ``n_envs`` hyperparameter); the package
    is always among the gym packages."""
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

    Without ``--conf-file``, the package's ``zoo_configs/<algo>.yml`` (see :func:`zoo_config`) is the config.
    A run that fails before training produced anything leaves no run folder behind.

    :param argv: rl-zoo command-line arguments (default ``sys.argv[1:]``), plus ``--n-envs`` and ``--vec-env ray``.
    :raises TrainingError: if ``-i`` names no model file (before any work).
    """
    try:
        import rl_zoo3.train as zoo_train
        from rl_zoo3 import hyperparams_opt
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise SystemExit("Training needs rl-zoo3: pip install 'sb3-crystal[zoo]'") from err
    args = _translate_args(sys.argv[1:] if argv is None else argv)
    trained_agent = _option_value(args, "-i", "--trained-agent")
    if trained_agent:
        check_trained_agent(trained_agent)
    register_with_zoo()
    hyperparams_opt.HYPERPARAMS_SAMPLER.update(
        {
            "td3": sample_crystal_td3_params,
            "sac": sample_crystal_sac_params,
            "crystal_td3": sample_crystal_td3_params,
            "crystal_sac": sample_crystal_sac_params,
        }
    )
    manager_class = _experiment_manager_class(eval_freq_given=_option_value(args, "--eval-freq") is not None)
    zoo_train.ExperimentManager = manager_class
    args, manager_class.default_vec_env_cls = _select_vec_env(args)
    saved = sys.argv
    with ExitStack() as stack:
        if _option_value(args, "--conf-file", "-conf") is None:
            config = zoo_config(_option_value(args, "--algo") or "td3")
            if config is not None:
                args += ["--conf-file", str(stack.enter_context(as_file(config)))]
        sys.argv = [saved[0] if saved else "train.py", *args]
        numpy_errors = np.seterr(all="warn")  # NaN/overflow in training are reported, not silent; restored after
        try:
            zoo_train.train()
        except BaseException:
            for folder in manager_class.run_folders:
                if folder.is_dir() and _run_is_empty(folder):
                    shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            sys.argv = saved
            np.seterr(**numpy_errors)


def main(argv: Sequence[str] | None = None) -> int:
    """``python train.py``: :func:`train`, with a :class:`TrainingError` as one line and exit status 2.

    :param argv: arguments without the program name (default ``sys.argv[1:]``).
    :return: the exit status.
    """
    try:
        train(argv)
    except TrainingError as err:
        print(f"train.py: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
