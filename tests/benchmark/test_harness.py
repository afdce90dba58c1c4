"""Benchmark harness: seeded starts, same-minimum test, rows, summary, files."""

from __future__ import annotations

import csv
import math
import statistics

import numpy as np
import pytest

from sb3_crystal.benchmark.harness import (
    ROW_FIELDS,
    SUMMARY_FIELDS,
    format_table,
    make_starts,
    run_benchmark,
    structure_deviation,
    summarize,
    write_results,
)
from sb3_crystal.structures.geometry import distort
from sb3_crystal.structures.minima import relaxed_minimum
from sb3_crystal.structures.prototypes import build_prototype


@pytest.fixture(scope="module")
def rows(b2_minimum):
    return run_benchmark([b2_minimum], ["BFGS", "CG"], beta=0.5, fmaxes=(0.1, 0.01), n_starts=4, seed=3, progress=False)


def _outcome(rows):
    return [{k: v for k, v in row.items() if k != "wall_time"} for row in rows]


# -- starts -------------------------------------------------------------------------------------------------------
def test_starts_are_seeded_per_start(b2_minimum):
    a = make_starts(b2_minimum, 0.5, 4, seed=7)
    b = make_starts(b2_minimum, 0.5, 4, seed=7)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.positions, y.positions)
    # start k alone is rebuilt from its seed
    np.testing.assert_array_equal(a[2].positions, distort(b2_minimum, 0.5, np.random.default_rng(9)).positions)
    assert [s.info["start_seed"] for s in a] == [7, 8, 9, 10]
    c = make_starts(b2_minimum, 0.5, 4, seed=8)
    assert not np.array_equal(a[0].positions, c[0].positions)
    assert np.abs(a[0].positions - b2_minimum.positions).max() <= 0.5


def test_same_seed_same_results_and_other_seed_other_results(b2_minimum, rows):
    again = run_benchmark([b2_minimum], ["BFGS", "CG"], beta=0.5, fmaxes=(0.1, 0.01), n_starts=4, seed=3, progress=False)
    assert _outcome(again) == _outcome(rows)
    other = run_benchmark([b2_minimum], ["BFGS", "CG"], beta=0.5, fmaxes=(0.1, 0.01), n_starts=4, seed=4, progress=False)
    assert [r["final_energy"] for r in other] != [r["final_energy"] for r in rows]


def test_rows_cover_every_combination_with_the_same_starts(rows):
    assert len(rows) == 2 * 4 * 2
    assert all(set(row) == set(ROW_FIELDS) for row in rows)
    for optimizer in ("BFGS", "CG"):
        seeds = sorted({r["start_seed"] for r in rows if r["optimizer"] == optimizer})
        assert seeds == [3, 4, 5, 6]
    assert all(r["converged"] and r["same_minimum"] and r["reference_is_minimum"] for r in rows)
    for r in rows:
        assert r["final_fmax"] < r["fmax"] and abs(r["energy_error"]) <= 1e-4 and r["deviation"] <= 0.05
    # a looser threshold never costs more calls than a tighter one on the same start
    by_start = {(r["optimizer"], r["start"], r["fmax"]): r["force_calls"] for r in rows}
    for optimizer in ("BFGS", "CG"):
        for k in range(4):
            assert by_start[(optimizer, k, 0.1)] <= by_start[(optimizer, k, 0.01)]


def test_saddle_reference_is_flagged():
    minimum, report = relaxed_minimum(build_prototype("AlFe-hex"), cache_dir=False)
    assert not report.is_minimum
    rows = run_benchmark([minimum], ["BFGS"], fmaxes=(0.05,), n_starts=2, progress=False)
    assert all(r["reference_is_minimum"] is False for r in rows)
    assert summarize(rows)[0]["reference_is_minimum"] is False


def test_bad_arguments_are_rejected(b2_minimum):
    with pytest.raises(ValueError, match="beta"):
        run_benchmark([b2_minimum], ["BFGS"], beta=-0.1, n_starts=1)
    with pytest.raises(ValueError, match="thresholds"):
        run_benchmark([b2_minimum], ["BFGS"], fmaxes=(0.1, -1.0), n_starts=1)
    with pytest.raises(KeyError):
        run_benchmark([b2_minimum], ["Newton"], n_starts=1)


# -- same minimum -------------------------------------------------------------------------------------------------
def test_structure_deviation_ignores_translation_wrapping_and_relabelling():
    atoms = build_prototype("AlFe-B2").repeat((2, 2, 2))
    moved = atoms.copy()
    moved.positions += [0.37, -1.2, 2.0]  # rigid translation
    moved.positions[3] += moved.cell[0]  # an atom one lattice vector away
    order = np.random.default_rng(0).permutation(len(moved))
    moved = moved[order]  # relabelled atoms
    assert structure_deviation(moved, atoms) < 1e-9
    moved.positions[0] += [0.0, 0.0, 0.2]
    assert structure_deviation(moved, atoms) == pytest.approx(0.2 * (1 - 1 / len(atoms)), rel=1e-6)
    assert structure_deviation(build_prototype("AlFe-B2"), build_prototype("Fe-bcc").repeat((2, 1, 1))) == math.inf


# -- summary and files --------------------------------------------------------------------------------------------
def test_summary_matches_rows(rows):
    summary = summarize(rows)
    assert len(summary) == 2 * 2
    for s in summary:
        group = [r for r in rows if r["optimizer"] == s["optimizer"] and r["fmax"] == s["fmax"]]
        calls = sorted(r["force_calls"] for r in group if r["converged"])
        assert s["n_runs"] == len(group) == 4
        assert s["median"] == statistics.median(calls)
        assert s["mean"] == pytest.approx(sum(calls) / len(calls))
        assert s["p10"] <= s["median"] <= s["p90"]
        assert min(calls) <= s["p10"] and s["p90"] <= max(calls)
        assert s["success_rate"] == 1.0 and s["same_minimum_rate"] == 1.0


def test_summary_statistics_skip_unconverged_runs():
    base = {
        "structure": "X",
        "n_atoms": 2,
        "optimizer": "BFGS",
        "fmax": 0.1,
        "same_minimum": True,
        "reference_is_minimum": True,
    }
    rows = [
        {**base, "converged": True, "force_calls": 5, "steps": 4},
        {**base, "converged": True, "force_calls": 9, "steps": 8},
        {**base, "converged": False, "force_calls": 1001, "steps": 1000, "same_minimum": False},
    ]
    (s,) = summarize(rows)
    assert s["median"] == 7 and s["n_converged"] == 2 and s["success_rate"] == pytest.approx(2 / 3)
    (s,) = summarize([rows[2]])
    assert math.isnan(s["median"]) and s["success_rate"] == 0.0


def test_written_files_match_rows(rows, tmp_path):
    paths = write_results(rows, tmp_path / "out", title="test")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "force_calls.png",
        "runs.csv",
        "summary.csv",
        "summary.md",
    ]  # no temporary files left behind
    with open(paths["runs"], newline="") as handle:
        back = list(csv.DictReader(handle))
    assert len(back) == len(rows) and list(back[0]) == list(ROW_FIELDS)
    for row, read in zip(rows, back, strict=True):
        assert int(read["force_calls"]) == row["force_calls"] and read["optimizer"] == row["optimizer"]
        assert float(read["fmax"]) == row["fmax"] and read["converged"] == str(row["converged"])
        assert float(read["final_energy"]) == row["final_energy"]
    with open(paths["summary"], newline="") as handle:
        summary = list(csv.DictReader(handle))
    assert list(summary[0]) == list(SUMMARY_FIELDS)
    for s in summary:
        calls = [r["force_calls"] for r in rows if r["optimizer"] == s["optimizer"] and r["fmax"] == float(s["fmax"])]
        assert float(s["median"]) == statistics.median(calls)
    # the summary recomputed from the CSV (strings) equals the one from the rows
    assert summarize(back) == summarize(rows)
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = paths["table"].read_text()
    assert table.startswith("# test") and table.count("\n| AlFe-B2") == 4


def test_format_table_is_aligned(rows):
    lines = format_table(summarize(rows)).splitlines()
    assert len(lines) == 2 + 4
    assert len({len(line) for line in lines}) == 1
