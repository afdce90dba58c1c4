""":class:`RLOptimizer`: an ASE optimizer whose steps are a trained agent's moves.

::

    atoms.calc = LammpsEAMCalculator()
    opt = RLOptimizer(atoms, model=load_model("agent_folder"), trajectory="relax.traj")
    converged = opt.run(fmax=0.05, steps=200)
    opt.force_calls  # energy+forces evaluations at distinct geometries, the start included

    RLOptimizer(FrechetCellFilter(atoms)).run(fmax=0.05)  # the cell too (see sb3_crystal.relax.filters)
"""

from __future__ import annotations

import warnings
from typing import IO, Any

import numpy as np
import torch as th
from ase import Atoms
from ase.filters import Filter, FrechetCellFilter

from sb3_crystal.calculators.counting import ForceCallCounter
from sb3_crystal.envs.moves import MoveRule
from sb3_crystal.envs.safeguard import TrustRegion
from sb3_crystal.relax.agent_io import as_agent, check_calculator, load_default_agent
from sb3_crystal.relax.counted import CountedOptimizer, check_agent_can_relax
from sb3_crystal.relax.filters import FilteredPath, describe_filter, unwrap
from sb3_crystal.structures.geometry import closest_pair, largest_norm, max_force

__all__ = ["RLOptimizer"]

#: Through a cell filter, a step that lowers the lowest energy seen by more than this (eV/atom) is progress too.
_ENERGY_PROGRESS = 1e-4


class RLOptimizer(CountedOptimizer):
    """Relax atoms at fixed cell with a trained TD3/SAC agent: each step moves the atoms by the agent's
    deterministic action, exactly as :class:`~sb3_crystal.envs.CrystalRelaxEnv` would (same action scale, same
    contact limiting), then evaluates energy and forces once.

    Through an ASE cell filter (``FrechetCellFilter(atoms)``, ``UnitCellFilter``, ``ExpCellFilter``,
    ``StrainFilter``) the cell relaxes too, and convergence is the filter's (forces and stress): the agent moves
    the atoms and an L-BFGS step over the filter's coordinates moves the cell (:mod:`sb3_crystal.relax.filters`),
    which the log says at the start. Constraints (``FixAtoms``, ``FixSymmetry``) are respected.

    Any number of atoms works: up to the agent's ``n_max`` the observation is padded to ``n_max``; beyond it a
    graph (TFN/CGCNN) actor is called on the observation padded to the structure's own size, while a
    fixed-size (MLP) agent raises ``ValueError``. Species outside those seen in training are refused.

    :param atoms: the structure (an ``Atoms`` with a calculator, fully periodic), or a cell filter around it;
        relaxed in place.
    :param model: a trained TD3/SAC model (``CrystalTD3``, ``CrystalSAC``, ``TD3``, ``SAC``), a
        :class:`~sb3_crystal.relax.agent_io.CrystalAgent`, or ``None`` for the package's shipped agent.
    :param logfile: as in ASE (``"-"`` stdout, a path, a file, or ``None``).
    :param trajectory: as in ASE (a path or an open ``Trajectory``): one frame per step, the start included.
    :param append_trajectory: append to an existing trajectory file.
    :param max_displacement: shift for an action of 1, Å (default: the training environment's, else the env default).
    :param action_scale: ``"fixed"`` or ``"force"`` (default as above).
    :param force_cap: force cap of the ``"force"`` scale, eV/Å (default as above).
    :param min_distance: closest approach the contact rule allows, Å (default as above).
    :param trust_region: safeguard against uphill moves (:class:`~sb3_crystal.envs.safeguard.TrustRegion`): a move
        that raises the energy or the largest force too much is retried shorter, then refused; each try is a
        counted force call. ``"auto"`` (default): the training environment's setting when it recorded one (``False``:
        off), else on;
        ``True``/``False``, or the rule's settings as a dict.
    :param patience: the run stops, unconverged, after this many steps without lowering the smallest fmax seen by
        the fraction ``min_improvement`` (through a cell filter, nor the lowest energy by 1e-4 eV/atom; ``None``:
        never), and says so in the log and :attr:`stop_reason`, rather than spend the rest of the step budget; it
        stops likewise when a force or the energy is no longer finite.
    :param min_improvement: relative drop of the smallest fmax that counts as progress.
    :param energy_progress: whether, at fixed cell too, a step that lowers the lowest energy seen by 1e-4 eV/atom is
        progress for ``patience`` (through a cell filter it always is). ``"auto"`` (default): on for agents that
        correct the learned curvature's step (``proposal="curvature"``, the step whose stall rule was chosen on the
        validation families, ``docs/curvature.md``), off for the others (the max force alone).
    """

    def __init__(
        self,
        atoms: Atoms | Filter,
        model: Any = None,
        logfile: IO | str | None = "-",
        trajectory: Any = None,
        append_trajectory: bool = False,
        max_displacement: float | None = None,
        action_scale: str | None = None,
        force_cap: float | None = None,
        min_distance: float | None = None,
        trust_region: Any = "auto",
        patience: int | None = 10,
        min_improvement: float = 0.01,
        energy_progress: bool | str = "auto",
    ) -> None:
        if not (isinstance(energy_progress, bool) or energy_progress == "auto"):
            raise ValueError(f"energy_progress must be True, False or 'auto', got {energy_progress!r}")
        if patience is not None and not (isinstance(patience, int) and patience >= 1):
            raise ValueError(f"patience must be a positive integer or None, got {patience!r}")
        if not (isinstance(min_improvement, (int, float)) and 0 <= min_improvement < 1):
            raise ValueError(f"min_improvement must be in [0, 1), got {min_improvement!r}")
        self.agent = load_default_agent() if model is None else as_agent(model)
        self.settings = self.agent.move_settings(
            max_displacement=max_displacement, action_scale=action_scale, force_cap=force_cap, min_distance=min_distance
        )
        self._moves = MoveRule(**self.settings)  # the environment's own rule; validates the settings
        #: what the agent observes (its training environment's layout).
        self.layout = self.agent.layout
        if self._moves.action_mode == "residual" and self.layout.proposal == "none":
            raise ValueError("this agent corrects a classical proposal (action_mode='residual') but observes none")
        #: the points of this relaxation the observation draws its history from.
        self.history = self.layout.new_history()
        self._after_step: np.ndarray | None = None
        self._proposal: np.ndarray | None = None
        structure, filt = unwrap(atoms)
        if self.layout.cell and not isinstance(filt, FrechetCellFilter):
            given = "a structure at fixed cell" if filt is None else type(filt).__name__
            raise ValueError(
                f"this agent relaxes the cell through FrechetCellFilter's coordinates, as it was trained; got {given}: "
                "use RLOptimizer(FrechetCellFilter(atoms), ...)"
            )
        check_agent_can_relax(self.agent, structure)
        calc = structure.calc.calculator if isinstance(structure.calc, ForceCallCounter) else structure.calc
        check_calculator(self.agent, calc)  # warns when the agent learned on another energy surface
        if isinstance(trust_region, str):
            if trust_region != "auto":
                raise ValueError(f"trust_region must be 'auto', a bool, a dict or a TrustRegion, got {trust_region!r}")
            recorded = self.agent.env_settings.get("trust_region")
            trust_region = True if recorded is None else recorded
        #: the safeguard against uphill moves (``None``: off).
        self.trust_region = TrustRegion.from_config(trust_region)
        self.patience, self.min_improvement = patience, float(min_improvement)
        #: whether a lower energy counts as progress for ``patience`` at fixed cell (see ``energy_progress``).
        self.energy_progress = self.layout.proposal == "curvature" if energy_progress == "auto" else energy_progress
        #: why the last run stopped before converging (``"stalled"``, ``"diverged"``), else ``None``.
        self.stop_reason: str | None = None
        #: tries the trust region rejected in this optimizer's runs.
        self.rejected = 0
        self._best_fmax, self._best_energy, self._since_best = np.inf, np.inf, 0
        #: fraction of the agent's last move kept by the contact rule, and the largest atomic shift (Å) of that move.
        self.last_fraction = 1.0
        self.last_max_shift = float("nan")
        super().__init__(atoms, logfile=logfile, trajectory=trajectory, append_trajectory=append_trajectory)
        #: the generalised coordinates of a filtered relaxation (``None`` at fixed cell); a cell-aware agent observes
        #: their history.
        self.path: FilteredPath | None = None
        if filt is not None:
            history = self.history if self.layout.cell else None
            self.path = FilteredPath(filt, self.layout.proposal_memory, self.layout.proposal_max_step, history)
            line = (
                f"{type(filt).__name__}: the agent moves the atoms and the cell" if self.layout.cell else describe_filter(filt)
            )
            self.logfile.write(line + "\n")

    def todict(self) -> dict[str, Any]:
        description = super().todict()
        description.update(self.settings, n_max=self.agent.n_max, policy=type(self.agent.policy).__name__)
        if self.filter is not None:
            description["filter"] = type(self.filter).__name__
        return description

    def _before_run(self) -> None:
        self._after_step = None  # a run starts a new history
        if self.path is not None:
            self.path.forget()
        self.stop_reason = None
        forces = self._current()[1]  # the run's first evaluation: ASE asks for it next anyway
        self._best_fmax = max_force(forces)
        self._best_energy = float(self._current()[0])
        self._since_best = 0
        distance = self.settings["min_distance"]
        if distance > 0:
            i, j, d = closest_pair(self.structure, search_radius=distance)
            if d < distance:
                warnings.warn(
                    f"Atoms {i} and {j} are {d:.3f} Å apart, closer than the agent's min_distance {distance} Å: the "
                    "contact rule blocks every move (use HybridOptimizer, or a smaller min_distance)",
                    stacklevel=3,
                )

    def observation(self, forces: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The environment's observation of the current structure, padded to ``max(n_max, len(atoms))`` slots.

        The relaxation history (the agent's layout may observe past steps) is brought up to date first: when the
        atoms are where this optimizer's last step left them, the current point is recorded as a new step, as the
        environment records it; when they were moved by anything else (or nothing was recorded yet), the history
        starts again here.

        :param forces: forces of the current structure (default: asked of the calculator).
        """
        atoms = self.structure
        if forces is None:
            forces = atoms.get_forces()
        energy = float(atoms.get_potential_energy())
        positions = np.array(atoms.positions, dtype=np.float64)
        if self._after_step is not None and np.array_equal(positions, self._after_step):
            self.history.record(positions, forces, energy)
        else:
            self.history.reset(positions, forces, energy)
        self._after_step = None
        self._proposal = self.layout.proposal_step(self.history, atoms.numbers, np.array(atoms.cell))
        slots = max(len(atoms), self.agent.n_max)
        return self.layout.build(atoms.numbers, np.array(atoms.cell), self.history, n_slots=slots, proposal=self._proposal)

    def action(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        """The agent's deterministic action for an observation of :meth:`observation`, ``3 * slots`` numbers."""
        policy = self.agent.policy
        slots = observation["mask"].shape[0]
        if slots == self.agent.n_max:
            action, _ = policy.predict(observation, deterministic=True)
            return np.asarray(action, dtype=np.float64).reshape(-1)
        # More atoms than the observation space has slots: SB3's predict checks shapes, so call the graph actor
        # directly. Its action space is Box(−1, 1), where SB3's unscaling is the identity.
        policy.set_training_mode(False)
        tensors = {key: th.as_tensor(value[None], device=policy.device) for key, value in observation.items()}
        with th.no_grad():  # a graph actor takes any number of atom slots
            action = policy._predict(tensors, deterministic=True)
        return np.clip(action.cpu().numpy().astype(np.float64).reshape(-1), -1.0, 1.0)

    def step(self) -> None:
        if self.path is not None:
            self._filtered_step()
            return
        forces = np.asarray(self.atoms.get_forces(), dtype=np.float64)
        shifts = self._agent_shifts(forces)
        if self.trust_region is not None and np.abs(shifts).max(initial=0.0) > 0:
            shifts = self._guarded(shifts, forces)
        elif np.abs(shifts).max(initial=0.0) > 0:  # a fully blocked move leaves the geometry (and the cache) alone
            self.optimizable.set_x((self.atoms.positions + shifts).ravel())
        self.last_max_shift = largest_norm(shifts)
        self._after_step = np.array(self.atoms.positions, dtype=np.float64)
        self._check_progress()

    def _agent_shifts(self, forces: np.ndarray) -> np.ndarray:
        """The agent's move from the current structure, Å (after the contact rule)."""
        observation = self.observation(forces)
        action = self.action(observation)
        structure = self.structure
        shifts, fraction = self._moves.move(
            structure.positions, np.array(structure.cell), forces, action, observation["mask"].shape[0], self._proposal
        )
        self.last_fraction = float(fraction)
        return shifts

    def _agent_cell_move(self, forces: np.ndarray) -> np.ndarray:
        """A cell-aware agent's move: its atomic shifts (Å) then the filter's cell rows, (n_atoms + 3, 3)."""
        assert self.path is not None
        structure, n = self.structure, len(self.structure)
        self._proposal = self.layout.proposal_step(
            self.history, structure.numbers, np.array(structure.cell), self.path.frame()
        )
        slots = max(n, self.agent.n_max)
        observation = self.layout.build(
            structure.numbers,
            np.array(structure.cell),
            self.history,
            n_slots=slots,
            proposal=self._proposal,
            structure=(np.array(structure.positions, dtype=np.float64), forces),
        )
        action = self.action(observation)
        proposal = self._proposal
        atom_base, cell_base = (None, None) if proposal is None else (proposal[:n], proposal[n:])
        shifts, fraction = self._moves.move(structure.positions, np.array(structure.cell), forces, action, slots, atom_base)
        self.last_fraction = float(fraction)
        return np.vstack([shifts, self._moves.cell_step(action, slots, self.path.cell_factor, cell_base)])

    def _filtered_step(self) -> None:
        """One step through a filter: the agent's shifts for the atom rows, L-BFGS for the cell rows."""
        assert self.path is not None
        path = self.path
        path.update()
        n = path.atom_rows
        forces = np.asarray(self.structure.get_forces(), dtype=np.float64)
        if self.layout.cell:  # the agent moves the cell too
            move = self._agent_cell_move(forces)
        else:
            shifts = self._agent_shifts(forces) if n else np.zeros((0, 3))
            move = np.vstack([shifts, path.cell_step()])
        base = path.save()
        energy, forces = self._current()
        if self.trust_region is not None and np.any(move):
            tried: list[np.ndarray] = []

            def evaluate(trial: np.ndarray) -> tuple[float, np.ndarray]:
                path.move(base, trial)
                if np.any(trial):
                    tried.append(np.asarray(path.filter.get_positions(), dtype=np.float64).reshape(-1, 3).copy())
                return self._current()

            outcome = self.trust_region.step(move, energy, forces, evaluate, n_atoms=len(self.structure))
            self.rejected += outcome.rejected
            move = outcome.shifts
            if self.layout.cell:  # the observed history learns from refused tries, as at fixed cell
                path.record_refused(tried, outcome.rejected_points, base)
        elif np.any(move):
            path.move(base, move)
        self.last_max_shift = largest_norm(move[:n]) if n else 0.0
        self._after_step = np.array(self.structure.positions, dtype=np.float64)
        path.moved()
        self._check_progress()

    def _guarded(self, shifts: np.ndarray, forces: np.ndarray) -> np.ndarray:
        """Make the move through the trust region; :return: the shifts finally made."""
        assert self.trust_region is not None
        base = np.array(self.atoms.positions, dtype=np.float64)
        energy = float(self.atoms.get_potential_energy())

        def evaluate(trial: np.ndarray) -> tuple[float, np.ndarray]:
            self.optimizable.set_x((base + trial).ravel())  # back to base is free: the counter remembers it
            return float(self.atoms.get_potential_energy()), np.asarray(self.atoms.get_forces(), dtype=np.float64)

        outcome = self.trust_region.step(shifts, energy, forces, evaluate)
        TrustRegion.record_rejected(self.history, outcome, base, energy, forces)
        self.rejected += outcome.rejected
        return outcome.shifts

    def _check_progress(self) -> None:
        """Stop the run (unconverged, said in the log) when the agent stalls or the relaxation diverges."""
        energy, forces = self._current()
        fmax = max_force(forces)
        energy_counts = self.path is not None or self.energy_progress
        reason = None
        if not (np.isfinite(energy) and np.isfinite(fmax)):
            reason = "diverged"
        elif fmax < self._best_fmax * (1.0 - self.min_improvement):
            self._best_fmax, self._since_best = fmax, 0
            self._best_energy = min(self._best_energy, energy)
        elif energy_counts and energy < self._best_energy - _ENERGY_PROGRESS * len(self.structure):
            # through a cell filter the energy can fall for many steps while the cell rows' forces stay: progress (and
            # with energy_progress at fixed cell too)
            self._best_energy, self._since_best = energy, 0
        else:
            self._since_best += 1
            if self.patience is not None and self._since_best >= self.patience:
                reason = "stalled"
        if reason is not None:
            self.stop_reason = reason
            self.max_steps = self.nsteps + 1  # ASE's loop ends after this step
            message = (
                f"{type(self).__name__}: the agent {reason} (fmax {fmax:.4g} eV/Å, best {self._best_fmax:.4g}, after "
                f"{self.nsteps + 1} steps): stopping unconverged; HybridOptimizer finishes with a classical optimizer"
            )
            self.logfile.write(message + "\n")
            warnings.warn(message, stacklevel=2)
