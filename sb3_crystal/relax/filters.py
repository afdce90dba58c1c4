"""How the agent optimizers relax through an ASE filter: variable-cell relaxation with a fixed-cell agent.

ASE's optimizers relax the cell by moving a filter's generalised coordinates: ``UnitCellFilter``,
``ExpCellFilter`` and ``FrechetCellFilter`` present N atom rows followed by 3 cell rows (a deformation of the cell),
``StrainFilter`` presents only the strain (2 rows, the 6 Voigt components). Their generalised forces are the atoms'
forces and the virial scaled as the filter scales it, and an optimizer has converged when every row is below
``fmax``: so the stress is converged too, in the units the filter chose.

An agent trained at fixed cell knows how to move atoms, not the cell. Through a filter the agent optimizers split
the work, and say so in their log:

- the **atom rows** take the agent's move (its shifts in Cartesian space, mapped into the filter's frame);
- the **cell rows** take the cell rows of an L-BFGS step over all generalised coordinates, computed from the
  relaxation's own history of generalised positions and forces (:class:`FilteredPath`), so the cell step knows
  the coupling between atoms and cell that the history shows.

The whole move goes through the filter's ``set_positions``, so constraints (``FixAtoms``, ``FixSymmetry``) act as
they act for ASE's optimizers. The trust region guards the combined move on the filter's energy and generalised
forces.

By name (``sb3-crystal relax --cell NAME``, ``relax_many(..., cell=NAME)``, ``run_batch(..., cell=NAME)``) a
variable-cell relaxation goes through one of :data:`CELL_FILTERS`; :func:`check_gives_stress` refuses, before any
work, a calculator that gives no stress.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ase import Atoms
from ase.filters import Filter, FrechetCellFilter, StrainFilter, UnitCellFilter

from sb3_crystal.calculators import ForceCallCounter
from sb3_crystal.envs.cell import FilteredPath, Geometry, restore_geometry, same_geometry, save_geometry

__all__ = [
    "CELL_FILTERS",
    "FilteredPath",
    "Geometry",
    "cell_filter",
    "cell_fmax",
    "check_gives_stress",
    "describe_filter",
    "restore_geometry",
    "same_geometry",
    "save_geometry",
    "unwrap",
]

#: Variable-cell relaxation by name: the ASE filter it goes through (``frechet``, the everyday protocol of Materials
#: Project and Matbench Discovery; ``unit``, ASE's ``UnitCellFilter``; ``strain``, the cell alone, atoms fixed in
#: fractional coordinates).
CELL_FILTERS: dict[str, type[Filter]] = {"frechet": FrechetCellFilter, "unit": UnitCellFilter, "strain": StrainFilter}


def unwrap(atoms: Any) -> tuple[Atoms, Filter | None]:
    """The structure behind ``atoms`` and the filter around it (``None`` for plain ``Atoms``).

    :raises TypeError: a filter the agent optimizers cannot relax through (a subset ``Filter`` with hidden atoms:
        use a ``FixAtoms`` constraint instead), or neither ``Atoms`` nor a filter.
    """
    if isinstance(atoms, Atoms):
        return atoms, None
    if isinstance(atoms, (UnitCellFilter, StrainFilter)):
        return atoms.atoms, atoms
    if isinstance(atoms, Filter):
        raise TypeError(
            f"{type(atoms).__name__}: the agent optimizers relax through UnitCellFilter, ExpCellFilter, "
            "FrechetCellFilter and StrainFilter; to keep atoms in place use the constraint ase.constraints.FixAtoms"
        )
    inner = getattr(atoms, "atoms", None)
    if isinstance(inner, Atoms) and hasattr(atoms, "get_positions") and hasattr(atoms, "set_positions"):
        raise TypeError(f"{type(atoms).__name__} is not a filter the agent optimizers know (see unwrap)")
    return atoms, None  # not Atoms either: the structure checks name the problem


def describe_filter(filt: Filter) -> str:
    """One line for the log: what moves the atoms and what moves the cell."""
    name = type(filt).__name__
    if isinstance(filt, StrainFilter):
        return f"{name}: only the cell moves (L-BFGS on the strain); the agent has no atoms to move"
    return f"{name}: the agent moves the atoms, L-BFGS on the filter's coordinates moves the cell"


def cell_filter(name: str) -> type[Filter]:
    """The filter class of a name of :data:`CELL_FILTERS`.

    :raises ValueError: an unknown name (the known ones listed).
    """
    if not isinstance(name, str) or name.lower() not in CELL_FILTERS:
        raise ValueError(f"cell must be one of {', '.join(CELL_FILTERS)} (or None: fixed cell), got {name!r}")
    return CELL_FILTERS[name.lower()]


def cell_fmax(filt: Filter) -> float:
    """The largest cell row of the filter's generalised forces: what ASE compares with ``fmax`` for the cell, in the
    filter's units (``FrechetCellFilter``, ``UnitCellFilter``: the virial over the number of atoms, eV;
    ``StrainFilter``: the virial, eV)."""
    forces = np.asarray(filt.get_forces(), dtype=np.float64).reshape(-1, 3)
    rows = forces[0 if isinstance(filt, StrainFilter) else len(filt.atoms) :]
    return float(np.sqrt((rows**2).sum(axis=1)).max(initial=0.0))


def check_gives_stress(atoms: Atoms, calculator: str | None = None) -> None:
    """Raise unless the calculator of ``atoms`` gives a finite stress for them, as a variable-cell relaxation needs.

    The stress is asked once, of a copy of ``atoms`` (of a force-call counter, of the calculator it counts: the
    check is not counted), so call it before any work.

    :param atoms: a structure with its calculator.
    :param calculator: how the calculator is named in the message (default: its class name).
    :raises ValueError: no calculator, one that does not compute the stress, or a non-finite stress.
    """
    calc = atoms.calc.calculator if isinstance(atoms.calc, ForceCallCounter) else atoms.calc
    if calc is None:
        raise ValueError(f"{atoms.get_chemical_formula()}: attach a calculator (atoms.calc) before relaxing")
    label = repr(calculator) if calculator is not None else type(calc).__name__
    declared = getattr(calc, "implemented_properties", None)
    if declared is not None and "stress" not in declared:
        raise ValueError(
            f"a variable-cell relaxation needs the stress, and calculator {label} gives none (it computes "
            f"{', '.join(declared)})"
        )
    probe = atoms.copy()
    probe.calc = calc
    try:
        stress = np.asarray(probe.get_stress(), dtype=np.float64)
    except Exception as err:  # any calculator's failure becomes one line
        message = " ".join(f"{type(err).__name__}: {err}".split())
        raise ValueError(
            f"a variable-cell relaxation needs the stress, and calculator {label} gives none ({message})"
        ) from None
    if not np.all(np.isfinite(stress)):
        raise ValueError(f"calculator {label} gives a non-finite stress for {atoms.get_chemical_formula()}")
