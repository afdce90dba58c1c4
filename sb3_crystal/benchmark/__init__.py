"""Benchmark of relaxers: force calls to reach a force threshold, on the same seeded starts for every relaxer.

- :mod:`~sb3_crystal.benchmark.classical`: :class:`ForceCallCounter`, the :class:`Relaxer` interface and the
  optimizers of :data:`sb3_crystal.optimizers.CLASSICAL_OPTIMIZERS` as relaxers (:data:`OPTIMIZERS`,
  :func:`make_relaxer`);
- :mod:`~sb3_crystal.benchmark.agents`: trained agents and hybrids as relaxers (imports torch; not loaded here);
- :mod:`~sb3_crystal.benchmark.starts`, :mod:`~sb3_crystal.benchmark.matching`, :mod:`~sb3_crystal.benchmark.loop`,
  :mod:`~sb3_crystal.benchmark.statistics`, :mod:`~sb3_crystal.benchmark.tables`,
  :mod:`~sb3_crystal.benchmark.plotting`, :mod:`~sb3_crystal.benchmark.files`, :mod:`~sb3_crystal.benchmark.results`:
  seeded starts, the same-minimum test, the benchmark loop, summary statistics, the markdown table, the plot and the
  result files (all re-exported by :mod:`~sb3_crystal.benchmark.harness`).
"""

from __future__ import annotations

from sb3_crystal.benchmark.classical import (
    DEFAULT_OPTIMIZERS,
    OPTIMIZERS,
    ASEOptimizerRelaxer,
    ForceCallCounter,
    Relaxer,
    RelaxResult,
    make_relaxer,
)
from sb3_crystal.benchmark.files import write_csv
from sb3_crystal.benchmark.loop import DEFAULT_FMAXES, run_benchmark
from sb3_crystal.benchmark.matching import compare_to_reference, structure_deviation
from sb3_crystal.benchmark.plotting import plot_force_calls
from sb3_crystal.benchmark.results import write_results
from sb3_crystal.benchmark.starts import make_starts
from sb3_crystal.benchmark.statistics import summarize
from sb3_crystal.benchmark.tables import format_table

__all__ = [
    "DEFAULT_FMAXES",
    "DEFAULT_OPTIMIZERS",
    "OPTIMIZERS",
    "ASEOptimizerRelaxer",
    "ForceCallCounter",
    "RelaxResult",
    "Relaxer",
    "compare_to_reference",
    "format_table",
    "make_relaxer",
    "make_starts",
    "plot_force_calls",
    "run_benchmark",
    "structure_deviation",
    "summarize",
    "write_csv",
    "write_results",
]
