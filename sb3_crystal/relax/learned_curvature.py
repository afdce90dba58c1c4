""":class:`LearnedCurvature`: an ASE optimizer that steps with a learned Hessian, inside the agents' trust region.

::

    atoms.calc = LammpsEAMCalculator()
    LearnedCurvature(atoms).run(fmax=0.05)
    LearnedCurvature(FrechetCellFilter(atoms)).run(fmax=0.05)  # the cell too, with the model's cell block

Each step is the quasi-Newton step of the shipped Al–Fe Hessian model (:func:`sb3_crystal.curvature.curvature_step`:
the model's Hessian made positive definite, the newest secant pair folded in only after a step without progress),
taken through the :class:`~sb3_crystal.envs.safeguard.TrustRegion` that guards the agents (every try is a counted
force call). It is exactly the zero action of a residual agent that observes ``proposal="curvature"``: the
starting point that RL refines, and a relaxer in its own right. The model was fitted by least squares to exact EAM
Hessians of generated structures (supervised, not RL; ``docs/curvature.md``), so it is meant for the Mendelev
Al–Fe EAM and for Al–Fe structures; other elements are refused.

Through ``FrechetCellFilter`` the step moves atoms and cell together: the quasi-Newton step in the filter's
coordinates of the model's Hessian over atoms and a homogeneous deformation
(:func:`sb3_crystal.curvature.cell_curvature_step`, the shipped cell model), the zero action of a residual agent
that observes ``proposal="curvature"`` with ``cell=True``. Through the other cell filters (``UnitCellFilter``,
``ExpCellFilter``, ``StrainFilter``), and through a ``FrechetCellFilter`` with a mask, ``hydrostatic_strain``,
``constant_volume`` or a ``scalar_pressure`` (whose generalised forces are no longer the plain energy's gradient
that the joint step models), the atoms take the fixed-cell step and L-BFGS moves the cell rows
(:mod:`sb3_crystal.relax.filters`).
"""

from __future__ import annotations

from typing import IO, Any

import numpy as np
from ase import Atoms
from ase.filters import Filter, FrechetCellFilter

from sb3_crystal.envs.observation import ObservationLayout
from sb3_crystal.relax.agent_io import CrystalAgent, ZeroPolicy
from sb3_crystal.relax.filters import unwrap
from sb3_crystal.relax.rl_optimizer import RLOptimizer

__all__ = ["LearnedCurvature"]

#: The move settings of the zero-action residual agent this optimizer is (its action adds nothing to the proposal).
_SETTINGS: dict[str, Any] = {
    "action_mode": "residual",
    "max_displacement": 0.05,
    "action_scale": "fixed",
    "min_distance": 1.0,
    "trust_region": True,
}


class LearnedCurvature(RLOptimizer):
    """Relax with the learned Hessian's quasi-Newton steps (see the module docstring).

    :param atoms: the structure (an Al–Fe ``Atoms`` with a calculator), or a cell filter around it
        (``FrechetCellFilter``: atoms and cell take the model's joint step).
    :param logfile: as in ASE.
    :param trajectory: as in ASE.
    :param append_trajectory: append to an existing trajectory file.
    :param max_step: longest atomic step, Å (the cap the model was measured with by default); through
        ``FrechetCellFilter`` the longest row, a cell row counted in the filter's units.
    :param trust_region: the safeguard (``True``: the agents' default rule; a dict of its settings; ``False``: off).
    :param patience: stop unconverged after this many steps without progress (``None``: never), as
        :class:`RLOptimizer`: without lowering the smallest max force seen by 1 % nor, with ``energy_progress``, the
        lowest energy seen by 1e-4 eV/atom.
    :param energy_progress: count a lower energy as progress too (default; through a cell filter it always counts).
        The rule was chosen on the validation families, where the runs' longest streaks without progress were much
        shorter with it than by the max force alone (``docs/curvature.md``): slow stretches in which the max force
        rises while the energy still falls are not taken for a stall.
    """

    def __init__(
        self,
        atoms: Atoms | Filter,
        logfile: IO | str | None = "-",
        trajectory: Any = None,
        append_trajectory: bool = False,
        max_step: float | None = None,
        trust_region: Any = True,
        patience: int | None = 10,
        energy_progress: bool = True,
    ) -> None:
        if not isinstance(energy_progress, bool):
            raise ValueError(f"energy_progress must be True or False, got {energy_progress!r}")
        structure, filt = unwrap(atoms)
        cell = _plain_frechet(filt)  # the model's cell block is written in this filter's coordinates
        layout = ObservationLayout(n_max=max(len(structure), 1), proposal="curvature", proposal_max_step=max_step, cell=cell)
        agent = CrystalAgent(ZeroPolicy(), layout.n_max, dict(_SETTINGS), ("Al", "Fe"), observation=layout.to_dict())
        super().__init__(
            atoms,
            model=agent,
            logfile=logfile,
            trajectory=trajectory,
            append_trajectory=append_trajectory,
            trust_region=trust_region,
            patience=patience,
            energy_progress=energy_progress,
        )


def _plain_frechet(filt: Filter | None) -> bool:
    """Whether ``filt`` is a ``FrechetCellFilter`` whose generalised forces are the energy's exact gradient in its
    coordinates: every strain component free, no hydrostatic or constant-volume projection, no applied pressure."""
    if not isinstance(filt, FrechetCellFilter):
        return False
    return bool(
        np.all(np.asarray(filt.mask) == 1)
        and not filt.hydrostatic_strain
        and not filt.constant_volume
        and float(filt.scalar_pressure) == 0.0
    )
