"""Summary statistics the issue asks for: force calls, success within the budget, wall time per relaxation."""

from __future__ import annotations

import math
import statistics

import pytest

from sb3_crystal.benchmark import files, harness, loop, matching, plotting, results, starts, tables
from sb3_crystal.benchmark import statistics as summary_statistics
from sb3_crystal.benchmark.statistics import SUCCESS_FORCE_CALLS, SUMMARY_FIELDS, summarize
from sb3_crystal.benchmark.tables import format_table

BASE = {
    "structure": "X",
    "n_atoms": 2,
    "optimizer": "BFGS",
    "fmax": 0.05,
    "same_minimum": True,
    "reference_is_minimum": True,
}


def _rows():
    return [
        {**BASE, "converged": True, "force_calls": 5, "steps": 4, "wall_time": 0.002},
        {**BASE, "converged": True, "force_calls": 9, "steps": 8, "wall_time": 0.004},
        {**BASE, "converged": True, "force_calls": SUCCESS_FORCE_CALLS, "steps": 400, "wall_time": 0.5},
        {**BASE, "converged": True, "force_calls": SUCCESS_FORCE_CALLS + 1, "steps": 450, "wall_time": 0.6},
        {**BASE, "converged": False, "force_calls": 1001, "steps": 1000, "same_minimum": False, "wall_time": 1.5},
    ]


def test_success_within_the_budget_counts_converged_runs_of_at_most_500_calls():
    assert SUCCESS_FORCE_CALLS == 500
    (s,) = summarize(_rows())
    assert s["success_rate"] == pytest.approx(4 / 5)
    assert s["success_within_budget"] == pytest.approx(3 / 5)  # 501 calls converged, but over the budget
    assert s["median"] == statistics.median([5, 9, 500, 501])
    assert (s["p10"], s["p90"]) == (pytest.approx(6.2), pytest.approx(500.7))
    assert s["mean"] == pytest.approx((5 + 9 + 500 + 501) / 4)


def test_wall_time_per_relaxation_is_over_all_runs():
    (s,) = summarize(_rows())
    walls = [0.002, 0.004, 0.5, 0.6, 1.5]
    assert s["median_wall_time"] == statistics.median(walls)
    assert s["mean_wall_time"] == pytest.approx(statistics.mean(walls))
    assert list(s) == list(SUMMARY_FIELDS)


def test_rows_without_wall_time_give_nan_and_a_dash():
    rows = [{k: v for k, v in row.items() if k != "wall_time"} for row in _rows()]
    (s,) = summarize(rows)
    assert math.isnan(s["median_wall_time"]) and math.isnan(s["mean_wall_time"])
    assert format_table([s]).splitlines()[-1].rstrip(" |").endswith("–")


def test_table_shows_the_budget_column_and_wall_time_in_milliseconds():
    lines = format_table(summarize(_rows())).splitlines()
    headers = [cell.strip() for cell in lines[0].strip("|").split("|")]
    cells = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert headers[-5:] == ["success", "≤ 500 calls", "same min", "ref min", "wall (ms)"]
    assert cells[-5:] == ["80%", "60%", "80%", "yes", "500.0"]
    assert len({len(line) for line in lines}) == 1


def test_harness_reexports_the_modules_names():
    owners = {
        "DEFAULT_FMAXES": loop,
        "ROW_FIELDS": loop,
        "run_benchmark": loop,
        "make_starts": starts,
        "structure_name": starts,
        "structure_deviation": matching,
        "compare_to_reference": matching,
        "SUMMARY_FIELDS": summary_statistics,
        "summarize": summary_statistics,
        "format_table": tables,
        "plot_force_calls": plotting,
        "write_csv": files,
        "write_results": results,
    }
    assert sorted(harness.__all__) == sorted(owners)
    for name, module in owners.items():
        assert getattr(harness, name) is getattr(module, name), name
