"""Relaxing many structures in one process, in lockstep: one policy forward pass per step for all of them.

::

    results = relax_many(structures, model=load_shipped_agent("alfe"), fmax=0.05)
    [(r.converged, r.force_calls) for r in results]  # one result per input, in order

Each structure gets its own :class:`~sb3_crystal.relax.RLOptimizer` (or, with ``hybrid``,
:class:`~sb3_crystal.relax.HybridOptimizer`): its own history, trust region, stall rule, force-call counter and
convergence test, driven by ASE's own step loop. Only the agent's forward pass is shared: at each step the
observations of every structure that is about to take an agent step are stacked and the policy is called once
(structures that fit the agent's ``n_max`` slots as one batch through SB3's ``predict``, exactly as a lone
optimizer calls it; larger cells of a graph actor as a second batch, padded to the largest of them). A structure
that converges, stalls or runs out of steps leaves the batch, and the next waiting structure joins. So each
structure takes the same steps and force calls as when relaxed alone; only floating-point rounding of the batched
network can differ (a few 1e-8 Å in the positions).

:func:`relax_structure` does the same for a pymatgen ``Structure``; :func:`relax_many` takes ``Structure`` inputs too
and gives ``Structure`` results for them.
"""

from __future__ import annotations

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

from sb3_crystal.benchmark.classical import ForceCallCounter
from sb3_crystal.calculators import CalculatorSpec, LammpsEAMCalculator, make_calculator
from sb3_crystal.envs.observation import ObservationLayout
from sb3_crystal.relax.agent_io import CrystalAgent, as_agent, load_default_agent
from sb3_crystal.relax.counted import _COUNTER_MEMORY, check_agent_can_relax
from sb3_crystal.relax.hybrid_optimizer import HybridOptimizer
from sb3_crystal.relax.rl_optimizer import RLOptimizer
from sb3_crystal.structures.geometry import max_force

__all__ = ["BatchProfile", "RelaxationResult", "batched_actions", "relax_many", "relax_structure"]

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

    def summary(self) -> dict[str, Any]:
        """The scalar fields as plain data (for a summary table)."""
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
    predicting them itself. Without a prepared observation it behaves as :class:`RLOptimizer`.
    """

    _prepared_observation: dict[str, np.ndarray] | None = None
    _prepared_action: np.ndarray | None = None

    def prepare(self) -> dict[str, np.ndarray]:
        """The observation for the next step (the one :meth:`step` will use)."""
        forces = np.asarray(self.atoms.get_forces(), dtype=np.float64)
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
    policy = agent.policy
    fitting = [i for i, obs in enumerate(observations) if obs["mask"].shape[0] == agent.n_max]
    larger = [i for i, obs in enumerate(observations) if obs["mask"].shape[0] != agent.n_max]
    if fitting:
        keys = observations[fitting[0]].keys()
        stacked = {key: np.stack([observations[i][key] for i in fitting]) for key in keys}
        predicted, _ = policy.predict(stacked, deterministic=True)
        predicted = np.asarray(predicted, dtype=np.float64).reshape(len(fitting), -1)
        for row, i in enumerate(fitting):
            actions[i] = predicted[row]
    if larger:
        slots = max(observations[i]["mask"].shape[0] for i in larger)
        keys = observations[larger[0]].keys()
        stacked = {key: np.stack([_pad_slots(key, observations[i][key], slots) for i in larger]) for key in keys}
        policy.set_training_mode(False)
        tensors = {key: th.as_tensor(value, device=policy.device) for key, value in stacked.items()}
        with th.no_grad():  # a graph actor takes any number of atom slots; its Box(-1, 1) needs no unscaling
            predicted_t = policy._predict(tensors, deterministic=True)
        predicted = np.clip(predicted_t.cpu().numpy().astype(np.float64).reshape(len(larger), slots, 3), -1.0, 1.0)
        for row, i in enumerate(larger):
            actions[i] = predicted[row, : observations[i]["mask"].shape[0]].reshape(-1)
    return [np.asarray(action) for action in actions]


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

    @property
    def agent(self) -> _LockstepRL | None:
        """The optimizer that takes the batch's action at the next step (``None``: no agent step is due)."""
        optimizer = self.optimizer
        if isinstance(optimizer, HybridOptimizer):
            # An agent-phase hybrid may still hand over in this step: the prepared action is then not used.
            return optimizer.agent_optimizer if optimizer.phase == "agent" else None  # type: ignore[return-value]
        return optimizer  # type: ignore[return-value]

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
    **optimizer_kwargs: Any,
) -> list[RelaxationResult]:
    """Relax many structures at fixed cell with one agent, in lockstep (see the module docstring).

    The inputs are not changed: each structure is copied and the copy relaxed.

    :param structures: ``ase.Atoms`` (fully periodic) or pymatgen ``Structure`` objects.
    :param model: as for :class:`RLOptimizer` (``None``: the shipped Al–Fe agent).
    :param fmax: force threshold, eV/Å.
    :param steps: step cap per structure.
    :param calculator: a calculator spec (:func:`~sb3_crystal.calculators.make_calculator`), built once and shared by
        all structures (their calls are made one after another); ``None``: each ``Atoms`` input's own calculator
        when it has one, else one LAMMPS EAM calculator for the others.
    :param hybrid: ``True`` (or a dict of :class:`HybridOptimizer` arguments: ``f_switch``, ``optimizer`` ...):
        relax each structure with a :class:`HybridOptimizer`; its agent phase is batched, its classical phase runs
        per structure in the same loop.
    :param batch_size: most structures relaxing at once (``None``: all); the next waits until one leaves.
    :param on_error: ``"raise"``: a structure the agent cannot relax (unseen species, non-periodic cell ...) raises,
        naming it, before any relaxation starts, and an error during a relaxation is raised at once; ``"record"``:
        either becomes a result with ``stop_reason="error"`` and the other structures go on.
    :param on_result: called with each result as its structure finishes (in finishing order).
    :param profile: a :class:`BatchProfile` to fill with timings.
    :param optimizer_kwargs: arguments of :class:`RLOptimizer` (``trust_region``, ``patience``, ``min_improvement``,
        move settings) or, with ``hybrid``, of :class:`HybridOptimizer`; ``logfile`` and ``trajectory`` are not taken.
    :return: one :class:`RelaxationResult` per input, in input order.
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
    settings = {**optimizer_kwargs, **(dict(hybrid) if isinstance(hybrid, Mapping) else {})}
    agent = load_default_agent() if model is None else as_agent(model)
    agent = _BatchAgent(**{item.name: getattr(agent, item.name) for item in fields(agent)})
    lockstep = _Lockstep(agent, fmax, steps, _LockstepHybrid if hybrid else _LockstepRL, settings, on_error, on_result)
    with warnings.catch_warnings():
        # The agent's stall stop is reported in each result's stop_reason rather than once per structure.
        warnings.filterwarnings("ignore", message=r".*stopping unconverged.*")
        results = lockstep.relax(list(structures), calculator, batch_size)
    if profile is not None:
        profile.policy_seconds += lockstep.policy_seconds
        profile.policy_passes += lockstep.passes
        profile.policy_rows += lockstep.rows
        profile.lockstep_steps += lockstep.steps
        profile.total_seconds += time.perf_counter() - t_start
        profile.structure_seconds += sum(r.wall_time for r in results) - lockstep.policy_seconds
    return results


class _Lockstep:
    """The loop of :func:`relax_many`: admits structures, makes the batched policy pass, steps each, collects."""

    def __init__(
        self,
        agent: CrystalAgent,
        fmax: float,
        steps: int,
        optimizer_class: type[RLOptimizer] | type[HybridOptimizer],
        settings: dict[str, Any],
        on_error: str,
        on_result: Callable[[RelaxationResult], None] | None,
    ) -> None:
        self.agent, self.fmax, self.max_steps = agent, fmax, steps
        self.optimizer_class, self.settings = optimizer_class, settings
        self.on_error, self.on_result = on_error, on_result
        self.results: list[RelaxationResult | None] = []
        self.inputs: list[Atoms | None] = []
        self.from_structure: list[bool] = []
        self.policy_seconds = 0.0
        self.passes = self.rows = self.steps = 0

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
        atoms.calc = SinglePointCalculator(atoms, energy=run.energy, forces=run.forces)
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
            optimizer = self.optimizer_class(atoms, self.agent, logfile=None, **self.settings)
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
    **optimizer_kwargs: Any,
) -> Any:
    """Relax a pymatgen ``Structure`` at fixed cell with an agent (the machinery of :func:`relax_many`).

    :param structure: a fully periodic pymatgen ``Structure`` (an ``ase.Atoms`` works too and gives ``Atoms``).
    :param model: as for :class:`RLOptimizer`.
    :param fmax: force threshold, eV/Å.
    :param steps: step cap.
    :param calculator: calculator spec (``None``: ``"lammps"``).
    :param hybrid: as for :func:`relax_many`.
    :param optimizer_kwargs: as for :func:`relax_many`.
    :return: the relaxed ``Structure``: site property ``forces`` (eV/Å), and in ``properties`` the run's
        ``converged``, ``force_calls``, ``fmax``, ``energy``, ``steps``, ``wall_time``, ``stop_reason``,
        ``handover`` and ``source``.
    :raises ValueError: the agent cannot relax it (unseen species ...), or the relaxation failed.
    """
    (result,) = relax_many(
        [structure], model, fmax=fmax, steps=steps, calculator=calculator, hybrid=hybrid, **optimizer_kwargs
    )
    return result.structure
