"""Benchmark of relaxers (classical optimizers now, RL agents later): force calls to reach a force threshold.

- :mod:`~sb3_crystal.benchmark.classical`: :class:`ForceCallCounter`, the :class:`Relaxer` interface and the
  ASE/SciPy optimizers as relaxers (:data:`OPTIMIZERS`, :func:`make_relaxer`).
- :mod:`~sb3_crystal.benchmark.harness`: seeded starts, the benchmark loop, same-minimum test, summary, CSV and plot.
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
from sb3_crystal.benchmark.harness import (
    DEFAULT_FMAXES,
    compare_to_reference,
    format_table,
    make_starts,
    plot_force_calls,
    run_benchmark,
    structure_deviation,
    summarize,
    write_csv,
    write_results,
)

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
