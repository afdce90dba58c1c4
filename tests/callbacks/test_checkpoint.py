"""Checkpoint files: plain-data random-number state, old pickles never unpickled, stale temporaries cleaned."""

import json
import os
import pickle
import random
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch as th

from sb3_crystal.callbacks.checkpoint import (
    LEGACY_RNG_FILE,
    META_FILE,
    RNG_FILE,
    CrystalCheckpointCallback,
    clean_stale_temporaries,
    last_good_checkpoint,
    load_rng_state,
    record_resume,
    rng_state,
    set_rng_state,
)


def draws():
    return random.random(), random.gauss(0, 1), np.random.random(3).tolist(), np.random.normal(), th.rand(3).tolist()


def dead_pid():
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


class Planted:
    """A pickle that, when loaded, creates a file (stands for any code planted in a pickle)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_rng_state_is_plain_json_and_restores_every_generator():
    random.seed(1)
    random.gauss(0, 1)  # leaves a cached Gaussian in Python's state
    np.random.seed(2)
    np.random.normal()  # and one in NumPy's
    th.manual_seed(3)
    text = json.dumps(rng_state())
    expected = draws()
    draws()
    set_rng_state(json.loads(text))
    assert draws() == expected


def test_load_rng_state_reads_json_and_never_unpickles_an_old_pickle(tmp_path):
    folder = tmp_path / "step_000000000010"
    folder.mkdir()
    marker = tmp_path / "code-ran"
    (folder / LEGACY_RNG_FILE).write_bytes(pickle.dumps(Planted(marker)))
    with pytest.warns(UserWarning, match=r"rng_state\.pkl is a pickle .* not loaded"):
        assert load_rng_state(folder) is False
    assert not marker.exists()
    np.random.seed(5)
    (folder / RNG_FILE).write_text(json.dumps(rng_state()))
    expected = np.random.random()
    assert load_rng_state(folder) is True  # the JSON wins over the pickle beside it
    assert np.random.random() == expected
    assert not marker.exists()


@pytest.mark.parametrize("content", ["{not json", json.dumps({"format": 99}), json.dumps({"format": 1, "python": {}})])
def test_malformed_rng_state_names_the_file(tmp_path, content):
    (tmp_path / RNG_FILE).write_text(content)
    with pytest.raises(ValueError, match=str(tmp_path / RNG_FILE)):
        load_rng_state(tmp_path)


def test_stale_temporaries_are_removed_but_a_live_writer_is_kept(tmp_path):
    stale = tmp_path / f".tmp-{dead_pid()}-step_000000000040"
    stale.mkdir()
    (stale / "model.zip").write_bytes(b"partial")
    own = tmp_path / f".tmp-{os.getpid()}-link"  # an earlier save of this process, killed mid-way
    own.symlink_to("step_000000000040")
    live = tmp_path / f".tmp-{os.getppid()}-step_000000000050"
    live.mkdir()
    keep = tmp_path / "step_000000000030"
    keep.mkdir()
    assert sorted(clean_stale_temporaries(tmp_path)) == sorted([stale, own])
    assert not stale.exists() and not own.is_symlink() and live.is_dir() and keep.is_dir()
    assert clean_stale_temporaries(tmp_path / "missing") == []


def test_checkpoint_callback_cleans_its_folder_when_training_starts(tmp_path):
    stale = tmp_path / f".tmp-{dead_pid()}-step_000000000020"
    stale.mkdir()
    callback = CrystalCheckpointCallback(save_freq=10, save_path=tmp_path)
    callback.init_callback(SimpleNamespace(get_env=lambda: None, logger=None))
    assert not stale.exists()


def test_last_good_checkpoint_follows_resumes_back(tmp_path):
    first = tmp_path / "run_1" / "checkpoints"
    good = first / "step_000000000060"
    good.mkdir(parents=True)
    (good / META_FILE).write_text("{}")
    (first / "step_000000000070").mkdir()  # incomplete: no checkpoint.json
    second, third = tmp_path / "run_2" / "checkpoints", tmp_path / "run_3" / "checkpoints"
    record_resume(second, good)
    assert last_good_checkpoint(first) == good
    assert last_good_checkpoint(second) == good.resolve()
    # a third run resumed from the second's checkpoint, which has since been deleted
    record_resume(third, second / "step_000000000080")
    assert last_good_checkpoint(third) == good.resolve()
    assert last_good_checkpoint(tmp_path / "nothing") is None
