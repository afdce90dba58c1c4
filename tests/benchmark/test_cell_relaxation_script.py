"""benchmarks/cell_relaxation.py: its starts and its core on two tiny starts (the script itself is run by hand)."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sb3_crystal.structures.families import EVALUATION_SEEDS

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

COLUMNS = {
    "group",
    "optimizer",
    "cell",
    "start",
    "seed",
    "n_atoms",
    "volume_change",
    "max_shear",
    "converged",
    "success",
    "force_calls",
    "optimizer_calls",
    "steps",
    "final_fmax",
    "final_max_stress_GPa",
    "final_volume_ratio",
    "final_energy_per_atom",
    "wall_s",
    "stop",
    "error",
}


@pytest.fixture(scope="module")
def script():
    sys.path.insert(0, str(BENCHMARKS))  # the script imports a script beside it
    try:
        spec = importlib.util.spec_from_file_location("cell_relaxation", BENCHMARKS / "cell_relaxation.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["cell_relaxation"] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))
        sys.modules.pop("cell_relaxation", None)


def test_starts_are_strained_within_bounds_and_seeded_from_validation(script):
    starts = script.group_starts(script.GROUPS["b2_2"], 5)
    cell = script.group_cells(script.GROUPS["b2_2"])[0]
    again = script.group_starts(script.GROUPS["b2_2"], 5)
    for start, same in zip(starts, again, strict=True):
        np.testing.assert_array_equal(start.positions, same.positions)  # fixed before the run
        v = start.info["volume_change"]
        assert abs(v) <= script.VOLUME_CHANGE
        assert start.get_volume() / cell.get_volume() == pytest.approx(1 + v, rel=1e-12)
        strain = np.linalg.solve(np.array(cell.cell), np.array(start.cell))  # cell @ deformation
        np.testing.assert_allclose(strain, strain.T, atol=1e-12)  # symmetric
        off = strain[~np.eye(3, dtype=bool)] / np.diag(strain).mean()
        assert np.abs(off).max() <= script.SHEAR + 1e-12
        assert np.abs(off).max() == pytest.approx(start.info["max_shear"], abs=1e-6)
        master = int(start.info["seed"].split("/")[0])
        assert master in EVALUATION_SEEDS["validation"]
    assert len({round(s.info["volume_change"], 9) for s in starts}) == len(starts)  # different draws


def test_script_writes_rows_that_match_the_counter(script, tmp_path):
    """The script end to end on two 2-atom starts, in a subprocess: the script limits BLAS to one thread before
    numpy loads (the filter's 3×3 matrix functions otherwise spin on a shared CPU), which a test process cannot."""
    optimizers = ["BFGS", "RL (zero-action)", "Hybrid (zero-action)"]
    out = tmp_path / "cell"
    command = [sys.executable, str(BENCHMARKS / "cell_relaxation.py"), "--groups", "b2_2", "--starts-per-cell", "2"]
    command += ["--optimizers", *optimizers, "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCHMARKS.parent), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "b2_2[0] #1" in done.stdout  # progress, one line per start
    with open(out.with_suffix(".csv"), encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * len(optimizers) and set(rows[0]) == COLUMNS
    assert [r["optimizer"] for r in rows] == optimizers * 2
    for row in rows:
        calls = int(row["force_calls"])
        assert calls > 0
        assert row["success"] == "True", row  # small strained B2 cells: every optimizer converges
        assert float(row["final_fmax"]) <= script.FMAX
        if row["optimizer"] == "BFGS":  # one evaluation per step, and the start
            assert int(row["optimizer_calls"]) == -1 and calls == int(row["steps"]) + 1
        else:
            assert int(row["optimizer_calls"]) == calls  # the package's own count is the counter's
    text = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "| b2_2 | RL (zero-action) | 2 |" in text and "## Target" in text
    assert out.with_suffix(".png").stat().st_size > 0
    bfgs = np.median([int(r["force_calls"]) for r in rows if r["optimizer"] == "BFGS"])
    assert f"| b2_2 | BFGS (best) | 2 | {bfgs:.1f} |" in text  # the table's median is the rows' median


def _row(optimizer: str, calls: int, success: bool, energy: float, start: int) -> dict:
    return {
        "group": "g",
        "cell": "g[0]",
        "start": start,
        "optimizer": optimizer,
        "force_calls": calls,
        "success": success,
        "final_energy_per_atom": energy,
        "wall_s": 0.1,
    }


def test_failures_count_at_the_budget_and_higher_minima_are_named(script):
    rows = [
        _row("BFGS", 10, True, -3.0, 0),
        _row("BFGS", 30, False, -2.0, 1),
        _row("FIRE", 40, True, -3.0, 0),
        _row("FIRE", 60, True, -3.1, 1),
        _row("RL (zero-action)", 20, True, -3.0001, 0),  # the same minimum (within 5 meV/atom)
        _row("RL (zero-action)", 20, True, -3.0, 1),  # 100 meV/atom above FIRE's from start 1
    ]
    gaps = script.minimum_gaps(rows)
    assert np.isnan(gaps[1]) and gaps[5] == pytest.approx(100.0)
    summary = {s["optimizer"]: s for s in script.summarize(rows, max_calls=500)}
    assert summary["BFGS"]["median"] == 255 and summary["BFGS"]["converged"] == 0.5  # the failure at 500, not dropped
    assert summary["RL (zero-action)"]["higher_minimum"] == 0.5 and summary["FIRE"]["higher_minimum"] == 0.0
    # the best classical optimizer is the best of those converged on every start: FIRE (50), not BFGS
    assert script.best_classical(list(summary.values()))["optimizer"] == "FIRE"
    assert script.ratios(list(summary.values()))[("g", "RL (zero-action)")] == pytest.approx(20 / 50)


def test_unknown_optimizer_is_refused_before_any_work(script):
    with pytest.raises(ValueError, match="unknown optimizer"):
        script.run([script.GROUPS["b2_2"]], ["BFGS", "Newton"], {"b2_2": 1}, progress=None)


def test_test_split_starts_are_seeded_from_the_test_split_only(script):
    """The same recipe on the test split: the test split's master seeds and cells, other draws than validation's."""
    for name in ("b2_defect_16", "b2_2"):
        group = script.GROUPS[name]
        test = script.group_starts(group, 2, n_cells=2, split="test")
        validation = script.group_starts(group, 2, n_cells=2, split="validation")
        assert len(test) == 2 * group_size(group)
        for start in test:
            assert int(start.info["seed"].split("/")[0]) == script.family_seed(group.family, "test")
            assert abs(start.info["volume_change"]) <= script.VOLUME_CHANGE
        for mine, theirs in zip(test, validation, strict=True):  # other draws
            assert mine.info["volume_change"] != theirs.info["volume_change"]
            assert not np.allclose(mine.positions, theirs.positions)
    assert script.family_seed("b2_defect_16", "test") in EVALUATION_SEEDS["test"]


def group_size(group) -> int:
    return min(2, group.n_cells)


def test_fitting_matches_names_the_matching_structures(script):
    """The check against the fits finds a strained, rattled copy of a cell and nothing for another structure."""
    from sb3_crystal.structures.geometry import distort

    b2 = script.group_cells(script.GROUPS["b2_16"])[0]
    copy = script.strained_start(b2, np.random.default_rng(3))[0]
    other = distort(script.group_cells(script.GROUPS["b2_2"])[0].repeat((2, 2, 2)), 0.05, np.random.default_rng(4))
    other.symbols[list(other.symbols).index("Fe")] = "Al"  # Al9Fe7: another formula, no match
    found = script.fitting_matches([b2], [("copy", copy), ("other", other)])
    assert found == {"b2_16[0]": ["copy"]}


def test_test_page_lists_failures_and_higher_minima_against_the_best(script):
    rows = [
        _row("BFGS", 10, True, -3.0, 0),
        _row("BFGS", 12, True, -3.0, 1),
        _row("FIRE", 40, True, -3.2, 0),  # the lowest minimum, but not the best optimizer
        _row("FIRE", 60, True, -3.0, 1),
        _row("LearnedCurvature", 4, True, -3.1, 0),  # below BFGS's minimum: not higher
        _row("LearnedCurvature", 30, False, -2.9, 1),
    ]
    for row in rows:
        row |= {"final_fmax": 0.01, "stop": "", "error": ""}
    rows[-1]["error"] = "budget"
    summary = script.summarize(rows, max_calls=500)
    assert script.higher_than_best(rows, summary)[("g", "LearnedCurvature")] == (0, 1)
    assert script.higher_than_best(rows, summary)[("g", "FIRE")] == (0, 2)
    group = script.Group("g", "b2_defect_16", 0, "test group", 1)
    check = script.FitCheck(["g[0]"], 10, {}, 3, {"g[0]": ["x"]}, {}, 1.0)
    starts = [script.group_starts(script.GROUPS["b2_2"], 1)]
    text = script.markdown(rows, summary, [group], starts, "cmd", 60.0, 0.05, 500, 20, split="test", check=check)
    assert text.startswith("# Variable-cell relaxation") and "Test split." in text
    assert "**Cells matching a fitting structure: 0**." in text and "1 of the 1 cells match: g[0]: 1 (x)" in text
    assert "| g | BFGS (11.0) | LearnedCurvature | 252.0 | 22.91 | 50% | 1 of 2 | 0 of 1 |" in text
    assert "| g | LearnedCurvature | g[0] | 1 | 30 | 0.01 | – | budget |" in text  # the failure, named
    plain = script.markdown(rows, summary, [group], starts, "cmd", 60.0, 0.05, 500, 20)
    assert "Validation split." in plain and "## Failed runs" not in plain  # the validation page is unchanged
