"""Crash-safe checkpoints: model, replay buffer and random-number state, written atomically."""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

MODEL_FILE = "model.zip"
BUFFER_FILE = "replay_buffer.pkl"  # the name rl-zoo's ``-i`` looks for beside the model
RNG_FILE = "rng_state.json"
LEGACY_RNG_FILE = "rng_state.pkl"  # written by sb3-crystal 0.1.0a0 and earlier; never unpickled
META_FILE = "checkpoint.json"  # written last: a folder without it is not a checkpoint
LATEST = "latest"
RESUMED_FROM = "resumed_from.json"  # in the checkpoint folder of a resumed run: the checkpoint it started from
TMP_PREFIX = ".tmp-"
RNG_FORMAT = 1


def _encode_bytes(tensor: th.Tensor) -> str:
    return base64.b64encode(tensor.numpy().tobytes()).decode("ascii")


def _decode_bytes(text: str) -> th.Tensor:
    return th.frombuffer(bytearray(base64.b64decode(text)), dtype=th.uint8)


def rng_state() -> dict[str, Any]:
    """The global random-number states (Python, NumPy, PyTorch CPU and CUDA) as plain data (JSON-serialisable).

    :return: a dict of numbers, strings and lists; :func:`set_rng_state` restores it.
    """
    version, internal, gauss_next = random.getstate()
    name, key, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "format": RNG_FORMAT,
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
        "numpy": {
            "bit_generator": name,
            "key": [int(k) for k in key],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": _encode_bytes(th.get_rng_state()),
    }
    if th.cuda.is_available():
        state["torch_cuda"] = [_encode_bytes(s) for s in th.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned.

    :param state: the plain-data state.
    :raises ValueError: if ``state`` is not in :func:`rng_state`'s format.
    """
    if not isinstance(state, dict) or state.get("format") != RNG_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"random-number state: expected format {RNG_FORMAT}, got {found!r}")
    try:
        python, numpy_state = state["python"], state["numpy"]
        python_state = (int(python["version"]), tuple(int(v) for v in python["state"]), python["gauss_next"])
        numpy_tuple = (
            str(numpy_state["bit_generator"]),
            np.asarray(numpy_state["key"], dtype=np.uint32),
            int(numpy_state["pos"]),
            int(numpy_state["has_gauss"]),
            float(numpy_state["cached_gaussian"]),
        )
        torch_state = _decode_bytes(state["torch"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"random-number state: malformed ({type(err).__name__}: {err})") from err
    random.setstate(python_state)
    np.random.set_state(numpy_tuple)
    th.set_rng_state(torch_state)
    if "torch_cuda" in state and th.cuda.is_available():
        th.cuda.set_rng_state_all([_decode_bytes(s) for s in state["torch_cuda"]])


def load_rng_state(folder: str | os.PathLike) -> bool:
    """Restore the random-number state saved in a checkpoint folder.

    A ``rng_state.pkl`` of an older checkpoint is not unpickled (unpickling can run code): a warning says so
    and the run continues without the saved state.

    :param folder: a checkpoint folder.
    :return: whether a state was restored.
    :raises ValueError: if ``rng_state.json`` is malformed (the message names the file).
    """
    root = Path(folder)
    path = root / RNG_FILE
    if path.is_file():
        try:
            set_rng_state(json.loads(path.read_text()))
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: {err}") from err
        return True
    if (root / LEGACY_RNG_FILE).is_file():
        warnings.warn(
            f"{root / LEGACY_RNG_FILE} is a pickle written by an older sb3-crystal: it is not loaded (unpickling can "
            "run code), so the resumed run starts from fresh random-number states",
            UserWarning,
            stacklevel=2,
        )
    return False


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def clean_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove what killed checkpoint writes left in ``folder``: ``.tmp-<pid>-*`` folders and links whose process
    is gone (or is this one, from an earlier save).

    :param folder: a checkpoint folder (a missing one holds nothing).
    :return: the paths removed.
    """
    root = Path(folder)
    if not root.is_dir():
        return []
    removed = []
    for path in root.glob(f"{TMP_PREFIX}*"):
        pid_text = path.name.removeprefix(TMP_PREFIX).split("-", 1)[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and _process_alive(int(pid_text)):
            continue  # another live process is writing it
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def save_checkpoint(model: BaseAlgorithm, folder: str | os.PathLike, save_replay_buffer: bool = True, keep: int = 2) -> Path:
    """Write a checkpoint of ``model`` into ``folder/step_<timesteps>/`` without ever exposing a partial one.

    Files go into a temporary folder first, are synced to disk, then the folder is renamed into place (atomic on
    POSIX) and ``folder/latest`` is switched to it (an atomic symlink replacement). A process killed at any
    moment leaves the previous checkpoint intact; its leftover temporary folder is removed at the next save or
    the next start of a :class:`CrystalCheckpointCallback` on the folder.

    :param model: the algorithm.
    :param folder: the checkpoint folder of the run.
    :param save_replay_buffer: also save the replay buffer (off-policy algorithms).
    :param keep: complete checkpoints to keep (older ones are deleted).
    :return: the new checkpoint's folder.
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(root)
    final = root / f"step_{model.num_timesteps:012d}"
    tmp = root / f"{TMP_PREFIX}{os.getpid()}-{final.name}"
    tmp.mkdir()
    model.save(tmp / MODEL_FILE)
    has_buffer = save_replay_buffer and getattr(model, "replay_buffer", None) is not None
    if has_buffer:
        model.save_replay_buffer(tmp / BUFFER_FILE)  # type: ignore[attr-defined]
    (tmp / RNG_FILE).write_text(json.dumps(rng_state()))
    meta = {"num_timesteps": model.num_timesteps, "time": time.time(), "replay_buffer": has_buffer}
    (tmp / META_FILE).write_text(json.dumps(meta))
    _fsync_tree(tmp)
    if final.exists():  # the same step saved twice (e.g. at the end of a run)
        shutil.rmtree(final)
    os.rename(tmp, final)
    link_tmp = root / f"{TMP_PREFIX}{os.getpid()}-link"
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


def record_resume(folder: str | os.PathLike, checkpoint: str | os.PathLike) -> None:
    """Note in the checkpoint folder of a resumed run which checkpoint it started from, so that
    :func:`last_good_checkpoint` finds it while the new run has saved nothing yet.

    :param folder: the checkpoint folder of the resumed run.
    :param checkpoint: the checkpoint folder it resumed from.
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f"{TMP_PREFIX}{os.getpid()}-{RESUMED_FROM}"
    tmp.write_text(json.dumps({"checkpoint": str(Path(checkpoint).resolve())}))
    os.replace(tmp, root / RESUMED_FROM)


def last_good_checkpoint(folder: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint of a run, or, for a resumed run that saved none, the one it resumed from
    (followed back through earlier resumes).

    :param folder: the checkpoint folder of a run (``<run>/checkpoints``).
    :return: a checkpoint folder, or ``None`` when there is none.
    """
    root, seen = Path(folder), set()
    while root not in seen:
        seen.add(root)
        newest = latest_checkpoint(root)
        if newest is not None:
            return newest
        try:
            source = Path(json.loads((root / RESUMED_FROM).read_text())["checkpoint"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if (source / META_FILE).is_file():
            return source
        root = source.parent
    return None


class CrystalCheckpointCallback(BaseCallback):
    """Every ``save_freq`` calls (vectorised steps), :func:`save_checkpoint` into ``save_path``.

    Each checkpoint holds the model (with the curriculum stage and exploration state kept on it), the replay
    buffer and the global random-number state (plain JSON). Resume with
    ``train.py -i <save_path>/latest/model.zip``. Temporary folders of killed writes are removed when training
    starts.

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

    def _init_callback(self) -> None:
        for path in clean_stale_temporaries(self.save_path):
            if self.verbose:
                print(f"Removed {path} (left by an interrupted checkpoint write)")

    def _on_step(self) -> bool:
        if self.n_calls % self.save_freq == 0:
            path = save_checkpoint(self.model, self.save_path, self.save_replay_buffer, self.keep)
            if self.verbose:
                print(f"Saved checkpoint {path}")
        return True

    def _on_training_end(self) -> None:
        save_checkpoint(self.model, self.save_path, self.save_replay_buffer, self.keep)
