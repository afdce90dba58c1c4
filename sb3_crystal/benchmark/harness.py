"""The relaxation benchmark, one module per concern, re-exported here under the names it has always had.

- :mod:`~sb3_crystal.benchmark.starts`: seeded distorted starts (:func:`make_starts`, :func:`structure_name`);
- :mod:`~sb3_crystal.benchmark.matching`: whether a run ended in the reference minimum
  (:func:`structure_deviation`, :func:`compare_to_reference`);
- :mod:`~sb3_crystal.benchmark.loop`: the benchmark loop (:func:`run_benchmark`, :data:`ROW_FIELDS`,
  :data:`DEFAULT_FMAXES`);
- :mod:`~sb3_crystal.benchmark.statistics`: :func:`summarize`, :data:`SUMMARY_FIELDS`;
- :mod:`~sb3_crystal.benchmark.tables`: :func:`format_table`;
- :mod:`~sb3_crystal.benchmark.plotting`: :func:`plot_force_calls`;
- :mod:`~sb3_crystal.benchmark.files` and :mod:`~sb3_crystal.benchmark.results`: :func:`write_csv`,
  :func:`write_results`.
"""

from __future__ import annotations

from sb3_crystal.benchmark.files import write_csv
from sb3_crystal.benchmark.loop import DEFAULT_FMAXES, ROW_FIELDS, run_benchmark
from sb3_crystal.benchmark.matching import compare_to_reference, structure_deviation
from sb3_crystal.benchmark.plotting import plot_force_calls
from sb3_crystal.benchmark.results import write_results
from sb3_crystal.benchmark.starts import make_starts, structure_name
from sb3_crystal.benchmark.statistics import SUMMARY_FIELDS, summarize
from sb3_crystal.benchmark.tables import format_table

__all__ = [
    "DEFAULT_FMAXES",
    "ROW_FIELDS",
    "SUMMARY_FIELDS",
    "compare_to_reference",
    "format_table",
    "make_starts",
    "plot_force_calls",
    "run_benchmark",
    "structure_deviation",
    "structure_name",
    "summarize",
    "write_csv",
    "write_results",
]
