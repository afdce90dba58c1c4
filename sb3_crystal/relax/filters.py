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
"""

from __future__ import annotations

from typing import Any

from ase import Atoms
from ase.filters import Filter, StrainFilter, UnitCellFilter

from sb3_crystal.envs.cell import FilteredPath, Geometry, restore_geometry, same_geometry, save_geometry

__all__ = ["FilteredPath", "Geometry", "describe_filter", "restore_geometry", "same_geometry", "save_geometry", "unwrap"]


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
