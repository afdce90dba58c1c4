"""Counting force calls: a calculator wrapper that charges one call per new geometry.

The counting rule that the benchmark and the relaxers share: one energy+forces evaluation at a geometry not seen
before (numbers, cell, pbc and positions bitwise equal) is one force call; the evaluation at the start counts;
line-search trial points count; asking again at a geometry already seen costs nothing. The stress, when asked,
belongs to the same call (codes such as DFT or a machine-learned potential give it with the forces), so a
variable-cell relaxation that asks for energy, forces and stress at each geometry pays one call per geometry.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any, NamedTuple

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator, Calculator, PropertyNotImplementedError, all_changes, compare_atoms

from sb3_crystal.calculators.factory import CalculatorSpec, make_calculator
from sb3_crystal.calculators.lammps_eam import LammpsEAMCalculator

__all__ = ["ForceCallCounter"]


class _Evaluation(NamedTuple):
    energy: float
    forces: np.ndarray
    stress: np.ndarray | None  # Voigt, eV/Å^3; None when it was not asked for


class ForceCallCounter(Calculator):
    """An ASE calculator that wraps another one and counts its energy+forces evaluations at new geometries.

    Energy and forces are always computed together, so an optimizer asking for both at one geometry pays one
    call. Results of the last ``memory`` geometries are kept: a query at a geometry seen before (bitwise the
    same numbers, cell, pbc and positions, e.g. when a line search goes back to its starting point) is
    answered from memory and not counted, which is what a careful driver of an expensive code would do.

    Stress is offered when the wrapped calculator implements it. Once it has been asked for (by a cell filter,
    say), it is computed together with energy and forces at every new geometry until :meth:`reset`; a stress
    asked at a geometry evaluated earlier without it is computed then, without counting a second call.

    :param calculator: the calculator to count (spec or object, see :func:`sb3_crystal.calculators.make_calculator`).
        The LAMMPS calculator is driven through its ``compute`` fast path.
    :param memory: geometries remembered (least recently used ones are forgotten).
    """

    implemented_properties = ("energy", "free_energy", "forces")

    def __init__(self, calculator: CalculatorSpec = "lammps", memory: int = 256) -> None:
        super().__init__()
        self.calculator: BaseCalculator = make_calculator(calculator)
        self.memory = int(memory)
        if "stress" in getattr(self.calculator, "implemented_properties", ()):
            self.implemented_properties = (*ForceCallCounter.implemented_properties, "stress")
        #: energy+forces evaluations at new geometries since the last :meth:`reset`.
        self.force_calls = 0
        #: all evaluations asked of this wrapper (by ASE when its own one-geometry cache misses).
        self.n_queries = 0
        self._with_stress = False
        self._last: _Evaluation | None = None
        self._seen: OrderedDict[bytes, _Evaluation] = OrderedDict()

    def get_spin_polarized(self) -> bool:
        """As the wrapped calculator says, ``False`` when it does not (defined here so that ASE does not store a
        bound method on the instance, a reference cycle that would keep the wrapped calculator alive)."""
        own = getattr(type(self.calculator), "get_spin_polarized", None)
        return bool(own(self.calculator)) if callable(own) else False

    def reset(self) -> None:
        """Zero the counts and forget every geometry seen (start of a new relaxation)."""
        self.force_calls = 0
        self.n_queries = 0
        self._with_stress = False
        self._last = None
        self._seen.clear()
        self.results = {}
        self.atoms = None

    @staticmethod
    def _key(atoms: Atoms) -> bytes:
        digest = hashlib.blake2b(digest_size=20)
        for array in (atoms.numbers, np.asarray(atoms.cell), atoms.pbc, atoms.positions):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.digest()

    def evaluate(self, atoms: Atoms) -> tuple[float, np.ndarray]:
        """Energy (eV) and forces (eV/Å) of ``atoms``, counted when the geometry is new.

        :param atoms: the structure (its own calculator is ignored).
        :return: energy and a fresh copy of the forces.
        """
        result = self._evaluate(atoms, stress=False)
        self._last = result
        return result.energy, result.forces.copy()

    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
        """ASE's "what changed since the last results", with a geometry bitwise equal to the last one recognised at
        once: ASE asks several times per step, and its ``allclose`` on every array costs more than a small cell's
        EAM call. Any other geometry goes through ASE's own comparison, so the answer is always ASE's."""
        last = self.atoms
        if last is None:
            return list(all_changes)
        if (
            last.arrays.keys() == atoms.arrays.keys()
            and all(_same(value, atoms.arrays[key]) for key, value in last.arrays.items())
            and _same(last.cell.array, atoms.cell.array)
            and _same(last.pbc, atoms.pbc)
        ):
            return []
        return compare_atoms(last, atoms, tol=tol, excluded_properties=set(self.ignored_changes))

    def evaluate_stress(self, atoms: Atoms) -> np.ndarray:
        """Stress (Voigt order xx yy zz yz xz xy, eV/Å^3, ASE's sign) of ``atoms``, part of its geometry's call.

        :param atoms: the structure (its own calculator is ignored).
        :raise PropertyNotImplementedError: the wrapped calculator has no stress.
        """
        self._require_stress()
        result = self._evaluate(atoms, stress=True)
        assert result.stress is not None
        return result.stress.copy()

    def _require_stress(self) -> None:
        if "stress" not in self.implemented_properties:
            raise PropertyNotImplementedError(f"{type(self.calculator).__name__} does not compute stress")

    def _evaluate(self, atoms: Atoms, stress: bool) -> _Evaluation:
        self.n_queries += 1
        self._with_stress = self._with_stress or stress
        key = self._key(atoms)
        seen = self._seen.get(key)
        if seen is not None:
            self._seen.move_to_end(key)
            if seen.stress is not None or not stress:
                return seen
        result = self._compute(atoms, stress=self._with_stress)
        if seen is None:
            self.force_calls += 1
        self._seen[key] = result
        if len(self._seen) > self.memory:
            self._seen.popitem(last=False)
        return result

    def _compute(self, atoms: Atoms, stress: bool) -> _Evaluation:
        calc = self.calculator
        if isinstance(calc, LammpsEAMCalculator) and np.all(atoms.pbc):
            # its virial is tallied with every evaluation: take the stress always, never evaluate twice for it
            energy, forces, voigt = calc.compute(atoms.numbers, np.asarray(atoms.cell), atoms.positions, stress=True)
            return _Evaluation(float(energy), forces, voigt)
        probe = atoms.copy()
        probe.calc = None
        energy = float(calc.get_property("energy", probe))
        forces = np.array(calc.get_property("forces", probe), dtype=float)
        voigt = np.array(calc.get_property("stress", probe), dtype=float) if stress else None
        return _Evaluation(energy, forces, voigt)

    def calculate(
        self, atoms: Atoms | None = None, properties: Any = ("energy", "forces"), system_changes: Any = all_changes
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        assert self.atoms is not None
        if "stress" in properties:
            self._require_stress()
            self._with_stress = True
        energy, forces = self.evaluate(self.atoms)
        self.results = {"energy": energy, "free_energy": energy, "forces": forces}
        last = self._last
        if "stress" in properties and (last is None or last.stress is None):
            last = self._evaluate(self.atoms, stress=True)  # a geometry first seen without stress
        if last is not None and last.stress is not None:
            self.results["stress"] = last.stress.copy()


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bitwise equality of two arrays (shape, type and bytes)."""
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()
