"""Crash-safe checkpoints: model, replay buffer and random-number state, written atomically."""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

MODEL_FILE = "model.zip"
BUFFER_FILE = "replay_buffer.pkl"  # the name rl-zoo's ``-i`` looks for beside the model
RNG_FILE = "rng_state.pkl"
META_FILE = "checkpoint.json"  # written last: a folder without it is not a checkpoint
LATEST = "latest"


def rng_state() -> dict[str, Any]:
    """The global random-number states (Python, NumPy, PyTorch CPU and CUDA)."""
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": th.get_rng_state()}
    if th.cuda.is_available():
        state["torch_cuda"] = th.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    th.set_rng_state(state["torch"])
    if "torch_cuda" in state and th.cuda.is_available():
        th.cuda.set_rng_state_all(state["torch_cuda"])


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def save_checkpoint(model: BaseAlgorithm, folder: str | os.PathLike, save_replay_buffer: bool = True, keep: int = 2) -> Path:
    """Write a checkpoint of ``model`` into ``folder/step_<timesteps>/`` without ever exposing a partial one.

    Files go into a temporary folder first, are synced to disk, then the folder is renamed into place (atomic on
    POSIX) and ``folder/latest`` is switched to it (an atomic symlink replacement). A process killed at any
    moment leaves the previous checkpoint intact; leftover temporary folders are removed at the next save.

    :param model: the algorithm.
    :param folder: the checkpoint folder of the run.
    :param save_replay_buffer: also save the replay buffer (off-policy algorithms).
    :param keep: complete checkpoints to keep (older ones are deleted).
    :return: the new checkpoint's folder.
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    final = root / f"step_{model.num_timesteps:012d}"
    tmp = root / f".tmp-{os.getpid()}-{final.name}"
    tmp.mkdir()
    model.save(tmp / MODEL_FILE)
    has_buffer = save_replay_buffer and getattr(model, "replay_buffer", None) is not None
    if has_buffer:
        model.save_replay_buffer(tmp / BUFFER_FILE)  # type: ignore[attr-defined]
    with open(tmp / RNG_FILE, "wb") as handle:
        pickle.dump(rng_state(), handle)
    meta = {"num_timesteps": model.num_timesteps, "time": time.time(), "replay_buffer": has_buffer}
    (tmp / META_FILE).write_text(json.dumps(meta))
    _fsync_tree(tmp)
    if final.exists():  # the same step saved twice (e.g. at the end of a run)
        shutil.rmtree(final)
    os.rename(tmp, final)
    link_tmp = root / f".tmp-{os.getpid()}-link"
    link_tmp.symlink_to(final.name)
    os.replace(link_tmp, root / LATEST)
    for old in sorted(complete_checkpoints(root))[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def complete_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """Checkpoint folders of a run that were completely written, oldest first."""
    root = Path(folder)
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step_*") if (p / META_FILE).is_file())


def latest_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint folder, or ``None``."""
    checkpoints = complete_checkpoints(folder)
    return checkpoints[-1] if checkpoints else None


class CrystalCheckpointCallback(BaseCallback):
    """Every ``save_freq`` calls (vectorised steps), :func:`save_checkpoint` into ``save_path``.

    Each checkpoint holds the model (with the curriculum stage and exploration state kept on it), the replay
    buffer and the global random-number state. Resume with ``train.py -i <save_path>/latest/model.zip``.

    :param save_freq: vectorised steps between checkpoints (a run with 4 environments saves every 4·save_freq
        environment steps).
    :param save_path: checkpoint folder.
    :param save_replay_buffer: include the replay buffer.
    :param keep: complete checkpoints kept on disk.
    :param verbose: 1 prints each save.
    """

    def __init__(
        self, save_freq: int, save_path: str | os.PathLike, save_replay_buffer: bool = True, keep: int = 2, verbose: int = 0
    ) -> None:
        super().__init__(verbose=verbose)
        if save_freq < 1:
            raise ValueError(f"save_freq must be ≥ 1, got {save_freq}")
        self.save_freq = save_freq
        self.save_path = Path(save_path)
        self.save_replay_buffer = save_replay_buffer
        self.keep = keep

    def _on_step(self) -> bool:
        if self.n_calls % self.save_freq == 0:
            path = save_checkpoint(self.model, self.save_path, self.save_replay_buffer, self.keep)
            if self.verbose:
                print(f"Saved checkpoint {path}")
        return True

    def _on_training_end(self) -> None:
        save_checkpoint(self.model, self.save_path, self.save_replay_buffer, self.keep)
