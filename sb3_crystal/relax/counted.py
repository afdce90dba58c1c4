"""The base of the agent optimizers: an ASE optimizer whose runs count force calls, and the agent's checks.

**Force calls.** During :meth:`~CountedOptimizer.run` / :meth:`~CountedOptimizer.irun` the atoms' calculator is
wrapped in a :class:`~sb3_crystal.calculators.counting.ForceCallCounter` (or, when it already is one, e.g. in the
benchmark, used as it is), so counting follows the benchmark's rule: one evaluation at a geometry not seen before is
one call; going back to a geometry seen before is free. Afterwards the calculator is put back, holding the last
results.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.filters import Filter
from ase.optimize.optimize import DEFAULT_MAX_STEPS, Optimizer

from sb3_crystal.calculators import ForceCallCounter, UnsupportedElementsError, calculator_elements, check_elements
from sb3_crystal.relax.agent_io import CrystalAgent
from sb3_crystal.relax.filters import unwrap
from sb3_crystal.structures.validation import INPUT_MIN_DISTANCE, check_structure

__all__ = ["CountedOptimizer", "check_agent_can_relax"]

#: Geometries the force-call counter remembers (a handover back to the lowest-energy geometry is then free).
_COUNTER_MEMORY = 4096


def check_agent_can_relax(agent: CrystalAgent, atoms: Atoms) -> None:
    """Raise when ``agent`` cannot relax ``atoms``: a structure no relaxation can start from
    (:func:`~sb3_crystal.structures.validation.check_structure`: not an ``Atoms``, no atoms, not fully periodic, a
    singular or non-finite cell, a bad position, atoms closer than
    :data:`~sb3_crystal.structures.validation.INPUT_MIN_DISTANCE`), unseen species, too many atoms for a fixed-size
    network, or elements outside the calculator's potential.

    :raises TypeError: not an ``ase.Atoms`` (a pymatgen ``Structure`` is told how to convert).
    :raises UnsupportedElementsError: species the agent was not trained on (named) or the potential lacks.
    :raises ValueError: a bad structure (the atom named), or more atoms than a fixed-size agent has slots.
    """
    check_structure(atoms, min_distance=INPUT_MIN_DISTANCE)
    if agent.species is not None:
        present = {atoms.get_chemical_symbols()[i] for i in range(len(atoms))}
        unseen = sorted(present - set(agent.species))
        if unseen:
            raise UnsupportedElementsError(
                f"{atoms.get_chemical_formula()}: element(s) {', '.join(unseen)} not seen in training "
                f"(the agent was trained on {', '.join(agent.species)})"
            )
    if len(atoms) > agent.n_max and not agent.size_agnostic:
        raise ValueError(
            f"{atoms.get_chemical_formula()} has {len(atoms)} atoms, more than the {agent.n_max} slots of this "
            f"{type(agent.policy).__name__} agent, whose network has a fixed input size: use a graph (TFN) agent "
            f"or one trained with n_max ≥ {len(atoms)}"
        )
    calc = atoms.calc.calculator if isinstance(atoms.calc, ForceCallCounter) else atoms.calc
    elements = calculator_elements(calc) if calc is not None else None
    if elements is not None:
        check_elements(atoms.numbers, elements, getattr(calc, "potential", "the calculator"))


def _checked_run_arguments(fmax: Any, steps: Any) -> int:
    """Raise unless ``fmax`` is a finite number > 0 and ``steps`` a positive integer; :return: ``steps`` as an int."""
    if not isinstance(fmax, numbers.Real) or isinstance(fmax, bool):
        raise TypeError(f"fmax must be a finite number > 0 eV/Å, got {type(fmax).__name__} {fmax!r}")
    if not (math.isfinite(fmax) and fmax > 0):
        raise ValueError(f"fmax must be a finite number > 0 eV/Å, got {fmax!r}")
    integral = isinstance(steps, numbers.Integral) or (isinstance(steps, numbers.Real) and float(steps).is_integer())
    if isinstance(steps, bool) or not integral or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    return int(steps)


class CountedOptimizer(Optimizer):
    """An ASE optimizer whose :meth:`run` / :meth:`irun` count force calls (see the module docstring).

    :param atoms: the structure, or an ASE cell filter around it (:func:`~sb3_crystal.relax.filters.unwrap`).
    """

    def __init__(self, atoms: Atoms | Filter, logfile: IO | str | None, trajectory: Any, append_trajectory: bool) -> None:
        #: the structure relaxed (the ``Atoms`` behind a filter), and the filter (``None`` without one).
        self.structure, self.filter = unwrap(atoms)
        if getattr(self.structure, "calc", None) is None:
            raise ValueError(f"{atoms.get_chemical_formula()}: attach a calculator (atoms.calc) before relaxing")
        self._counter: ForceCallCounter | None = None
        self._counted_before = 0  # calls of counters replaced since (the user swapped calculators)
        self._counter_base = 0
        super().__init__(atoms, logfile=logfile, trajectory=trajectory, append_trajectory=append_trajectory)

    @property
    def force_calls(self) -> int:
        """Energy+forces evaluations at distinct geometries in :meth:`run` / :meth:`irun`, the start included."""
        counted = self._counter.force_calls - self._counter_base if self._counter is not None else 0
        return self._counted_before + counted

    def _use_counter(self, counter: ForceCallCounter) -> None:
        if counter is not self._counter:
            self._counted_before = self.force_calls
            self._counter, self._counter_base = counter, counter.force_calls

    @contextmanager
    def _counting(self) -> Iterator[None]:
        calc = self.structure.calc
        if calc is None:
            raise ValueError("The atoms lost their calculator")
        if isinstance(calc, ForceCallCounter):  # the benchmark's counter, or ours in a nested call: counts already
            self._use_counter(calc)
            yield
            return
        if self._counter is None or self._counter.calculator is not calc:
            self._use_counter(ForceCallCounter(calc, memory=_COUNTER_MEMORY))
        assert self._counter is not None
        self.structure.calc = self._counter
        try:
            yield
        finally:
            self.structure.calc = calc
            self._hand_back_results(calc)

    def _hand_back_results(self, calc: Any) -> None:
        """Give the user's calculator the results at the final geometry, so ``atoms.get_forces()`` costs nothing."""
        counter = self._counter
        if not (isinstance(calc, Calculator) and counter is not None and counter.atoms is not None and counter.results):
            return
        structure = self.structure
        if not counter.check_state(structure) and (calc.atoms is None or calc.check_state(structure)):
            calc.atoms = structure.copy()
            calc.results = dict(counter.results)

    def _before_run(self) -> None:
        """Hook before the first step of a run."""

    def irun(self, fmax: float = 0.05, steps: int = DEFAULT_MAX_STEPS) -> Iterator[bool]:
        """As ASE's, with ``fmax`` and ``steps`` checked when called (before the first iteration)."""
        steps = _checked_run_arguments(fmax, steps)
        return self._irun(fmax, steps)

    def _irun(self, fmax: float, steps: int) -> Iterator[bool]:
        with self._counting():
            self._before_run()
            yield from super().irun(fmax=fmax, steps=steps)

    def run(self, fmax: float = 0.05, steps: int = DEFAULT_MAX_STEPS) -> bool:
        """As ASE's, with ``fmax`` (a finite number > 0, eV/Å) and ``steps`` (a positive integer) checked first."""
        steps = _checked_run_arguments(fmax, steps)
        with self._counting():
            self._before_run()
            return bool(super().run(fmax=fmax, steps=steps))

    def _current(self) -> tuple[float, np.ndarray]:
        """Energy and forces at the current geometry (a counted call the first time a geometry is seen); through a
        filter, its energy and generalised forces (what ASE's convergence test reads)."""
        return float(self.atoms.get_potential_energy()), np.asarray(self.atoms.get_forces(), dtype=np.float64)
