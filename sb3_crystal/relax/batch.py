"""Relaxing many structures in one process, in lockstep: one policy forward pass per step for all of them.

::

    results = relax_many(structures, model=load_shipped_agent("alfe"), fmax=0.05)
    [(r.converged, r.force_calls) for r in results]  # one result per input, in order

Each structure relaxes as its own :class:`~sb3_crystal.relax.RLOptimizer` would relax it alone (or, with
``hybrid``, its own :class:`~sb3_crystal.relax.HybridOptimizer`): its own history, trust region, stall rule,
force-call counter and convergence test. Only the work is shared: at each step the observations of every structure
that is about to take an agent step are stacked and the policy is called once (structures that fit the agent's
``n_max`` slots as one batch through SB3's ``predict``, exactly as a lone optimizer calls it; larger cells of a
graph actor as a second batch, padded to the largest of them). A structure that converges, stalls or runs out of
steps leaves the batch, and the next waiting structure joins. So each structure takes the same steps and force
calls as when relaxed alone; only floating-point rounding of the batched network can differ (a few 1e-8 Å in the
positions).

Agent-only relaxations run on arrays (:class:`_ArrayLockstep`): the structures' positions, forces, energies and
histories are held as zero-padded (structures, atom slots, 3) arrays, and the observation
(:func:`stack_observations`, :class:`HistoryBatch`), the move rule (:func:`batched_shifts`), the contact limit (a
vectorised test, :func:`surely_clear`, clears the moves that certainly keep every pair apart; the others go through
:meth:`~sb3_crystal.envs.moves.MoveRule.contact_fraction`), the trust region's tries and accept test
(:func:`batched_accepts`), the stall rule and ASE's convergence test are computed for all structures at once, with
the same floating-point operations as the per-structure code (the tests check this bit for bit). Only the
calculator is called per structure, through the structure's force-call counter. With ``hybrid`` each structure
keeps its own optimizer object, driven by ASE's step loop, and only the agent's forward pass is batched.

With ``cell`` (a name of :data:`~sb3_crystal.relax.filters.CELL_FILTERS`) the cell relaxes too: each structure
relaxes through its own ASE filter, as ``RLOptimizer(FrechetCellFilter(atoms))`` (or the hybrid) relaxes it alone,
and converges when the filter's generalised forces (atomic forces and cell rows) are all below ``fmax``. Such
relaxations do not take the array path: they keep one optimizer object per structure (:class:`_Lockstep`), and only
the policy pass of a fixed-cell agent's atom moves is batched; a cell-aware agent, and ``StrainFilter`` (no atoms to
move), predict per structure.

:func:`relax_structure` does the same for a pymatgen ``Structure``; :func:`relax_many` takes ``Structure`` inputs too
and gives ``Structure`` results for them.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any

import numpy as np
import torch as th
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.cell import Cell

from sb3_crystal.benchmark.classical import ForceCallCounter
from sb3_crystal.calculators import CalculatorSpec, LammpsEAMCalculator, make_calculator
from sb3_crystal.envs.moves import PROPOSAL_REFERENCE, MoveRule
from sb3_crystal.envs.observation import (
    LOG_FMAX_FLOOR,
    N_SIGNALS,
    SIGNAL_STEP_SCALE,
    ObservationLayout,
    lbfgs_step,
    step_cap,
)
from sb3_crystal.envs.safeguard import TrustRegion
from sb3_crystal.relax.agent_io import CrystalAgent, as_agent, check_calculator, load_default_agent
from sb3_crystal.relax.counted import _COUNTER_MEMORY, _checked_run_arguments, check_agent_can_relax
from sb3_crystal.relax.filters import cell_filter, cell_fmax, check_gives_stress
from sb3_crystal.relax.hybrid_optimizer import HybridOptimizer
from sb3_crystal.relax.rl_optimizer import RLOptimizer
from sb3_crystal.structures.geometry import closest_pair, max_force
from sb3_crystal.threads import blas_threads

__all__ = [
    "BatchProfile",
    "HistoryBatch",
    "RelaxationResult",
    "batched_accepts",
    "batched_actions",
    "batched_shifts",
    "relax_many",
    "relax_structure",
    "stack_observations",
    "surely_clear",
]

#: Observation fields that are not per atom (everything else has the atom slots as first axis).
_GLOBAL_KEYS = frozenset({"cell", "signals"})
#: Why a relaxation ended.
STOP_REASONS = ("converged", "max_steps", "stalled", "diverged", "error")


@dataclass
class RelaxationResult:
    """The outcome of relaxing one structure.

    :param index: position of the structure in the input.
    :param structure: the relaxed structure (``ase.Atoms`` with a single-point calculator holding the final energy
        and forces, or a pymatgen ``Structure`` for a ``Structure`` input, with ``forces`` as a site property);
        ``None`` when the relaxation failed before it started.
    :param converged: the largest force fell below ``fmax``.
    :param force_calls: energy+forces evaluations at distinct geometries, the start included (trust-region tries too).
    :param fmax: largest atomic force at the end, eV/Å (``nan`` on error).
    :param energy: energy at the end, eV (``nan`` on error).
    :param steps: optimizer steps taken.
    :param wall_time: seconds spent on this structure: its own steps (calculator, observation, moves) plus its share
        of the batched policy passes it took part in.
    :param stop_reason: one of ``"converged"``, ``"max_steps"``, ``"stalled"``, ``"diverged"`` (the agent's stop
        rule) or ``"error"``.
    :param error: the error message (``"TypeName: message"``) when ``stop_reason`` is ``"error"``.
    :param source: ``info["source"]`` of the input when it had one.
    :param handover: with ``hybrid``: why the agent handed over to the classical optimizer (``None``: it did not).
    :param cell_filter: the ASE filter the cell relaxed through (a name of
        :data:`~sb3_crystal.relax.filters.CELL_FILTERS`; ``None``: fixed cell).
    :param cell: through a filter: the cell at the end, Å (rows are the lattice vectors).
    :param stress: through a filter: the stress at the end, Voigt order (xx, yy, zz, yz, xz, xy), eV/Å³.
    :param cell_fmax: through a filter: its largest cell row at the end, in the filter's units (what it compares with
        ``fmax``, :func:`~sb3_crystal.relax.filters.cell_fmax`).
    """

    index: int
    structure: Any
    converged: bool
    force_calls: int
    fmax: float
    energy: float
    steps: int
    wall_time: float
    stop_reason: str
    error: str | None = None
    source: str | None = None
    handover: str | None = None
    cell_filter: str | None = None
    cell: np.ndarray | None = None
    stress: np.ndarray | None = None
    cell_fmax: float | None = None

    def summary(self) -> dict[str, Any]:
        """The scalar fields as plain data (for a summary table); through a filter also the largest stress component
        (``max_stress``, eV/Å³), the volume (Å³) and the cell's lengths and angles (``cellpar``: a, b, c in Å, α, β,
        γ in degrees) at the end (``None`` at fixed cell)."""
        cell = None if self.cell is None else Cell(self.cell)
        return {
            "index": self.index,
            "source": self.source,
            "converged": self.converged,
            "force_calls": self.force_calls,
            "fmax": self.fmax,
            "energy": self.energy,
            "steps": self.steps,
            "wall_time": self.wall_time,
            "stop_reason": self.stop_reason,
            "handover": self.handover,
            "error": self.error,
            "cell_filter": self.cell_filter,
            "cell_fmax": self.cell_fmax,
            "max_stress": float(np.abs(self.stress).max()) if self.stress is not None else None,
            "volume": float(cell.volume) if cell is not None else None,
            "cellpar": [float(v) for v in cell.cellpar()] if cell is not None else None,
        }


@dataclass
class BatchProfile:
    """Where the time of a :func:`relax_many` call went (filled in when passed as ``profile``).

    :param policy_seconds: batched policy forward passes (stacking the observations included).
    :param policy_passes: forward passes (at most two per lockstep step).
    :param policy_rows: observations those passes took, summed.
    :param structure_seconds: each structure's own work: observations, calculator calls, moves, ASE's loop.
    :param total_seconds: the whole call.
    :param lockstep_steps: lockstep steps.
    :param extra: seconds by part of an agent-only lockstep: ``admission`` (starting structures, their first force
        call aside), ``observation`` (histories, proposals, stacking), ``policy``, ``moves`` (move rule and contact
        limit), ``calculator`` (every force call, the counter's bookkeeping included), ``bookkeeping`` (stall rule,
        convergence); summed over calls.
    """

    policy_seconds: float = 0.0
    policy_passes: int = 0
    policy_rows: int = 0
    structure_seconds: float = 0.0
    total_seconds: float = 0.0
    lockstep_steps: int = 0
    extra: dict[str, float] = field(default_factory=dict)


class _BatchAgent(CrystalAgent):
    """The agent of a batch: its observation layout worked out once, not once per structure."""

    @cached_property
    def layout(self) -> ObservationLayout:  # type: ignore[override]
        return CrystalAgent.layout.fget(self)  # type: ignore[attr-defined]


class _LockstepRL(RLOptimizer):
    """An :class:`RLOptimizer` whose next observation and action can be computed before its step.

    :meth:`prepare` builds the observation of the current geometry (recording it in the history exactly as
    :meth:`step` would); the batch computes the action; :meth:`step` then uses both instead of building and
    predicting them itself. Without a prepared observation it behaves as :class:`RLOptimizer`. Through a filter the
    observation is that of the atoms (a fixed-cell agent's atom moves, :meth:`RLOptimizer._filtered_step`).
    """

    _prepared_observation: dict[str, np.ndarray] | None = None
    _prepared_action: np.ndarray | None = None

    def prepare(self) -> dict[str, np.ndarray]:
        """The observation for the next step (the one :meth:`step` will use)."""
        forces = np.asarray((self.atoms if self.path is None else self.structure).get_forces(), dtype=np.float64)
        self._prepared_observation = RLOptimizer.observation(self, forces)
        self._prepared_action = None
        return self._prepared_observation

    def set_action(self, action: np.ndarray) -> None:
        """The action for the prepared observation."""
        if self._prepared_observation is None:
            raise RuntimeError("set_action before prepare")
        self._prepared_action = np.asarray(action, dtype=np.float64)

    def discard(self) -> None:
        """Forget a prepared observation and action that were not used."""
        self._prepared_observation = self._prepared_action = None

    def observation(self, forces: np.ndarray | None = None) -> dict[str, np.ndarray]:
        prepared, self._prepared_observation = self._prepared_observation, None
        if prepared is not None:
            return prepared
        self._prepared_action = None
        return super().observation(forces)

    def action(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        prepared, self._prepared_action = self._prepared_action, None
        if prepared is not None:
            return prepared
        return super().action(observation)


#: Move settings :class:`RLOptimizer` takes (:class:`HybridOptimizer` passes them on).
_RL_MOVE_ARGUMENTS = ("max_displacement", "action_scale", "force_cap", "min_distance")


class _LockstepHybrid(HybridOptimizer):
    """A :class:`HybridOptimizer` whose agent phase takes its actions from the batch (:class:`_LockstepRL`)."""

    def __init__(self, atoms: Atoms, model: Any = None, **kwargs: Any) -> None:
        super().__init__(atoms, model, **kwargs)
        # The hybrid's agent optimizer, rebuilt as HybridOptimizer builds it (with the move settings given to it).
        moves = {key: kwargs[key] for key in _RL_MOVE_ARGUMENTS if key in kwargs}
        self.agent_optimizer = _LockstepRL(atoms, self.agent, logfile=None, trust_region=False, patience=None, **moves)


def batched_actions(agent: CrystalAgent, observations: Sequence[Mapping[str, np.ndarray]]) -> list[np.ndarray]:
    """The agent's deterministic actions for several observations, as :meth:`RLOptimizer.action` gives them one by one.

    Observations with the agent's ``n_max`` slots go through SB3's ``predict`` as one batch (a lone optimizer calls
    ``predict`` for them too); larger ones (graph actors only) are padded to the largest and go through the actor
    directly as a second batch, each action cut back to its own slots.

    :param agent: the agent.
    :param observations: observations of :meth:`RLOptimizer.observation` (each with at least ``n_max`` slots).
    :return: one flat float64 action per observation (3 numbers per slot of that observation).
    """
    actions: list[np.ndarray | None] = [None] * len(observations)
    fitting = [i for i, obs in enumerate(observations) if obs["mask"].shape[0] == agent.n_max]
    larger = [i for i, obs in enumerate(observations) if obs["mask"].shape[0] != agent.n_max]
    if fitting:
        keys = observations[fitting[0]].keys()
        stacked = {key: np.stack([observations[i][key] for i in fitting]) for key in keys}
        predicted = _predict_stacked(agent, stacked, fits=True)
        for row, i in enumerate(fitting):
            actions[i] = predicted[row].reshape(-1)
    if larger:
        slots = max(observations[i]["mask"].shape[0] for i in larger)
        keys = observations[larger[0]].keys()
        stacked = {key: np.stack([_pad_slots(key, observations[i][key], slots) for i in larger]) for key in keys}
        predicted = _predict_stacked(agent, stacked, fits=False)
        for row, i in enumerate(larger):
            actions[i] = predicted[row, : observations[i]["mask"].shape[0]].reshape(-1)
    return [np.asarray(action) for action in actions]


def _predict_stacked(agent: CrystalAgent, stacked: Mapping[str, np.ndarray], fits: bool) -> np.ndarray:
    """The agent's deterministic actions for stacked observations, (batch, slots, 3) float64.

    :param fits: the observations have the agent's ``n_max`` slots (SB3's ``predict``, as a lone optimizer calls
        it); else (more slots, graph actors only) the actor is called directly.
    """
    policy = agent.policy
    count = len(stacked["mask"])
    if fits:
        predicted, _ = policy.predict(dict(stacked), deterministic=True)
        return np.asarray(predicted, dtype=np.float64).reshape(count, -1, 3)
    policy.set_training_mode(False)
    tensors = {key: th.as_tensor(value, device=policy.device) for key, value in stacked.items()}
    with th.no_grad():  # a graph actor takes any number of atom slots; its Box(-1, 1) needs no unscaling
        predicted_t = policy._predict(tensors, deterministic=True)
    return np.clip(predicted_t.cpu().numpy().astype(np.float64).reshape(count, -1, 3), -1.0, 1.0)


def _pad_slots(key: str, value: np.ndarray, slots: int) -> np.ndarray:
    if key in _GLOBAL_KEYS or value.shape[0] == slots:
        return value
    padded = np.zeros((slots, *value.shape[1:]), dtype=value.dtype)
    padded[: value.shape[0]] = value
    return padded


# -- pymatgen ----------------------------------------------------------------------------------------------------------
def _is_structure(item: Any) -> bool:
    """Whether ``item`` is a pymatgen ``Structure`` (without importing pymatgen when it is not loaded)."""
    import sys

    core = sys.modules.get("pymatgen.core.structure")
    return core is not None and isinstance(item, core.IStructure)


def _structure_to_atoms(structure: Any) -> Atoms:
    from pymatgen.io.ase import AseAtomsAdaptor

    converted = AseAtomsAdaptor.get_atoms(structure)
    # A plain Atoms: the adaptor's MSONAtoms carries pymatgen metadata the optimizers do not need.
    return Atoms(numbers=converted.numbers, positions=converted.positions, cell=converted.cell, pbc=True)


def _atoms_to_structure(atoms: Atoms, properties: Mapping[str, Any]) -> Any:
    from pymatgen.core import Structure

    forces = atoms.calc.get_forces() if atoms.calc is not None else None
    site_properties = {"forces": [list(map(float, f)) for f in forces]} if forces is not None else None
    return Structure(
        lattice=np.array(atoms.cell),
        species=atoms.get_chemical_symbols(),
        coords=atoms.positions,
        coords_are_cartesian=True,
        site_properties=site_properties,
        properties=dict(properties),
    )


# -- the lockstep loop -------------------------------------------------------------------------------------------------
class _Run:
    """One structure's relaxation: its optimizer, ASE's step generator and its bookkeeping."""

    def __init__(self, index: int, atoms: Atoms, optimizer: RLOptimizer | HybridOptimizer, fmax: float, steps: int):
        self.index, self.atoms, self.optimizer = index, atoms, optimizer
        self.generator = optimizer.irun(fmax=fmax, steps=steps)
        self.converged = False
        self.seconds = 0.0
        self.energy, self.forces = math.nan, None
        #: through a filter: the stress (Voigt, eV/Å³) and the filter's largest cell row at the end.
        self.stress: np.ndarray | None = None
        self.cell_fmax: float | None = None

    @property
    def agent(self) -> _LockstepRL | None:
        """The optimizer that takes the batch's action at the next step (``None``: no agent step is due, or its
        agent predicts for itself: a cell-aware agent, or a filter without atom rows)."""
        optimizer = self.optimizer
        if isinstance(optimizer, HybridOptimizer):
            # An agent-phase hybrid may still hand over in this step: the prepared action is then not used.
            agent = optimizer.agent_optimizer if optimizer.phase == "agent" else None
        else:
            agent = optimizer
        path = agent.path if agent is not None else None
        if path is not None and (agent.layout.cell or path.atom_rows == 0):  # type: ignore[union-attr]
            return None
        return agent  # type: ignore[return-value]

    @property
    def will_step(self) -> bool:
        """Whether ASE's loop takes another step when resumed (its own condition)."""
        return not self.converged and self.optimizer.nsteps < self.optimizer.max_steps

    def advance(self) -> bool:
        """Resume ASE's loop: the first call evaluates the start, later ones take one step; :return: still running."""
        start = time.perf_counter()
        try:
            self.converged = bool(next(self.generator))
            if not self.will_step:  # the end: read the final results (free) while the counter still holds them
                self.energy = float(self.atoms.get_potential_energy())
                self.forces = np.array(self.atoms.get_forces(), dtype=np.float64)
                if self.optimizer.filter is not None:  # evaluated with the forces: free
                    self.stress = np.array(self.atoms.get_stress(), dtype=np.float64)
                    self.cell_fmax = cell_fmax(self.optimizer.filter)
                for _ in self.generator:  # ASE's loop ends without a step
                    pass
                return False
            return True
        finally:
            self.seconds += time.perf_counter() - start


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def relax_many(
    structures: Iterable[Any],
    model: Any = None,
    fmax: float = 0.05,
    steps: int = 200,
    calculator: CalculatorSpec = None,
    hybrid: bool | Mapping[str, Any] = False,
    batch_size: int | None = None,
    on_error: str = "raise",
    on_result: Callable[[RelaxationResult], None] | None = None,
    profile: BatchProfile | None = None,
    cell: str | None = None,
    **optimizer_kwargs: Any,
) -> list[RelaxationResult]:
    """Relax many structures with one agent, in lockstep (see the module docstring): at fixed cell, or with ``cell``
    the cell too.

    The inputs are not changed: each structure is copied and the copy relaxed.

    :param structures: ``ase.Atoms`` (fully periodic) or pymatgen ``Structure`` objects.
    :param model: as for :class:`RLOptimizer` (``None``: the shipped Al–Fe agent).
    :param fmax: force threshold, eV/Å.
    :param steps: step cap per structure.
    :param calculator: a calculator spec (:func:`~sb3_crystal.calculators.make_calculator`), built once and shared by
        all structures (their calls are made one after another); ``None``: each ``Atoms`` input's own calculator
        when it has one, else one LAMMPS EAM calculator for the others.
    :param hybrid: ``True`` (or a dict of :class:`HybridOptimizer` arguments: ``switch_fmax``, ``finisher`` ...):
        relax each structure with a :class:`HybridOptimizer`; its agent phase is batched, its classical phase runs
        per structure in the same loop.
    :param batch_size: most structures relaxing at once (``None``: all); the next waits until one leaves.
    :param on_error: ``"raise"``: a structure the agent cannot relax (unseen species, non-periodic cell ...) raises,
        naming it, before any relaxation starts, and an error during a relaxation is raised at once; ``"record"``:
        either becomes a result with ``stop_reason="error"`` and the other structures go on.
    :param on_result: called with each result as its structure finishes (in finishing order).
    :param profile: a :class:`BatchProfile` to fill with timings.
    :param cell: relax the cell too, each structure through this ASE filter (a name of
        :data:`~sb3_crystal.relax.filters.CELL_FILTERS`: ``"frechet"``, ``"unit"``, ``"strain"``), as ``RLOptimizer``
        (or ``HybridOptimizer``) relaxes ``FrechetCellFilter(atoms)`` alone; converged means every atomic force and
        every cell row of the filter ≤ ``fmax``. Not the vectorised array path: one optimizer object per structure,
        the policy pass of a fixed-cell agent batched. The calculator must give the stress (checked on one structure
        per calculator before any relaxation, whatever ``on_error``). ``None``: fixed cell.
    :param optimizer_kwargs: arguments of :class:`RLOptimizer` (``trust_region``, ``patience``, ``min_improvement``,
        move settings) or, with ``hybrid``, of :class:`HybridOptimizer`; ``logfile`` and ``trajectory`` are not taken.
    :return: one :class:`RelaxationResult` per input, in input order.
    :raises ValueError: bad settings (an unknown ``cell``, a cell-aware agent without ``cell="frechet"``), a
        calculator without stress for ``cell``, and with ``on_error="raise"`` a structure the agent cannot relax.
    """
    t_start = time.perf_counter()
    if on_error not in ("raise", "record"):
        raise ValueError(f"on_error must be 'raise' or 'record', got {on_error!r}")
    if not (isinstance(fmax, (int, float)) and fmax > 0):
        raise ValueError(f"fmax must be > 0 eV/Å, got {fmax!r}")
    if not (isinstance(steps, int) and steps >= 0):
        raise ValueError(f"steps must be an integer ≥ 0, got {steps!r}")
    if batch_size is not None and not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    taken = sorted({"logfile", "trajectory", "append_trajectory"} & set(optimizer_kwargs))
    if taken:
        raise TypeError(f"relax_many does not take {', '.join(taken)} (many structures share one call)")
    if cell is not None:
        cell_filter(cell)  # an unknown name fails here
        cell = cell.lower()
    settings = {**optimizer_kwargs, **(dict(hybrid) if isinstance(hybrid, Mapping) else {})}
    agent = load_default_agent() if model is None else as_agent(model)
    agent = _BatchAgent(**{item.name: getattr(agent, item.name) for item in fields(agent)})
    check_cell_setting(agent, cell)
    if hybrid:
        lockstep = _Lockstep(agent, fmax, steps, _LockstepHybrid, settings, on_error, on_result, cell)
    elif cell is not None or agent.layout.proposal == "curvature":
        # through a filter, and the learned Hessian's step: per structure, no array path
        lockstep = _Lockstep(agent, fmax, steps, _LockstepRL, settings, on_error, on_result, cell)
    else:
        lockstep = _ArrayLockstep(agent, fmax, steps, _LockstepRL, settings, on_error, on_result)
    with warnings.catch_warnings(), blas_threads(1) if cell is not None else contextlib.nullcontext():
        # The agent's stall stop is reported in each result's stop_reason rather than once per structure; a cell
        # filter's 3×3 matrix functions run fastest on one BLAS thread.
        warnings.filterwarnings("ignore", message=r".*stopping unconverged.*")
        results = lockstep.relax(list(structures), calculator, batch_size)
    if profile is not None:
        profile.policy_seconds += lockstep.policy_seconds
        profile.policy_passes += lockstep.passes
        profile.policy_rows += lockstep.rows
        profile.lockstep_steps += lockstep.steps
        profile.total_seconds += time.perf_counter() - t_start
        profile.structure_seconds += sum(r.wall_time for r in results) - lockstep.policy_seconds
        for key, seconds in lockstep.timings.items():
            profile.extra[key] = profile.extra.get(key, 0.0) + seconds
    return results


def check_cell_setting(agent: CrystalAgent, cell: str | None) -> None:
    """Raise unless ``agent`` can relax with this ``cell`` setting of :func:`relax_many`: a cell-aware agent (trained
    with ``CrystalRelaxEnv(cell=True)``) moves the cell through ``FrechetCellFilter``'s coordinates only.

    :param agent: the agent.
    :param cell: a name of :data:`~sb3_crystal.relax.filters.CELL_FILTERS`, or ``None`` (fixed cell).
    :raises ValueError: an unknown name, or a cell-aware agent without ``cell="frechet"``.
    """
    if cell is not None:
        cell_filter(cell)
    if agent.layout.cell and (cell is None or cell.lower() != "frechet"):
        given = "at fixed cell" if cell is None else f"with cell={cell!r}"
        raise ValueError(
            f"this agent relaxes the cell through FrechetCellFilter's coordinates, as it was trained; asked {given}: "
            "use cell='frechet'"
        )


class _Lockstep:
    """The loop of :func:`relax_many` with one optimizer object per structure (``hybrid``, a cell filter): admits
    structures, makes the batched policy pass, steps each through ASE's loop, collects.

    :param cell: a name of :data:`~sb3_crystal.relax.filters.CELL_FILTERS`: each optimizer relaxes that filter
        around its structure (``None``: the structure at fixed cell).
    """

    def __init__(
        self,
        agent: CrystalAgent,
        fmax: float,
        steps: int,
        optimizer_class: type[RLOptimizer] | type[HybridOptimizer],
        settings: dict[str, Any],
        on_error: str,
        on_result: Callable[[RelaxationResult], None] | None,
        cell: str | None = None,
    ) -> None:
        self.cell = cell
        self.filter_class = None if cell is None else cell_filter(cell)
        self.agent, self.fmax, self.max_steps = agent, fmax, steps
        self.optimizer_class, self.settings = optimizer_class, settings
        self.on_error, self.on_result = on_error, on_result
        self.results: list[RelaxationResult | None] = []
        self.inputs: list[Atoms | None] = []
        self.from_structure: list[bool] = []
        self.policy_seconds = 0.0
        self.passes = self.rows = self.steps = 0
        #: seconds by part of the loop (the vectorised lockstep fills it; see :class:`BatchProfile`).
        self.timings: dict[str, float] = dict.fromkeys(
            ("admission", "observation", "policy", "moves", "calculator", "bookkeeping"), 0.0
        )

    # -- results ---------------------------------------------------------------------------------------------------
    def _finish(self, result: RelaxationResult) -> None:
        self.results[result.index] = result
        if self.on_result is not None:
            self.on_result(result)

    def _failed(self, index: int, err: BaseException, seconds: float = 0.0, calls: int = 0, steps: int = 0) -> None:
        atoms = self.inputs[index]
        self._finish(
            RelaxationResult(
                index,
                None,
                converged=False,
                force_calls=calls,
                fmax=math.nan,
                energy=math.nan,
                steps=steps,
                wall_time=seconds,
                stop_reason="error",
                error=_error_text(err),
                source=atoms.info.get("source") if atoms is not None else None,
            )
        )

    def _end(self, run: _Run, err: BaseException | None = None) -> None:
        """Record how a run ended (``err``: it failed; re-raised unless errors are recorded)."""
        optimizer = run.optimizer
        if err is not None:
            run.generator.close()  # puts the user's calculator back
            if self.on_error == "raise":
                raise err
            self._failed(run.index, err, run.seconds, optimizer.force_calls, optimizer.nsteps)
            return
        atoms = run.atoms.copy()
        atoms.calc = SinglePointCalculator(atoms, energy=run.energy, forces=run.forces, stress=run.stress)
        forces = run.forces if run.forces is not None else np.zeros((0, 3))
        reason = "converged" if run.converged else getattr(optimizer, "stop_reason", None) or "max_steps"
        result = RelaxationResult(
            run.index,
            atoms,
            converged=run.converged,
            force_calls=optimizer.force_calls,
            fmax=max_force(forces),
            energy=run.energy,
            steps=optimizer.nsteps,
            wall_time=run.seconds,
            stop_reason=reason,
            source=run.atoms.info.get("source"),
            handover=optimizer.handover_reason if isinstance(optimizer, HybridOptimizer) else None,
            cell_filter=self.cell,
            cell=np.array(atoms.cell, dtype=np.float64) if self.cell is not None else None,
            stress=run.stress,
            cell_fmax=run.cell_fmax,
        )
        if self.from_structure[run.index]:
            properties = {key: value for key, value in result.summary().items() if key not in ("index", "error")}
            result.structure = _atoms_to_structure(atoms, properties)
        self._finish(result)

    # -- the loop --------------------------------------------------------------------------------------------------
    def _check_inputs(self, items: list[Any], calculator: CalculatorSpec, batch_size: int | None) -> None:
        """Copy every input with its calculator and check that the agent can relax it, before any relaxation."""
        n = len(items)
        self.results, self.inputs = [None] * n, [None] * n
        self.from_structure = [_is_structure(item) for item in items]
        shared = None if calculator is None else make_calculator(calculator)
        if shared is None and not all(isinstance(item, Atoms) and item.calc is not None for item in items):
            shared = LammpsEAMCalculator()  # one for every input without a calculator of its own
        if isinstance(shared, LammpsEAMCalculator) and not isinstance(calculator, LammpsEAMCalculator):
            # One LAMMPS instance per cell in the batch: keep them all, or the lockstep rebuilds them at every step.
            shared.max_instances = max(shared.max_instances, min(batch_size or n, n))
        for index, item in enumerate(items):
            try:
                atoms = _copy_input(item, shared, calculator)
                if atoms.calc is not None and not isinstance(atoms.calc, ForceCallCounter):
                    atoms.calc = ForceCallCounter(atoms.calc, memory=_COUNTER_MEMORY)  # what the optimizer would wrap it in
                self.inputs[index] = atoms
                check_agent_can_relax(self.agent, atoms)
            except (TypeError, ValueError) as err:
                if self.on_error == "raise":
                    raise type(err)(f"structure {index} ({_describe(item)}): {err}") from err
                self._failed(index, err)
        if self.cell is not None:
            self._check_stress(items)

    def _check_stress(self, items: list[Any]) -> None:
        """Through a filter: each calculator gives the stress (asked once, of the first structure using it that the
        agent can relax; not counted), before any relaxation."""
        checked: set[int] = set()
        for index, atoms in enumerate(self.inputs):
            if atoms is None or self.results[index] is not None:
                continue
            calc = _inner(atoms.calc)
            if id(calc) in checked:
                continue
            checked.add(id(calc))
            try:
                check_gives_stress(atoms)
            except ValueError as err:
                raise ValueError(f"structure {index} ({_describe(items[index])}), cell={self.cell!r}: {err}") from None

    def relax(self, items: list[Any], calculator: CalculatorSpec, batch_size: int | None) -> list[RelaxationResult]:
        self._check_inputs(items, calculator, batch_size)
        waiting = [i for i in range(len(items)) if self.results[i] is None][::-1]  # popped from the end: input order
        running: list[_Run] = []
        limit = batch_size or len(items)
        try:
            while running or waiting:
                while waiting and len(running) < limit:
                    self._admit(waiting.pop(), running)
                if running:
                    self.steps += 1
                    self._policy_pass(running)
                    self._advance(running)
        finally:
            for run in running:
                run.generator.close()
        assert all(result is not None for result in self.results)
        return self.results  # type: ignore[return-value]

    def _admit(self, index: int, running: list[_Run]) -> None:
        """Start relaxing structure ``index``: its optimizer, and the evaluation of its start."""
        atoms = self.inputs[index]
        assert atoms is not None
        try:
            target = atoms if self.filter_class is None else self.filter_class(atoms)
            optimizer = self.optimizer_class(target, self.agent, logfile=None, **self.settings)
        except Exception as err:  # settings the optimizer refuses, a calculator that fails to start
            if self.on_error == "raise":
                raise
            self._failed(index, err)
            return
        run = _Run(index, atoms, optimizer, self.fmax, self.max_steps)
        try:
            going = run.advance()
        except Exception as err:
            self._end(run, err)
            return
        if going:
            running.append(run)
        else:
            self._end(run)

    def _policy_pass(self, running: list[_Run]) -> None:
        """One batched policy pass for every structure whose next step is an agent step."""
        due: list[tuple[_Run, _LockstepRL]] = []
        observations = []
        for run in list(running):
            agent_optimizer = run.agent
            if agent_optimizer is None or not run.will_step:
                continue
            start = time.perf_counter()
            try:
                observations.append(agent_optimizer.prepare())
                due.append((run, agent_optimizer))
            except Exception as err:
                running.remove(run)
                self._end(run, err)
            finally:
                run.seconds += time.perf_counter() - start
        if not due:
            return
        start = time.perf_counter()
        actions = batched_actions(self.agent, observations)
        elapsed = time.perf_counter() - start
        self.policy_seconds += elapsed
        fitting = sum(observation["mask"].shape[0] == self.agent.n_max for observation in observations)
        self.passes += int(fitting > 0) + int(fitting < len(observations))
        self.rows += len(due)
        for (run, agent_optimizer), action in zip(due, actions, strict=True):
            agent_optimizer.set_action(action)
            run.seconds += elapsed / len(due)

    def _advance(self, running: list[_Run]) -> None:
        """Resume every running structure's loop by one step; those that end leave ``running``."""
        for run in list(running):
            try:
                going = run.advance()
            except Exception as err:
                running.remove(run)
                self._end(run, err)
                continue
            finally:
                agent_optimizer = run.agent
                if agent_optimizer is not None:
                    agent_optimizer.discard()
            if not going:
                running.remove(run)
                self._end(run)


# -- the vectorised lockstep (agent-only relaxations) ------------------------------------------------------------------
class HistoryBatch:
    """The relaxation histories of many structures as padded arrays: what :class:`RelaxationHistory` holds for each.

    Row ``r`` holds the newest ``memory + 1`` points of one structure, newest first, its atoms zero-padded to ``width``
    slots. :meth:`reset` and :meth:`record` act on several rows at once, as :meth:`RelaxationHistory.reset` and
    :meth:`RelaxationHistory.record` act on one history; the observation fields and the L-BFGS step read off the
    arrays are those the histories give (:func:`stack_observations`).

    :param rows: structures the batch holds at most.
    :param width: atom slots of a row (at least the atoms of every structure).
    :param memory: past steps remembered (:attr:`ObservationLayout.memory`).
    """

    def __init__(self, rows: int, width: int, memory: int) -> None:
        self.memory = int(memory)
        depth = self.memory + 1
        self.positions = np.zeros((rows, depth, width, 3))
        self.forces = np.zeros((rows, depth, width, 3))
        self.energies = np.zeros((rows, depth))
        #: points held per row (at most ``memory + 1``).
        self.length = np.zeros(rows, dtype=np.int64)
        #: steps recorded since the row's reset.
        self.n_steps = np.zeros(rows, dtype=np.int64)

    def reset(self, rows: np.ndarray, positions: np.ndarray, forces: np.ndarray, energies: np.ndarray) -> None:
        """Start new relaxations in ``rows`` at these points (padded (len(rows), width, 3) arrays)."""
        self.positions[rows] = 0.0
        self.forces[rows] = 0.0
        self.energies[rows] = 0.0
        self.positions[rows, 0] = positions
        self.forces[rows, 0] = forces
        self.energies[rows, 0] = energies
        self.length[rows] = 1
        self.n_steps[rows] = 0

    def record(self, rows: np.ndarray, positions: np.ndarray, forces: np.ndarray, energies: np.ndarray) -> None:
        """The relaxations in ``rows`` moved to these points (one step each)."""
        if self.memory > 0:
            self.positions[rows, 1:] = self.positions[rows, :-1]
            self.forces[rows, 1:] = self.forces[rows, :-1]
            self.energies[rows, 1:] = self.energies[rows, :-1]
        self.positions[rows, 0] = positions
        self.forces[rows, 0] = forces
        self.energies[rows, 0] = energies
        self.length[rows] = np.minimum(self.length[rows] + 1, self.memory + 1)
        self.n_steps[rows] += 1

    def steps(self, row: int, k: int, n_atoms: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """(shift, force change) of the last ``k`` steps of ``row`` that exist, newest first (its ``n_atoms`` atoms)."""
        count = min(k, int(self.length[row]) - 1)
        x, f = self.positions[row, :, :n_atoms], self.forces[row, :, :n_atoms]
        return [(x[j] - x[j + 1], f[j] - f[j + 1]) for j in range(count)]

    def lbfgs_step(self, row: int, n_atoms: int, memory: int, max_step: float) -> np.ndarray:
        """:meth:`RelaxationHistory.lbfgs_step` of ``row``: (n_atoms, 3) Å."""
        steps = self.steps(row, memory, n_atoms)
        pairs = [(s.ravel(), -y.ravel()) for s, y in steps]
        return lbfgs_step(self.forces[row, 0, :n_atoms], pairs[::-1], step_cap(steps, max_step))


def stack_observations(
    layout: ObservationLayout,
    slots: int,
    species: np.ndarray,
    n_atoms: np.ndarray,
    cells: np.ndarray,
    positions: np.ndarray,
    forces: np.ndarray,
    history: HistoryBatch | None = None,
    rows: np.ndarray | None = None,
    proposals: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The observations of many structures at once, stacked: row ``g`` is :meth:`ObservationLayout.build` of structure
    ``g`` with ``slots`` atom slots.

    :param layout: the agent's observation layout.
    :param slots: atom slots of every observation (at least the atoms of each structure).
    :param species: atomic numbers (G, width), zero beyond each structure's atoms.
    :param n_atoms: atoms of each structure (G,).
    :param cells: lattice vectors as rows (G, 3, 3), Å.
    :param positions: current positions (G, width, 3), Å, zero beyond each structure's atoms.
    :param forces: current forces (G, width, 3), eV/Å, zero beyond each structure's atoms.
    :param history: the structures' histories (needed when the layout observes past steps); their newest points are
        the current ones.
    :param rows: the structures' rows in ``history``.
    :param proposals: the classical proposals (G, width, 3), Å, zero-padded (needed with a proposal layout).
    :return: a dict of float32 arrays with a leading batch axis.
    """
    count, width = species.shape
    if int(np.max(n_atoms, initial=0)) > slots:
        raise ValueError(f"{int(np.max(n_atoms))} atoms do not fit the observation's {slots} atom slots")
    used = min(width, slots)

    def padded(values: np.ndarray) -> np.ndarray:
        out = np.zeros((count, slots, *values.shape[2:]), np.float32)
        out[:, :used] = values[:, :used]
        return out

    observation = {
        "positions": padded(positions),
        "cell": np.array(cells, dtype=np.float32).reshape(count, 3, 3),
        "forces": padded(forces),
        "species": padded(species),
        "mask": padded((np.arange(width)[None, :] < np.asarray(n_atoms)[:, None]).astype(np.float32)),
    }
    if layout.history > 0:
        if history is None or rows is None:
            raise ValueError("this layout observes past steps: give the histories and their rows")
        k = layout.history
        x, f = history.positions[rows], history.forces[rows]  # (G, depth, width, 3)
        exists = (np.arange(k)[None, :] < (history.length[rows] - 1)[:, None])[:, :, None, None]
        shifts = np.where(exists, x[:, :k] - x[:, 1 : k + 1], 0.0)
        changes = np.where(exists, f[:, :k] - f[:, 1 : k + 1], 0.0)
        observation["displacements"] = padded(shifts.transpose(0, 2, 1, 3))
        observation["force_changes"] = padded(changes.transpose(0, 2, 1, 3))
        observation["signals"] = _signals(history, rows, n_atoms)
    if layout.proposal != "none":
        if proposals is None:
            raise ValueError("this layout observes a classical proposal: give the proposals")
        observation["proposal"] = padded(proposals)
    return observation


def _signals(history: HistoryBatch, rows: np.ndarray, n_atoms: np.ndarray) -> np.ndarray:
    """:meth:`RelaxationHistory.signals` of several rows, (G, 4) float32."""
    fmax_now = _row_fmax(history.forces[rows, 0])
    fmax_before = _row_fmax(history.forces[rows, 1]) if history.memory > 0 else fmax_now
    length, energies = history.length[rows], history.energies[rows]
    signals = np.zeros((len(rows), N_SIGNALS), np.float32)
    for g in range(len(rows)):  # math.log10, as the history computes it (numpy's may round differently)
        log_fmax = math.log10(max(float(fmax_now[g]), LOG_FMAX_FLOOR))
        change = energy_change = 0.0
        if length[g] > 1:
            change = log_fmax - math.log10(max(float(fmax_before[g]), LOG_FMAX_FLOOR))
            energy_change = float(np.clip((energies[g, 0] - energies[g, 1]) / max(int(n_atoms[g]), 1), -1.0, 1.0))
        steps = min(int(history.n_steps[rows[g]]), SIGNAL_STEP_SCALE) / SIGNAL_STEP_SCALE
        signals[g] = (log_fmax, change, energy_change, steps)
    return signals


def _row_norms(vectors: np.ndarray) -> np.ndarray:
    """Norms of the 3-vectors of a (..., 3) array, computed as :func:`largest_norm` computes them."""
    return np.sqrt((vectors**2).sum(axis=-1))


def _row_fmax(forces: np.ndarray) -> np.ndarray:
    """:func:`max_force` of each structure of a zero-padded (G, width, 3) array."""
    return _row_norms(forces).max(axis=-1)


def batched_shifts(
    rule: MoveRule, actions: np.ndarray, forces: np.ndarray, n_atoms: np.ndarray, proposals: np.ndarray | None = None
) -> np.ndarray:
    """:meth:`MoveRule.shifts` of many structures at once, before the contact limit: (G, width, 3) Å, zero beyond each
    structure's atoms.

    :param rule: the move rule.
    :param actions: float64 actions per atom slot (G, width, 3) (slots beyond a structure's atoms are ignored).
    :param forces: forces (G, width, 3), zero-padded.
    :param n_atoms: atoms of each structure.
    :param proposals: classical proposals (G, width, 3), zero-padded (``"residual"`` mode).
    :raises ValueError: NaN or inf in the action of a real atom (the first such structure and atom named).
    """
    width = actions.shape[1]
    atoms = (np.arange(width)[None, :] < np.asarray(n_atoms)[:, None])[:, :, None]
    actions = np.where(atoms, actions, 0.0)
    bad = ~np.isfinite(actions)
    if bad.any():
        g, atom, _ = np.argwhere(bad)[0]
        raise ValueError(f"structure {g}: action holds NaN or inf for atom {atom}: {actions[g, atom].tolist()}")
    scale = np.full((*forces.shape[:2], 1), float(rule.max_displacement))
    if rule.action_scale == "force":
        norms = np.sqrt((np.asarray(forces, dtype=np.float64) ** 2).sum(axis=2, keepdims=True))
        scale *= np.minimum(norms, rule.force_cap) / rule.force_cap
    elif rule.action_scale == "proposal":
        if proposals is None:
            raise ValueError("action_scale='proposal' needs the classical proposal the action corrects")
        lengths = np.sqrt((np.where(atoms, proposals, 0.0) ** 2).sum(axis=2, keepdims=True))
        scale *= np.minimum(lengths, PROPOSAL_REFERENCE) / PROPOSAL_REFERENCE
    shifts = np.clip(actions, -1.0, 1.0) * scale
    if rule.action_mode == "residual":
        if proposals is None:
            raise ValueError("action_mode='residual' needs the classical proposal the action corrects")
        shifts = shifts + np.where(atoms, proposals, 0.0)
    return shifts


def surely_clear(positions: np.ndarray, n_atoms: np.ndarray, cells: np.ndarray, distance: float) -> np.ndarray:
    """Which structures certainly have no pair (an atom and its images included) closer than ``distance`` Å.

    ``True`` is a proof: the 27 nearest image cells are searched, and every farther image is at least one lattice-plane
    spacing away, which must exceed ``distance`` too; both with a margin for rounding. ``False`` means "ask
    :func:`~sb3_crystal.structures.geometry.has_pair_closer_than`".

    :param positions: (G, width, 3) Å, zero-padded.
    :param n_atoms: atoms of each structure.
    :param cells: lattice vectors as rows (G, 3, 3).
    :param distance: the closest approach allowed, Å.
    """
    width = positions.shape[1]
    limit = distance * (1.0 + 1e-9) + 1e-9
    inverse = np.linalg.inv(cells)
    spacing = 1.0 / np.sqrt((inverse**2).sum(axis=1))  # 1/|b_i|: distance between lattice planes (b_i: columns)
    fractional = np.einsum("gai,gij->gaj", positions, inverse)
    fractional -= np.floor(fractional)
    delta = fractional[:, :, None, :] - fractional[:, None, :, :]  # (G, a, b, 3) in (-1, 1)
    images = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], float)
    vectors = np.einsum("gabni,gij->gabnj", delta[:, :, :, None, :] + images, cells)
    lengths = np.sqrt((vectors**2).sum(axis=-1))  # (G, a, b, 27)
    real = np.arange(width)[None, :] < np.asarray(n_atoms)[:, None]
    pair = real[:, :, None] & real[:, None, :]
    lengths = np.where(pair[..., None], lengths, np.inf)
    diagonal = np.arange(width)
    lengths[:, diagonal, diagonal, 13] = np.inf  # an atom and itself (image 13 is the cell itself)
    return (lengths.min(axis=(1, 2, 3)) > limit) & (spacing.min(axis=1) > limit)


def batched_accepts(
    trust_region: TrustRegion,
    energy: np.ndarray,
    fmax: np.ndarray,
    new_energy: np.ndarray,
    new_fmax: np.ndarray,
    n_atoms: np.ndarray,
) -> np.ndarray:
    """:meth:`TrustRegion.accepts` of many moves at once (arrays of equal length); :return: a bool array."""
    finite = np.isfinite(new_energy) & np.isfinite(new_fmax)
    with np.errstate(invalid="ignore"):
        rise = new_energy - energy <= trust_region.max_energy_rise * n_atoms
        growth = new_fmax <= trust_region.max_fmax_growth * np.maximum(fmax, 1e-12)
    return finite & rise & growth


def _converged(forces: np.ndarray, fmax: float) -> np.ndarray:
    """ASE's convergence test (the largest atomic force norm below ``fmax``) of each structure, zero-padded forces."""
    return _row_fmax(forces) < fmax


def _bad_actions(actions: np.ndarray, n_atoms: np.ndarray) -> list[tuple[int, str]]:
    """Structures whose action holds NaN or inf for a real atom, with :meth:`MoveRule.shifts`'s message."""
    width = actions.shape[1]
    atoms = np.arange(width)[None, :] < np.asarray(n_atoms)[:, None]
    bad = ~np.isfinite(actions).all(axis=2) & atoms
    found = []
    for g in np.flatnonzero(bad.any(axis=1)):
        atom = int(np.flatnonzero(bad[g])[0])
        found.append((int(g), f"action holds NaN or inf for atom {atom}: {actions[g, atom].tolist()}"))
    return found


def _inner(calc: Any) -> Any:
    return calc.calculator if isinstance(calc, ForceCallCounter) else calc


class _CellsInFlight:
    """The LAMMPS set-ups (species and cell) of the structures relaxing, per shared :class:`LammpsEAMCalculator`.

    The calculator keeps one LAMMPS instance per set-up, at most its ``capacity``; a lockstep cycling through more
    set-ups than that would evict and rebuild instances at every step (several times the cost of the force calls).
    So a structure whose set-up is new waits while its calculator's capacity is taken (unless nothing is running);
    it changes when structures relax, never how.
    """

    def __init__(self) -> None:
        self._rows: dict[int, tuple[int, bytes]] = {}
        self._count: dict[tuple[int, bytes], int] = {}  # structures per set-up
        self._setups: dict[int, int] = {}  # distinct set-ups per calculator

    @staticmethod
    def _key(atoms: Atoms) -> tuple[LammpsEAMCalculator, tuple[int, bytes]] | None:
        calc = _inner(atoms.calc)
        if not isinstance(calc, LammpsEAMCalculator):
            return None
        setup = atoms.numbers.tobytes() + np.asarray(atoms.cell, dtype=np.float64).round(12).tobytes()
        return calc, (id(calc), setup)

    def admits(self, atoms: Atoms | None, running: bool) -> bool:
        """Whether ``atoms`` may start now (``running``: other structures are relaxing)."""
        found = None if atoms is None else self._key(atoms)
        if found is None or not running:
            return True
        calc, key = found
        return self._count.get(key, 0) > 0 or self._setups.get(key[0], 0) < calc.capacity

    def add(self, row: int, atoms: Atoms | None) -> None:
        found = None if atoms is None else self._key(atoms)
        if found is None:
            return
        key = found[1]
        self._rows[row] = key
        self._count[key] = self._count.get(key, 0) + 1
        if self._count[key] == 1:
            self._setups[key[0]] = self._setups.get(key[0], 0) + 1

    def remove(self, row: int) -> None:
        key = self._rows.pop(row, None)
        if key is None:
            return
        self._count[key] -= 1
        if self._count[key] == 0:
            del self._count[key]
            self._setups[key[0]] -= 1


#: Structures at most this large get the vectorised contact test (its arrays grow as atoms²).
_SCREEN_ATOMS = 24
#: Pair-image distances the contact test computes at once.
_SCREEN_CHUNK = 1 << 20


class _ArrayLockstep(_Lockstep):
    """The lockstep of agent-only relaxations with the bookkeeping done on arrays, all structures at once.

    It takes the steps :class:`RLOptimizer` takes (its settings are worked out by one optimizer built on the first
    input): the observation, the move rule and its contact limit, the trust region's tries and accept test, the
    stall rule and ASE's convergence test and step cap, each on (structures, atom slots, 3) arrays; only the
    calculator is called per structure, through the structure's own force-call counter.
    """

    def relax(self, items: list[Any], calculator: CalculatorSpec, batch_size: int | None) -> list[RelaxationResult]:
        self._check_inputs(items, calculator, batch_size)
        waiting = [i for i in range(len(items)) if self.results[i] is None]
        if waiting and self._prepare(waiting):
            if self.min_distance > 0:
                self._warn_close(waiting)
            self._loop(waiting, batch_size)
        assert all(result is not None for result in self.results)
        return self.results  # type: ignore[return-value]

    def _prepare(self, indices: list[int]) -> bool:
        """Work out the optimizer's settings as :class:`RLOptimizer` does; :return: whether to go on."""
        first = self.inputs[indices[0]]
        assert first is not None
        _checked_run_arguments(self.fmax, self.max_steps)  # raised whatever on_error says, as ASE's loop would
        try:
            probe = RLOptimizer(first, self.agent, logfile=None, **self.settings)
        except Exception as err:  # settings the optimizer refuses: every structure fails the same way
            if self.on_error == "raise":
                raise
            for index in indices:
                self._failed(index, err)
            return False
        checked = {id(_inner(first.calc))}
        for index in indices:  # the calculator-mismatch warning, once per calculator
            calc = _inner(self.inputs[index].calc)  # type: ignore[union-attr]
            if id(calc) not in checked:
                checked.add(id(calc))
                check_calculator(self.agent, calc)
        self.rule, self.layout = probe._moves, probe.layout
        self.trust_region, self.patience, self.min_improvement = probe.trust_region, probe.patience, probe.min_improvement
        self.min_distance = float(probe.settings["min_distance"])
        return True

    # -- state -----------------------------------------------------------------------------------------------------
    def _allocate(self, rows: int, width: int) -> None:
        self.width = width
        self.index = np.full(rows, -1)
        self.n_atoms = np.zeros(rows, dtype=np.int64)
        self.species = np.zeros((rows, width), np.float32)
        self.cells = np.zeros((rows, 3, 3))
        self.positions = np.zeros((rows, width, 3))
        self.forces = np.zeros((rows, width, 3))
        self.energies = np.zeros(rows)
        self.best_fmax = np.zeros(rows)
        self.since_best = np.zeros(rows, dtype=np.int64)
        self.nsteps = np.zeros(rows, dtype=np.int64)
        self.step_cap = np.zeros(rows, dtype=np.int64)
        self.seconds = np.zeros(rows)
        self.calls_before = np.zeros(rows, dtype=np.int64)
        self.stop_reasons: list[str | None] = [None] * rows
        self.history = HistoryBatch(rows, width, self.layout.memory) if self.layout.memory > 0 else None
        self.recorded = np.zeros(rows, dtype=bool)  # the row's history already holds its current point

    def _evaluate(self, row: int, positions: np.ndarray) -> None:
        """Move structure ``row`` to ``positions`` (its atoms, a fresh float64 array), evaluate it, store the results."""
        atoms = self.inputs[int(self.index[row])]
        assert atoms is not None
        start = time.perf_counter()
        atoms.arrays["positions"] = positions
        energy, forces = atoms.calc.evaluate(atoms)  # type: ignore[union-attr]
        n = len(positions)
        self.positions[row, :n] = positions
        self.forces[row, :n] = forces
        self.energies[row] = energy
        elapsed = time.perf_counter() - start
        self.seconds[row] += elapsed
        self.timings["calculator"] += elapsed

    def _calls(self, row: int) -> int:
        atoms = self.inputs[int(self.index[row])]
        return int(atoms.calc.force_calls - self.calls_before[row])  # type: ignore[union-attr]

    # -- the loop --------------------------------------------------------------------------------------------------
    def _loop(self, indices: list[int], batch_size: int | None) -> None:
        limit = min(batch_size or len(indices), len(indices))
        self._allocate(limit, max(len(self.inputs[i]) for i in indices))  # type: ignore[arg-type]
        free = list(range(limit))[::-1]
        waiting = indices[::-1]  # popped from the end: input order
        running: list[int] = []  # rows, in the order their structures were admitted
        cells = _CellsInFlight()
        while running or waiting:
            while waiting and len(running) < limit and cells.admits(self.inputs[waiting[-1]], bool(running)):
                index, row = waiting.pop(), free.pop()
                if self._admit_row(index, row):
                    running.append(row)
                    cells.add(row, self.inputs[index])
                else:
                    free.append(row)
            if running:
                self.steps += 1
                start, calculator = time.perf_counter(), self.timings["calculator"]
                rows = np.array(running)
                ended = self._step(rows)
                # Each structure's wall time: its own calculator calls, plus an equal share of the rest of the step.
                self.seconds[rows] += (time.perf_counter() - start - (self.timings["calculator"] - calculator)) / len(rows)
                for row in ended:
                    self._end_row(row)
                    running.remove(row)
                    cells.remove(row)
                    free.append(row)

    def _admit_row(self, index: int, row: int) -> bool:
        """Start structure ``index`` in ``row``: evaluate its start; :return: whether it takes a step."""
        start, calculator = time.perf_counter(), self.timings["calculator"]
        atoms = self.inputs[index]
        assert atoms is not None and isinstance(atoms.calc, ForceCallCounter)
        n = len(atoms)
        self.index[row], self.n_atoms[row] = index, n
        self.species[row] = 0.0
        self.species[row, :n] = atoms.numbers
        self.cells[row] = atoms.cell.array
        self.positions[row], self.forces[row] = 0.0, 0.0
        self.nsteps[row], self.since_best[row], self.step_cap[row] = 0, 0, self.max_steps
        self.seconds[row] = 0.0
        self.stop_reasons[row] = None
        self.recorded[row] = True  # the start enters the history at its reset
        self.calls_before[row] = atoms.calc.force_calls
        try:
            self._evaluate(row, np.array(atoms.positions, dtype=np.float64))
        except Exception as err:
            self._fail(row, err)
            return False
        forces = self.forces[row : row + 1]
        self.best_fmax[row] = _row_fmax(forces)[0]
        if self.history is not None:
            here = slice(row, row + 1)
            self.history.reset(np.array([row]), self.positions[here], self.forces[here], self.energies[here])
        converged = bool(_converged(forces, self.fmax)[0])
        self.seconds[row] = time.perf_counter() - start
        self.timings["admission"] += self.seconds[row] - (self.timings["calculator"] - calculator)
        if converged:
            self._done(row, converged=True)
            return False
        return True

    def _warn_close(self, indices: list[int]) -> None:
        """:meth:`RLOptimizer._before_run`'s warning for every start with atoms closer than the contact rule allows
        (the vectorised test clears most starts at once; the others are measured one by one)."""
        small = [i for i in indices if len(self.inputs[i]) <= _SCREEN_ATOMS]  # type: ignore[arg-type]
        clear: set[int] = set()
        if small:
            width = max(len(self.inputs[i]) for i in small)  # type: ignore[arg-type]
            chunk = max(1, _SCREEN_CHUNK // (27 * width**2))
            for begin in range(0, len(small), chunk):
                part = small[begin : begin + chunk]
                positions = np.zeros((len(part), width, 3))
                for g, i in enumerate(part):
                    positions[g, : len(self.inputs[i])] = self.inputs[i].positions  # type: ignore[arg-type,union-attr]
                n_atoms = np.array([len(self.inputs[i]) for i in part])  # type: ignore[arg-type]
                cells = np.array([self.inputs[i].cell.array for i in part])  # type: ignore[union-attr]
                clear.update(
                    i for i, ok in zip(part, surely_clear(positions, n_atoms, cells, self.min_distance), strict=True) if ok
                )
        for index in indices:
            if index in clear:
                continue
            i, j, d = closest_pair(self.inputs[index], search_radius=self.min_distance)  # type: ignore[arg-type]
            if d < self.min_distance:
                warnings.warn(
                    f"Atoms {i} and {j} are {d:.3f} Å apart, closer than the agent's min_distance "
                    f"{self.min_distance} Å: the contact rule blocks every move (use HybridOptimizer, or a smaller "
                    "min_distance)",
                    stacklevel=5,
                )

    def _fail(self, row: int, err: BaseException) -> None:
        """Structure ``row`` failed: raise, or record it (its row is then free)."""
        if self.on_error == "raise":
            raise err
        self._failed(int(self.index[row]), err, float(self.seconds[row]), self._calls(row), int(self.nsteps[row]))
        self.index[row] = -1

    def _end_row(self, row: int) -> None:
        if self.index[row] >= 0:  # not failed
            self._done(row, self.stop_reasons[row] == "converged")

    def _done(self, row: int, converged: bool) -> None:
        index, n = int(self.index[row]), int(self.n_atoms[row])
        atoms = self.inputs[index]
        assert atoms is not None
        energy, forces = float(self.energies[row]), self.forces[row, :n].copy()
        calls = self._calls(row)
        relaxed = atoms  # the relaxation's own copy of the input, at the final geometry
        relaxed.calc = SinglePointCalculator(relaxed, energy=energy, forces=forces)
        reason = "converged" if converged else self.stop_reasons[row] or "max_steps"
        result = RelaxationResult(
            index,
            relaxed,
            converged=converged,
            force_calls=calls,
            fmax=max_force(forces),
            energy=energy,
            steps=int(self.nsteps[row]),
            wall_time=float(self.seconds[row]),
            stop_reason=reason,
            source=atoms.info.get("source"),
        )
        if self.from_structure[index]:
            properties = {key: value for key, value in result.summary().items() if key not in ("index", "error")}
            result.structure = _atoms_to_structure(relaxed, properties)
        self._finish(result)
        self.index[row] = -1

    # -- one step --------------------------------------------------------------------------------------------------
    def _step(self, rows: np.ndarray) -> list[int]:
        """One agent step of every structure in ``rows``; :return: the rows whose relaxation ended (failed ones too)."""
        ended: list[int] = []
        proposals = self._observe(rows)
        actions = self._actions(rows, proposals)
        t0 = time.perf_counter()
        n_atoms = self.n_atoms[rows]
        bad = _bad_actions(actions, n_atoms)
        if bad:
            keep = np.ones(len(rows), dtype=bool)
            for g, message in bad:
                self._fail(int(rows[g]), ValueError(message))
                ended.append(int(rows[g]))
                keep[g] = False
            rows, actions, n_atoms = rows[keep], actions[keep], n_atoms[keep]
            proposals = None if proposals is None else proposals[keep]
        shifts = batched_shifts(self.rule, actions, self.forces[rows], n_atoms, proposals)
        if self.min_distance > 0:
            self._limit_contacts(rows, shifts)
        self.timings["moves"] += time.perf_counter() - t0
        moving = np.abs(shifts).max(axis=(1, 2), initial=0.0) > 0  # a fully blocked move leaves the geometry alone
        if self.trust_region is not None:
            failed = self._guarded(rows[moving], shifts[moving])
        else:
            failed = []
            for g in np.flatnonzero(moving):
                row, n = int(rows[g]), int(n_atoms[g])
                try:
                    self._evaluate(row, self.positions[row, :n] + shifts[g, :n])
                except Exception as err:
                    self._fail(row, err)
                    failed.append(row)
        if failed:
            ended += failed
            rows = rows[~np.isin(rows, failed)]
        t0 = time.perf_counter()
        ended += self._progress(rows)
        self.timings["bookkeeping"] += time.perf_counter() - t0
        return ended

    def _observe(self, rows: np.ndarray) -> np.ndarray | None:
        """Bring the histories up to date (the current point is a new step); :return: the classical proposals."""
        t0 = time.perf_counter()
        history, proposals = self.history, None
        if history is not None:
            new = rows[~self.recorded[rows]]
            if len(new):
                history.record(new, self.positions[new], self.forces[new], self.energies[new])
            if self.layout.proposal != "none":
                memory, longest = self.layout.proposal_memory, self.layout.proposal_max_step
                proposals = np.zeros((len(rows), self.width, 3))
                for g, row in enumerate(rows):
                    n = int(self.n_atoms[row])
                    proposals[g, :n] = history.lbfgs_step(int(row), n, memory, longest)
        self.recorded[rows] = True
        self.timings["observation"] += time.perf_counter() - t0
        return proposals

    def _actions(self, rows: np.ndarray, proposals: np.ndarray | None) -> np.ndarray:
        """The batched policy pass: the agent's actions per atom slot, (len(rows), width, 3) float64."""
        n_atoms = self.n_atoms[rows]
        fitting = n_atoms <= self.agent.n_max
        actions = np.zeros((len(rows), self.width, 3))
        for members, fits in ((fitting, True), (~fitting, False)):
            if not members.any():
                continue
            chosen = rows[members]
            slots = self.agent.n_max if fits else int(n_atoms[members].max())
            t0 = time.perf_counter()
            observation = stack_observations(
                self.layout,
                slots,
                self.species[chosen],
                n_atoms[members],
                self.cells[chosen],
                self.positions[chosen],
                self.forces[chosen],
                self.history,
                chosen,
                None if proposals is None else proposals[members],
            )
            t1 = time.perf_counter()
            predicted = _predict_stacked(self.agent, observation, fits)
            used = min(slots, self.width)
            actions[members, :used] = predicted[:, :used]
            t2 = time.perf_counter()
            self.timings["observation"] += t1 - t0
            self.timings["policy"] += t2 - t1
            self.policy_seconds += t2 - t1
            self.passes += 1
        self.rows += len(rows)
        return actions

    def _limit_contacts(self, rows: np.ndarray, shifts: np.ndarray) -> None:
        """:meth:`MoveRule.contact_fraction` of each move, applied to ``shifts`` in place (a vectorised test first
        clears the moves that certainly keep every pair apart; the others go through the rule itself)."""
        n_atoms = self.n_atoms[rows]
        clear = np.zeros(len(rows), dtype=bool)
        small = np.flatnonzero(n_atoms <= _SCREEN_ATOMS)
        chunk = max(1, _SCREEN_CHUNK // (27 * self.width**2))
        for begin in range(0, len(small), chunk):
            part = small[begin : begin + chunk]
            moved = self.positions[rows[part]] + shifts[part]
            clear[part] = surely_clear(moved, n_atoms[part], self.cells[rows[part]], self.min_distance)
        for g in np.flatnonzero(~clear):
            row, n = int(rows[g]), int(n_atoms[g])
            fraction = self.rule.contact_fraction(self.positions[row, :n], self.cells[row], shifts[g, :n])
            shifts[g, :n] = shifts[g, :n] * fraction

    def _guarded(self, rows: np.ndarray, shifts: np.ndarray) -> list[int]:
        """The moves through the trust region (:meth:`TrustRegion.step` for every row at once); :return: failed rows."""
        failed: list[int] = []
        if not len(rows):
            return failed
        region = self.trust_region
        assert region is not None
        base, energy, forces = self.positions[rows].copy(), self.energies[rows].copy(), self.forces[rows].copy()
        fmax, n_atoms = _row_fmax(forces), self.n_atoms[rows]
        trial = np.array(shifts, dtype=np.float64)
        refused: list[list[tuple[np.ndarray, float, np.ndarray]]] = [[] for _ in range(len(rows))]
        alive = np.ones(len(rows), dtype=bool)
        pending = np.arange(len(rows))
        for attempt in range(region.retries + 1):
            for g in pending:
                row, n = int(rows[g]), int(n_atoms[g])
                try:
                    self._evaluate(row, base[g, :n] + trial[g, :n])
                except Exception as err:
                    self._fail(row, err)
                    failed.append(row)
                    alive[g] = False
            pending = pending[alive[pending]]
            here = rows[pending]
            new_energy, new_fmax = self.energies[here], _row_fmax(self.forces[here])
            if type(region) is TrustRegion:
                accepted = batched_accepts(region, energy[pending], fmax[pending], new_energy, new_fmax, n_atoms[pending])
            else:  # a rule of its own: ask it
                accepted = np.array(
                    [
                        region.accepts(*map(float, args[:4]), int(args[4]))
                        for args in zip(energy[pending], fmax[pending], new_energy, new_fmax, n_atoms[pending], strict=True)
                    ],
                    dtype=bool,
                )
            pending = pending[~accepted]
            for g in pending:
                row = int(rows[g])
                refused[g].append((trial[g].copy(), float(self.energies[row]), self.forces[row].copy()))
            if attempt < region.retries:
                trial[pending] = trial[pending] * region.shrink
        for g in pending:  # every try refused: back to the start (free: that geometry was evaluated)
            row, n = int(rows[g]), int(n_atoms[g])
            try:
                self._evaluate(row, base[g, :n] + np.zeros((n, 3)))
            except Exception as err:
                self._fail(row, err)
                failed.append(row)
                alive[g] = False
        if self.history is not None:  # TrustRegion.record_rejected: each refused try, then the way back
            for g in np.flatnonzero(alive):
                for tried, tried_energy, tried_forces in refused[g]:
                    where = rows[g : g + 1]
                    self.history.record(where, (base[g] + tried)[None], tried_forces[None], np.array([tried_energy]))
                    self.history.record(where, base[g][None], forces[g][None], energy[g : g + 1])
        return failed

    def _progress(self, rows: np.ndarray) -> list[int]:
        """:meth:`RLOptimizer._check_progress` (stall and divergence), then ASE's loop: the step is counted, and the
        structure ends when converged or at its step cap; :return: the rows that ended."""
        fmax, energies = _row_fmax(self.forces[rows]), self.energies[rows]
        diverged = ~(np.isfinite(energies) & np.isfinite(fmax))
        with np.errstate(invalid="ignore"):
            better = ~diverged & (fmax < self.best_fmax[rows] * (1.0 - self.min_improvement))
        self.best_fmax[rows[better]] = fmax[better]
        self.since_best[rows[better]] = 0
        self.since_best[rows[~diverged & ~better]] += 1
        stalled = np.zeros(len(rows), dtype=bool)
        if self.patience is not None:
            stalled = ~diverged & ~better & (self.since_best[rows] >= self.patience)
        for row in rows[diverged]:
            self.stop_reasons[row] = "diverged"
        for row in rows[stalled]:
            self.stop_reasons[row] = "stalled"
        stopped = rows[diverged | stalled]
        self.step_cap[stopped] = self.nsteps[stopped] + 1  # ASE's loop ends after this step
        self.nsteps[rows] += 1
        self.recorded[rows] = False
        converged = _converged(self.forces[rows], self.fmax)
        for row in rows[converged]:
            self.stop_reasons[row] = "converged"
        return [int(row) for row in rows[converged | (self.nsteps[rows] >= self.step_cap[rows])]]


def _describe(item: Any) -> str:
    if isinstance(item, Atoms):
        source = item.info.get("source")
        return f"{item.get_chemical_formula()}" + (f", {source}" if source else "")
    if _is_structure(item):
        return str(item.composition.formula)
    return type(item).__name__


def _copy_input(item: Any, shared: Any, calculator: CalculatorSpec) -> Atoms:
    """A copy of an input as ``Atoms`` with its calculator: the input's own when ``calculator`` is ``None`` and it has
    one, else ``shared``."""
    if isinstance(item, Atoms):
        atoms = item.copy()
        atoms.calc = item.calc if item.calc is not None and calculator is None else shared
    elif _is_structure(item):
        atoms = _structure_to_atoms(item)
        atoms.calc = shared
    else:
        raise TypeError(f"expected an ase.Atoms or a pymatgen Structure, got {type(item).__name__}")
    return atoms


def relax_structure(
    structure: Any,
    model: Any = None,
    fmax: float = 0.05,
    steps: int = 200,
    calculator: CalculatorSpec = None,
    hybrid: bool | Mapping[str, Any] = False,
    cell: str | None = None,
    **optimizer_kwargs: Any,
) -> Any:
    """Relax a pymatgen ``Structure`` with an agent, at fixed cell or with ``cell`` the cell too (the machinery of
    :func:`relax_many`).

    :param structure: a fully periodic pymatgen ``Structure`` (an ``ase.Atoms`` works too and gives ``Atoms``).
    :param model: as for :class:`RLOptimizer`.
    :param fmax: force threshold, eV/Å.
    :param steps: step cap.
    :param calculator: calculator spec (``None``: ``"lammps"``).
    :param hybrid: as for :func:`relax_many`.
    :param cell: as for :func:`relax_many` (``"frechet"``, ``"unit"``, ``"strain"``; ``None``: fixed cell).
    :param optimizer_kwargs: as for :func:`relax_many`.
    :return: the relaxed ``Structure``: site property ``forces`` (eV/Å), and in ``properties`` the run's
        ``converged``, ``force_calls``, ``fmax``, ``energy``, ``steps``, ``wall_time``, ``stop_reason``,
        ``handover`` and ``source`` (with ``cell`` also ``cell_filter``, ``cell_fmax``, ``max_stress``, ``volume``,
        ``cellpar``).
    :raises ValueError: the agent cannot relax it (unseen species ...), or the relaxation failed.
    """
    (result,) = relax_many(
        [structure], model, fmax=fmax, steps=steps, calculator=calculator, hybrid=hybrid, cell=cell, **optimizer_kwargs
    )
    return result.structure
