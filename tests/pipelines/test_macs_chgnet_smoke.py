"""The MACS comparison pipeline: its start generator (no CHGNet needed) and its smoke path (skipped without CHGNet)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from sb3_crystal.structures.geometry import closest_pair

SCRIPT = Path(__file__).resolve().parents[2] / "pipelines" / "macs_chgnet.py"


@pytest.fixture(scope="module")
def macs():
    spec = importlib.util.spec_from_file_location("macs_chgnet", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["macs_chgnet"] = module
    spec.loader.exec_module(module)
    return module


def test_generator_draws_the_composition_at_the_volume_with_min_distance(macs):
    volume = macs.EXPERIMENTAL_VOLUMES["Y2O3"][0]
    generator = macs.MACSRandomGenerator("Y2O3", 2, volume, min_distance=1.0, rattle=0.1)
    starts = generator.sample_many(3, 7_900_000)
    again = generator.sample_many(3, 7_900_000)
    for atoms, twin in zip(starts, again, strict=True):
        assert atoms.get_chemical_formula() == "O6Y4"
        assert atoms.get_volume() == pytest.approx(2 * volume, rel=1e-9)
        assert closest_pair(atoms, 1.0)[2] >= 1.0
        np.testing.assert_array_equal(atoms.positions, twin.positions)
    assert not np.allclose(starts[0].positions, starts[1].positions)


def test_generator_rejects_bad_parameters(macs):
    with pytest.raises(ValueError, match="formula_units"):
        macs.MACSRandomGenerator("Y2O3", 0, 74.5)
    with pytest.raises(ValueError, match="volume_per_fu"):
        macs.MACSRandomGenerator("Y2O3", 1, -1.0)
    with pytest.raises(ValueError, match="rattle"):
        macs.MACSRandomGenerator("Y2O3", 1, 74.5, rattle=float("nan"))


def test_training_seed_in_the_evaluation_range_is_refused(macs):
    with pytest.raises(SystemExit):
        macs.parse_args(["--seed", "7000001"])


def test_smoke_run_writes_the_report(macs, tmp_path):
    pytest.importorskip("chgnet")
    out = tmp_path / "report"
    parts = macs.main(["--smoke", "--work", str(tmp_path / "work"), "--out", str(out)])
    methods = {row["method"] for part in parts.values() for row in part["rows"]}
    assert {"BFGSLineSearch", "zero action (L-BFGS proposal)", "agent (RLOptimizer)"} <= methods
    assert any(name.startswith("hybrid") for name in methods)
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["train_steps"] == 30 and record["starts"] == 2
    assert record["test_matching_training"] == 0
    bfgsls = next(row for row in record["summary"] if row["method"] == "BFGSLineSearch")
    assert bfgsls["ratio_median"] == pytest.approx(1.0)
    assert "| BFGSLineSearch |" in out.with_suffix(".md").read_text()
    assert out.with_suffix(".csv").exists() and out.with_suffix(".png").exists()
