"""Force-call counting and the classical optimizers as *relaxers*.

A relaxer takes a distorted start and relaxes it at fixed cell to a force threshold ε, spending force calls.
:class:`Relaxer` is the interface that the benchmark harness drives; :class:`ASEOptimizerRelaxer` implements it for
every optimizer of :data:`sb3_crystal.optimizers.CLASSICAL_OPTIMIZERS` (:data:`OPTIMIZERS`, :func:`make_relaxer`).
An RL agent or a hybrid agent + BFGS relaxer only has to subclass :class:`Relaxer` and implement
:meth:`Relaxer.relax` to take part in the same benchmark.

What is counted (:class:`~sb3_crystal.calculators.ForceCallCounter`): one energy+forces evaluation at one geometry not seen
before (numbers, cell, pbc and positions bitwise equal) is one force call; the evaluation at the start counts;
line-search trial points count; asking again at a geometry already seen costs nothing.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms
from ase.optimize.optimize import Optimizer
from ase.optimize.sciopt import OptimizerConvergenceError, SciPyOptimizer

from sb3_crystal.calculators import CalculatorSpec, ForceCallCounter
from sb3_crystal.optimizers import (
    CLASSICAL_OPTIMIZERS,
    DEFAULT_OPTIMIZERS,
    FMAX_INDEPENDENT_OPTIMIZERS,
    GPMinFitted,
    optimizer_name,
)
from sb3_crystal.structures.minima import max_force

__all__ = [
    "DEFAULT_OPTIMIZERS",
    "OPTIMIZERS",
    "ASEOptimizerRelaxer",
    "ForceCallCounter",
    "GPMinFitted",
    "RelaxResult",
    "Relaxer",
    "make_relaxer",
]

#: Exceptions with which an optimizer gives up on a start (line search failure, GPMin's model failure,
#: SciPy's precision loss, a singular update): recorded as a failed run, never fatal for a benchmark.
RELAXATION_FAILURES: tuple[type[BaseException], ...] = (
    RuntimeError,
    OptimizerConvergenceError,
    ValueError,
    ArithmeticError,
    np.linalg.LinAlgError,
)


@dataclass
class RelaxResult:
    """The outcome of one relaxation of one start to one force threshold.

    :param fmax_target: the force threshold ε, eV/Å.
    :param converged: ε reached (max atomic force < ε, ASE's criterion) within the step cap, without failure.
    :param force_calls: energy+forces evaluations at new geometries, the start included.
    :param steps: optimizer iterations (SciPy: its iterations; line-search methods count a line search as one).
    :param fmax: largest atomic force at the final geometry, eV/Å.
    :param energy: energy at the final geometry, eV.
    :param atoms: final structure (no calculator).
    :param wall_time: seconds from the start of the run to this result.
    :param error: ``"ExceptionType: message"`` when the optimizer gave up, else empty.
    """

    fmax_target: float
    converged: bool
    force_calls: int
    steps: int
    fmax: float
    energy: float
    atoms: Atoms
    wall_time: float
    error: str = ""


def _counter(calculator: CalculatorSpec | ForceCallCounter) -> ForceCallCounter:
    return calculator if isinstance(calculator, ForceCallCounter) else ForceCallCounter(calculator)


def _validate(fmaxes: Sequence[float], max_steps: int) -> list[float]:
    values = [float(f) for f in fmaxes]
    if not values or not all(f > 0 for f in values):
        raise ValueError(f"force thresholds must be > 0 eV/Å, got {values}")
    if max_steps < 0:
        raise ValueError(f"max_steps must be ≥ 0, got {max_steps}")
    return values


class Relaxer(ABC):
    """A fixed-cell relaxation method whose force calls the benchmark counts.

    Subclasses implement :meth:`relax`. When a method's trajectory does not depend on the threshold ε (it
    only decides when to stop), one run to the smallest ε answers every larger one exactly: set
    :attr:`fmax_independent` and override :meth:`relax_thresholds` to read the results off that run.
    """

    #: name in tables and plots.
    name: str = "relaxer"
    #: True when one run to the smallest threshold gives exactly the results of separate runs per threshold.
    fmax_independent: bool = False

    @abstractmethod
    def relax(self, start: Atoms, calculator: CalculatorSpec | ForceCallCounter, fmax: float, max_steps: int) -> RelaxResult:
        """Relax a copy of ``start`` at fixed cell until the largest atomic force is below ``fmax``.

        :param start: start structure (not modified).
        :param calculator: a :class:`ForceCallCounter` (reset here: counts cover this run only) or a spec to wrap in one.
        :param fmax: force threshold ε, eV/Å.
        :param max_steps: optimizer step cap.
        """

    def relax_thresholds(
        self, start: Atoms, calculator: CalculatorSpec | ForceCallCounter, fmaxes: Sequence[float], max_steps: int
    ) -> dict[float, RelaxResult]:
        """Results for several thresholds; by default one separate run per threshold.

        :param start: start structure (not modified).
        :param calculator: counter or calculator spec.
        :param fmaxes: force thresholds, eV/Å.
        :param max_steps: optimizer step cap of each run.
        :return: ``{fmax: result}``.
        """
        counter = _counter(calculator)
        return {f: self.relax(start, counter, f, max_steps) for f in _validate(fmaxes, max_steps)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class ASEOptimizerRelaxer(Relaxer):
    """An ASE optimizer (``ase.optimize``) or SciPy optimizer (``ase.optimize.sciopt``) as a relaxer.

    :param name: name in tables.
    :param optimizer_class: the ASE optimizer class.
    :param fmax_independent: whether the optimizer's path ignores ``fmax``. True for BFGS, LBFGS, FIRE and
        BFGSLineSearch (``fmax`` only decides when to stop); False for GPMin (its inner retry loop stops
        at the first point below ``fmax``) and SciPy CG (``gtol = 0.1·fmax`` enters its line-search acceptance).
    :param kwargs: optimizer arguments (``maxstep`` etc.).
    """

    def __init__(self, name: str, optimizer_class: type[Optimizer], fmax_independent: bool = False, **kwargs: Any) -> None:
        self.name = name
        self.optimizer_class = optimizer_class
        self.fmax_independent = fmax_independent
        self.kwargs = kwargs

    def relax(self, start: Atoms, calculator: CalculatorSpec | ForceCallCounter, fmax: float, max_steps: int) -> RelaxResult:
        return self._run(start, _counter(calculator), _validate([fmax], max_steps), max_steps)[fmax]

    def relax_thresholds(
        self, start: Atoms, calculator: CalculatorSpec | ForceCallCounter, fmaxes: Sequence[float], max_steps: int
    ) -> dict[float, RelaxResult]:
        if not self.fmax_independent:
            return super().relax_thresholds(start, calculator, fmaxes, max_steps)
        values = _validate(fmaxes, max_steps)
        results = self._run(start, _counter(calculator), values, max_steps)
        return {f: results[f] for f in values}

    def _run(self, start: Atoms, counter: ForceCallCounter, fmaxes: list[float], max_steps: int) -> dict[float, RelaxResult]:
        counter.reset()
        work = start.copy()
        work.calc = counter
        t0 = time.perf_counter()
        optimizer = self.optimizer_class(work, logfile=None, **self.kwargs)
        pending = sorted(set(fmaxes), reverse=True)
        results: dict[float, RelaxResult] = {}

        def snapshot(target: float, converged: bool, error: str = "") -> RelaxResult:
            # Calls are read first: after a failure the current geometry may not have been evaluated yet,
            # and evaluating it for the record is not the optimizer's cost.
            calls, wall = counter.force_calls, time.perf_counter() - t0
            final = work.copy()
            final.calc = None
            return RelaxResult(
                fmax_target=target,
                converged=converged,
                force_calls=calls,
                steps=int(optimizer.nsteps),
                fmax=max_force(work.get_forces()),
                energy=float(work.get_potential_energy()),
                atoms=final,
                wall_time=wall,
                error=error,
            )

        def checkpoint() -> None:
            # The test of ASE's Optimizable.converged, at the points where the optimizer applies it.
            current = max_force(work.get_forces())
            while pending and current < pending[0]:
                target = pending.pop(0)
                results[target] = snapshot(target, True)

        error = ""
        try:
            if isinstance(optimizer, SciPyOptimizer):
                # SciPy runs its own loop and tests convergence in ASE's per-iteration callback, which calls
                # the observers just before; it never tests the start, where run() calls them too.
                optimizer.attach(lambda: checkpoint() if optimizer.nsteps > 0 else None)
                optimizer.run(fmax=pending[-1], steps=max_steps)
            else:
                for _ in optimizer.irun(fmax=pending[-1], steps=max_steps):
                    checkpoint()
        except RELAXATION_FAILURES as err:
            error = f"{type(err).__name__}: {err}".strip()
        for target in pending:
            result = snapshot(target, False, error)
            # SciPy runs end where SciPy stops; the final geometry decides, unless the optimizer raised.
            result.converged = not error and result.fmax < target
            results[target] = result
        return results


def _ase(name: str, cls: type[Optimizer], fmax_independent: bool, **kwargs: Any) -> Callable[[], Relaxer]:
    return lambda: ASEOptimizerRelaxer(name, cls, fmax_independent, **kwargs)


#: Relaxers by name, one per optimizer of :data:`~sb3_crystal.optimizers.CLASSICAL_OPTIMIZERS`; the benchmark's
#: default set is :data:`~sb3_crystal.optimizers.DEFAULT_OPTIMIZERS`.
OPTIMIZERS: dict[str, Callable[[], Relaxer]] = {
    name: _ase(name, cls, cls in FMAX_INDEPENDENT_OPTIMIZERS) for name, cls in CLASSICAL_OPTIMIZERS.items()
}


def make_relaxer(name: str | Relaxer) -> Relaxer:
    """A relaxer by name (any case, or an alias of :data:`~sb3_crystal.optimizers.OPTIMIZER_ALIASES` such as
    ``SciPyFminCG`` for ``CG``), or the relaxer itself.

    :param name: one of :data:`OPTIMIZERS`, an alias, or a :class:`Relaxer`.
    :raises UnknownOptimizerError: (a :class:`KeyError`) for an unknown name; the message lists the known ones.
    """
    if isinstance(name, Relaxer):
        return name
    return OPTIMIZERS[optimizer_name(name)]()
