"""Statistics of benchmark rows per (structure, optimizer, threshold ε)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["SUCCESS_FORCE_CALLS", "SUMMARY_FIELDS", "summarize"]

#: ``success_within_budget`` counts the runs that converged within this many force calls (the issue's budget).
SUCCESS_FORCE_CALLS = 500

#: Columns of a summary row (one structure, relaxer and threshold). Force-call and step statistics are over
#: converged runs, success rates and wall times over all runs.
SUMMARY_FIELDS: tuple[str, ...] = (
    "structure",
    "n_atoms",
    "optimizer",
    "fmax",
    "n_runs",
    "n_converged",
    "success_rate",
    "success_within_budget",
    "same_minimum_rate",
    "reference_is_minimum",
    "median",
    "p10",
    "p90",
    "mean",
    "median_steps",
    "median_wall_time",
    "mean_wall_time",
)


def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in {"true", "1", "yes"}


def summarize(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Statistics per (structure, optimizer, ε), in the order the rows first name them.

    Force-call statistics (median, 10th/90th percentile with linear interpolation, mean) and the median step
    count are over *converged* runs (NaN when none converged); ``success_rate`` is the fraction converged,
    ``success_within_budget`` the fraction converged within :data:`SUCCESS_FORCE_CALLS` force calls, and
    ``same_minimum_rate`` the fraction that converged into the reference minimum. ``median_wall_time`` and
    ``mean_wall_time`` are seconds per relaxation over all runs (converged or not; NaN when the rows have no
    ``wall_time``); a run read off for several ε counts its time up to each ε.

    :param rows: benchmark rows (as returned by :func:`run_benchmark` or read back from its CSV).
    """
    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((str(row["structure"]), str(row["optimizer"]), float(row["fmax"])), []).append(row)
    summary = []
    for (structure, optimizer, fmax), members in groups.items():
        converged = [r for r in members if _truthy(r["converged"])]
        calls = np.array([float(r["force_calls"]) for r in converged])
        steps = np.array([float(r["steps"]) for r in converged])
        walls = np.array([float(r.get("wall_time", math.nan)) for r in members])
        has = len(calls) > 0
        summary.append(
            {
                "structure": structure,
                "n_atoms": _atom_counts(members),
                "optimizer": optimizer,
                "fmax": fmax,
                "n_runs": len(members),
                "n_converged": len(converged),
                "success_rate": len(converged) / len(members),
                "success_within_budget": float(np.sum(calls <= SUCCESS_FORCE_CALLS)) / len(members),
                "same_minimum_rate": sum(_truthy(r["same_minimum"]) for r in members) / len(members),
                "reference_is_minimum": all(_truthy(r["reference_is_minimum"]) for r in members),
                "median": float(np.median(calls)) if has else math.nan,
                "p10": float(np.percentile(calls, 10)) if has else math.nan,
                "p90": float(np.percentile(calls, 90)) if has else math.nan,
                "mean": float(calls.mean()) if has else math.nan,
                "median_steps": float(np.median(steps)) if has else math.nan,
                "median_wall_time": float(np.median(walls)),
                "mean_wall_time": float(walls.mean()),
            }
        )
    return summary


def _atom_counts(members: list[dict[str, Any]]) -> int | str:
    """The number of atoms of a group's structures: one number, or ``"lo-hi"`` for a family of sizes."""
    counts = sorted({int(r["n_atoms"]) for r in members})
    return counts[0] if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
