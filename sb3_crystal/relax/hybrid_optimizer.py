""":class:`HybridOptimizer`: the agent relaxes while it makes progress, then a classical optimizer, the finisher,
converges."""

from __future__ import annotations

from typing import IO, Any

import numpy as np
from ase import Atoms
from ase.filters import Filter
from ase.optimize import BFGSLineSearch, GPMin
from ase.optimize.optimize import Optimizer

from sb3_crystal._deprecation import renamed_keyword
from sb3_crystal.optimizers import CLASSICAL_OPTIMIZERS, STEPWISE_OPTIMIZERS, optimizer_name
from sb3_crystal.relax.counted import CountedOptimizer
from sb3_crystal.relax.filters import Geometry, restore_geometry, same_geometry, save_geometry, unwrap
from sb3_crystal.relax.rl_optimizer import RLOptimizer
from sb3_crystal.relax.warm_start import warm_start, with_preset_inverse_hessian
from sb3_crystal.structures.geometry import max_force
from sb3_crystal.structures.validation import check_type

__all__ = ["AUTO_GPMIN_MAX_ATOMS", "DEFAULT_FINISHER", "FINISHERS", "HybridOptimizer", "is_auto_finisher"]

#: Finishers (classical optimizers the hybrid hands over to), by name: the shared table's stepwise optimizers.
FINISHERS: dict[str, type[Optimizer]] = {name: CLASSICAL_OPTIMIZERS[name] for name in STEPWISE_OPTIMIZERS}
_FINISHER_NAMES = {name.lower() for name in FINISHERS}

#: The hybrid's finisher unless told otherwise: ``"auto"``, BFGSLineSearch when the agent reached ``switch_fmax``,
#: else GPMin on cells of up to :data:`AUTO_GPMIN_MAX_ATOMS` atoms and BFGSLineSearch on larger ones (see
#: :class:`HybridOptimizer`).
DEFAULT_FINISHER = "auto"

#: ``"auto"`` finishes with GPMin up to this many atoms, the largest cells GPMin was measured on as a finisher
#: (docs/results.md). GPMin's model grows with the cube of (steps × 3N); BFGSLineSearch takes over above.
AUTO_GPMIN_MAX_ATOMS = 8


def is_auto_finisher(finisher: Any) -> bool:
    """Whether ``finisher`` names the ``"auto"`` finisher (any case)."""
    return isinstance(finisher, str) and finisher.lower() == "auto"


#: Relative fmax decrease that counts as progress of the agent (smaller changes are numerical noise).
_IMPROVEMENT = 1e-6


class HybridOptimizer(CountedOptimizer):
    """The agent relaxes until the largest force is at most ``switch_fmax``, then the finisher, a classical optimizer,
    converges to ``fmax``.

    The agent also hands over early, and the finisher then restarts from the **lowest-energy geometry seen** (one
    step of this optimizer, free of force calls: that geometry was evaluated before), when

    - it stalls: ``patience`` agent steps without lowering the smallest fmax seen by at least the fraction
      ``min_improvement`` (an agent that only crawls costs more force calls than the finisher), or a move fully
      blocked by the contact rule (a deterministic agent would repeat it forever);
    - it raises the energy more than ``max_energy_rise`` eV/atom above the lowest seen;
    - it has taken ``max_agent_steps`` steps.

    The defaults keep the agent only while each step cuts the smallest fmax by 30 % and lowers the energy: on
    structures it never saw, a trained agent's first one or two steps from a distorted start are its useful ones.

    With ``warm_start`` the agent's force calls also inform the finisher (:func:`warm_start`): a quasi-Newton
    finisher starts from the BFGS update of its initial Hessian by the secant pairs of the agent's path, GPMin from a
    training set holding the agent's points near the handover geometry.

    After the handover the path is the finisher's from that geometry, so the hybrid converges whenever the finisher
    does from there, even with an untrained agent. Force calls cover both phases, each geometry once (the handover
    geometry is not counted again).

    The ``"auto"`` finisher: near a minimum (the agent reached ``switch_fmax``) a quasi-Newton step from the agent's
    secant pairs is best, so BFGSLineSearch; after an early handover far from a minimum GPMin, warm-started with the
    agent's nearby points, on cells of up to :data:`AUTO_GPMIN_MAX_ATOMS` atoms (its cost grows with the cube of
    steps × 3N, and its path depends on ``fmax``), BFGSLineSearch on larger ones. The measurements behind this
    choice are in docs/results.md (*The hybrid target on unseen structures*).

    :param atoms: the structure (with a calculator, fully periodic), or a cell filter around it (the agent moves
        the atoms as in :class:`RLOptimizer`, and the classical optimizer then relaxes the filter); relaxed in place.
    :param model: as for :class:`RLOptimizer`.
    :param switch_fmax: hand over at fmax ≤ this, eV/Å (``--switch-fmax`` on the command line); the convergence
        threshold is ``fmax`` of :meth:`run`, as in ASE.
    :param finisher: a name of :data:`FINISHERS` (any case), an ASE Optimizer class, or ``"auto"`` (the default,
        see above).
    :param finisher_kwargs: the finisher's arguments (``maxstep`` ...).
    :param patience: agent steps without enough fmax improvement before a stall handover.
    :param min_improvement: relative drop of the smallest fmax seen that counts as progress (0.3 = 30 %).
    :param max_energy_rise: energy rise over the lowest seen that triggers a handover, eV per atom (0: any rise).
    :param max_agent_steps: most agent steps (``None``: no limit).
    :param warm_start: give the finisher what the agent's force calls taught (see above).
    :param logfile: as in ASE.
    :param trajectory: as in ASE: one frame per step of either phase, the start included.
    :param append_trajectory: append to an existing trajectory file.
    :param move_settings: ``max_displacement``, ``action_scale``, ``force_cap``, ``min_distance`` (see
        :class:`RLOptimizer`). The deprecated names ``f_switch``, ``optimizer`` and ``optimizer_kwargs`` (of
        ``switch_fmax``, ``finisher`` and ``finisher_kwargs``) still work and warn.
    """

    def __init__(
        self,
        atoms: Atoms | Filter,
        model: Any = None,
        switch_fmax: float = 0.1,
        finisher: str | type[Optimizer] = DEFAULT_FINISHER,
        finisher_kwargs: dict[str, Any] | None = None,
        patience: int = 1,
        min_improvement: float = 0.3,
        max_energy_rise: float = 0.0,
        max_agent_steps: int | None = None,
        warm_start: bool = True,
        logfile: IO | str | None = "-",
        trajectory: Any = None,
        append_trajectory: bool = False,
        **move_settings: Any,
    ) -> None:
        owner = type(self).__name__
        switch_fmax = renamed_keyword(move_settings, "f_switch", "switch_fmax", switch_fmax, 0.1, owner)
        finisher = renamed_keyword(move_settings, "optimizer", "finisher", finisher, DEFAULT_FINISHER, owner)
        finisher_kwargs = renamed_keyword(move_settings, "optimizer_kwargs", "finisher_kwargs", finisher_kwargs, None, owner)
        structure, _ = unwrap(atoms)
        check_type(structure)  # before len(structure) below
        if not switch_fmax > 0:
            raise ValueError(f"switch_fmax must be > 0 eV/Å, got {switch_fmax}")
        if not (isinstance(patience, int) and patience >= 1):
            raise ValueError(f"patience must be a positive integer, got {patience!r}")
        if not max_energy_rise >= 0:
            raise ValueError(f"max_energy_rise must be ≥ 0 eV/atom, got {max_energy_rise}")
        if max_agent_steps is not None and max_agent_steps < 0:
            raise ValueError(f"max_agent_steps must be ≥ 0 or None, got {max_agent_steps}")
        self._auto_finisher = is_auto_finisher(finisher)
        #: the finisher's class (for ``"auto"``: the one for a handover far from the minimum, until the handover).
        self.finisher_class = self.resolve_finisher(finisher, len(structure))
        self.finisher_kwargs = dict(finisher_kwargs or {})
        self.switch_fmax = float(switch_fmax)
        self.patience = patience
        if not 0 <= min_improvement < 1:
            raise ValueError(f"min_improvement must be in [0, 1), got {min_improvement}")
        self.min_improvement = float(min_improvement)
        self.max_energy_rise = float(max_energy_rise)
        self.max_agent_steps = max_agent_steps
        self.warm_start = bool(warm_start)
        #: secant pairs (BFGS, BFGSLineSearch) or points (GPMin) of the agent's path given to the finisher.
        self.warm_start_size = 0
        #: the agent's optimizer (steps only: this optimizer logs, writes the trajectory and counts).
        self.agent_optimizer = RLOptimizer(atoms, model, logfile=None, trust_region=False, patience=None, **move_settings)
        self.agent = self.agent_optimizer.agent
        #: the finisher, from the handover on (``None`` before).
        self.finisher: Optimizer | None = None
        #: ``"agent"`` or ``"finisher"``.
        self.phase = "agent"
        #: why the agent handed over (``"switch_fmax"``, ``"stall"``, ``"blocked"``, ``"energy"``,
        #: ``"agent_steps"``) or None.
        self.handover_reason: str | None = None
        #: step count and force calls at the handover (``None`` before).
        self.handover_step: int | None = None
        self.handover_force_calls: int | None = None
        self.agent_steps = 0
        self.finisher_steps = 0
        self._best_energy = np.inf
        self._best_geometry: Geometry | None = None
        self._best_fmax = np.inf
        self._since_improvement = 0
        self._path: list[tuple[np.ndarray, float, np.ndarray]] = []  # (x, energy, gradient) of the agent's geometries
        super().__init__(atoms, logfile=logfile, trajectory=trajectory, append_trajectory=append_trajectory)

    @staticmethod
    def resolve_finisher(finisher: str | type[Optimizer], n_atoms: int | None = None) -> type[Optimizer]:
        """A finisher class by name (a key of :data:`FINISHERS`, any case), the class itself, or for ``"auto"`` the
        one for a cell of ``n_atoms`` atoms after an early handover (GPMin up to :data:`AUTO_GPMIN_MAX_ATOMS`, else
        BFGSLineSearch)."""
        if isinstance(finisher, type) and issubclass(finisher, Optimizer):
            return finisher
        if is_auto_finisher(finisher):
            if n_atoms is None:
                raise ValueError("finisher 'auto' depends on the number of atoms: give n_atoms")
            return GPMin if n_atoms <= AUTO_GPMIN_MAX_ATOMS else BFGSLineSearch
        name = optimizer_name(finisher) if isinstance(finisher, str) and finisher.lower() in _FINISHER_NAMES else None
        if name is None or name not in FINISHERS:
            raise ValueError(f"Unknown finisher {finisher!r}: choose from auto, {', '.join(FINISHERS)}")
        return FINISHERS[name]

    def make_finisher(self, atoms: Atoms | None = None) -> Optimizer:
        """A new finisher (silent) on ``atoms`` (default: this optimizer's): of :attr:`finisher_class`, but for a
        BFGSLineSearch with warm start of a subclass that keeps the inverse Hessian :func:`warm_start` sets.

        :param atoms: the structure.
        :return: the finisher, with :attr:`finisher_kwargs`.
        """
        cls = self.finisher_class
        if self.warm_start and issubclass(cls, BFGSLineSearch):
            cls = with_preset_inverse_hessian(cls)
        return cls(self.atoms if atoms is None else atoms, logfile=None, **self.finisher_kwargs)

    def todict(self) -> dict[str, Any]:
        description = super().todict()
        description.update(
            self.agent_optimizer.settings,
            switch_fmax=self.switch_fmax,
            finisher=self.finisher_class.__name__,
            patience=self.patience,
            max_energy_rise=self.max_energy_rise,
            warm_start=self.warm_start,
        )
        return description

    def step(self) -> None:
        if self.phase == "agent":
            reason = self._handover_reason()
            if reason is None:
                self.agent_optimizer.step()
                self.agent_optimizer.nsteps += 1
                self.agent_steps += 1
                return
            if self._hand_over(reason):
                return  # going back to the lowest-energy geometry is this step
        assert self.finisher is not None
        self.finisher.step()
        self.finisher.nsteps += 1
        self.finisher_steps += 1

    def _handover_reason(self) -> str | None:
        """Update the records with the current geometry and say whether (and why) the agent hands over now."""
        energy, forces = self._current()
        fmax = max_force(forces)
        self._path.append((self.optimizable.get_x().copy(), energy, -forces.ravel()))
        if energy < self._best_energy:
            self._best_energy, self._best_geometry = energy, save_geometry(self.structure, self.filter)
        if fmax < self._best_fmax * (1.0 - max(self.min_improvement, _IMPROVEMENT)):
            self._best_fmax, self._since_improvement = fmax, 0
        elif self.agent_steps > 0:
            self._since_improvement += 1
        if fmax <= self.switch_fmax:
            return "switch_fmax"
        if energy - self._best_energy > self.max_energy_rise * len(self.structure):
            return "energy"
        if self.agent_steps > 0 and self.agent_optimizer.last_max_shift == 0:
            return "blocked"
        if self._since_improvement >= self.patience:
            return "stall"
        if self.max_agent_steps is not None and self.agent_steps >= self.max_agent_steps:
            return "agent_steps"
        return None

    def _hand_over(self, reason: str) -> bool:
        """Switch to the finisher; :return: whether the atoms went back to the lowest-energy geometry."""
        self.phase, self.handover_reason = "finisher", reason
        if self._auto_finisher and reason == "switch_fmax":
            self.finisher_class = BFGSLineSearch
        self.handover_step, self.handover_force_calls = self.nsteps, self.force_calls
        best = self._best_geometry
        restart = (
            reason != "switch_fmax"
            and best is not None
            and not same_geometry(best, save_geometry(self.structure, self.filter))
        )
        if restart:
            assert best is not None
            restore_geometry(self.structure, self.filter, best)
        self.finisher = self.make_finisher()
        self.finisher.fmax = self.fmax
        if self.warm_start:
            self.warm_start_size = warm_start(self.finisher, self._path)
        where = "the lowest-energy geometry" if restart else "here"
        taught = f", warm-started with {self.warm_start_size} of the agent's points" if self.warm_start_size else ""
        self.logfile.write(
            f"{type(self).__name__}: agent hands over to {self.finisher_class.__name__} after {self.agent_steps} "
            f"steps ({reason}), from {where}{taught}\n"
        )
        return restart
