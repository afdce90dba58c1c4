"""Training through rl-zoo leaves numpy's floating-point error settings as it found them."""

from __future__ import annotations

import numpy as np
import pytest

from sb3_crystal.training import zoo


def test_zoo_training_restores_numpy_error_settings(monkeypatch):
    calls = []

    def fake_train() -> None:
        calls.append(np.geterr())
        raise RuntimeError("stop here")

    monkeypatch.setattr("rl_zoo3.train.train", fake_train)
    before = np.geterr()
    with pytest.raises(RuntimeError, match="stop here"):
        zoo.train(["--algo", "td3", "--env", "CrystalRelax-v0", "-n", "1"])
    assert calls and calls[0]["over"] == "warn"  # during training: reported
    assert np.geterr() == before  # after: as before
