"""All result files of one benchmark: runs, summary (CSV and markdown) and plot."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sb3_crystal.benchmark.files import atomic_write, write_csv
from sb3_crystal.benchmark.plotting import plot_force_calls
from sb3_crystal.benchmark.statistics import SUMMARY_FIELDS, summarize
from sb3_crystal.benchmark.tables import format_table

__all__ = ["write_results"]


def write_results(rows: Sequence[dict[str, Any]], out_dir: str | os.PathLike, title: str = "") -> dict[str, Path]:
    """Write ``runs.csv``, ``summary.csv``, ``summary.md`` and ``force_calls.png`` into ``out_dir``.

    :param rows: benchmark rows.
    :param out_dir: output folder (created).
    :param title: plot title and heading of ``summary.md``.
    :return: ``{"runs": path, "summary": path, "table": path, "plot": path}``.
    """
    out = Path(out_dir)
    summary = summarize(rows)
    table = format_table(summary)
    heading = f"# {title}\n\n" if title else ""
    paths = {
        "runs": write_csv(rows, out / "runs.csv"),
        "summary": write_csv(summary, out / "summary.csv", SUMMARY_FIELDS),
        "table": out / "summary.md",
        "plot": plot_force_calls(summary, out / "force_calls.png", title),
    }
    atomic_write(paths["table"], lambda handle: handle.write(f"{heading}{table}\n"), ".tmp")
    return paths
