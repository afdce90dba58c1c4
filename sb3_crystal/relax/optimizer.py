"""ASE optimizers driven by a trained agent: :class:`RLOptimizer` and the agent-then-classical :class:`HybridOptimizer`.

Both follow ``ase.optimize``::

    atoms.calc = LammpsEAMCalculator()
    opt = RLOptimizer(atoms, model=CrystalTD3.load("agent.zip"), trajectory="relax.traj")
    converged = opt.run(fmax=0.05, steps=200)
    opt.force_calls  # energy+forces evaluations at distinct geometries, the start included

**Force calls.** During :meth:`run` / :meth:`irun` the atoms' calculator is wrapped in a
:class:`~sb3_crystal.calculators.ForceCallCounter` (or, when it already is one, e.g. in the benchmark, used
as it is), so counting follows the benchmark's rule: one evaluation at a geometry not seen before is one call;
going back to a geometry seen before is free. Afterwards the calculator is put back, holding the last results.
"""

from __future__ import annotations

import functools
import itertools
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any

import numpy as np
import torch as th
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.optimize import BFGS, FIRE, LBFGS, BFGSLineSearch, GPMin
from ase.optimize.optimize import DEFAULT_MAX_STEPS, Optimizer

from sb3_crystal.benchmark.classical import GPMinFitted
from sb3_crystal.calculators import ForceCallCounter, UnsupportedElementsError, calculator_elements, check_elements
from sb3_crystal.envs.moves import MoveRule
from sb3_crystal.relax.agent_io import CrystalAgent, as_agent, load_default_agent
from sb3_crystal.structures.geometry import closest_pair

__all__ = [
    "AUTO_GPMIN_MAX_ATOMS",
    "CLASSICAL_OPTIMIZERS",
    "DEFAULT_FINISHER",
    "FMAX_INDEPENDENT_OPTIMIZERS",
    "MIN_CURVATURE",
    "HybridOptimizer",
    "RLOptimizer",
    "bfgs_hessian",
    "bfgs_inverse_hessian",
    "check_agent_can_relax",
    "is_auto_finisher",
    "secant_pairs",
    "warm_start",
]

#: Classical optimizers the hybrid hands over to, by name.
CLASSICAL_OPTIMIZERS: dict[str, type[Optimizer]] = {
    "BFGS": BFGS,
    "LBFGS": LBFGS,
    "BFGSLineSearch": BFGSLineSearch,
    "FIRE": FIRE,
    "GPMin": GPMin,
    "GPMinFitted": GPMinFitted,
}

#: The hybrid's classical optimizer unless told otherwise: ``"auto"``, BFGSLineSearch when the agent reached
#: ``f_switch``, else GPMin on cells of up to :data:`AUTO_GPMIN_MAX_ATOMS` atoms and BFGSLineSearch on larger ones
#: (chosen by measurement, see :class:`HybridOptimizer`).
DEFAULT_FINISHER = "auto"

#: ``"auto"`` finishes with GPMin up to this many atoms, the largest unseen cells it was measured on (docs/results.md).
#: GPMin's model grows with the cube of (steps × 3N) and had no measured gain on larger cells; BFGSLineSearch takes over.
AUTO_GPMIN_MAX_ATOMS = 8


def is_auto_finisher(optimizer: Any) -> bool:
    """Whether ``optimizer`` names the ``"auto"`` finisher (any case)."""
    return isinstance(optimizer, str) and optimizer.lower() == "auto"


#: Those of :data:`CLASSICAL_OPTIMIZERS` whose path ignores ``fmax`` (it only decides when to stop); GPMin's inner
#: retry loop stops at the first point below ``fmax``.
FMAX_INDEPENDENT_OPTIMIZERS: tuple[type[Optimizer], ...] = (BFGS, LBFGS, BFGSLineSearch, FIRE)

#: A secant pair (s, y) of the agent's path informs the finisher's Hessian only when the curvature along s,
#: s·y / s·s, is at least this, eV/Å² (the BFGS condition s·y > 0, with a margin: a rigid translation changes the
#: gradient only by noise, whose tiny s·y would give the inverse Hessian a huge entry). EAM curvatures of the cells
#: here are 2–200 eV/Å².
MIN_CURVATURE = 0.1

#: Relative fmax decrease that counts as progress of the agent (smaller changes are numerical noise).
_IMPROVEMENT = 1e-6

#: Geometries the force-call counter remembers (a handover back to the lowest-energy geometry is then free).
_COUNTER_MEMORY = 4096


def check_agent_can_relax(agent: CrystalAgent, atoms: Atoms) -> None:
    """Raise when ``agent`` cannot relax ``atoms``: unseen species, too many atoms for a fixed-size network,
    elements outside the calculator's potential, or a cell that is not fully periodic.

    :raises UnsupportedElementsError: species the agent was not trained on (named) or the potential lacks.
    :raises ValueError: more atoms than a fixed-size agent has slots, or a non-periodic cell.
    """
    if not isinstance(atoms, Atoms):
        raise TypeError(f"The agent relaxes an ase.Atoms, not {type(atoms).__name__}")
    if not np.all(atoms.pbc):
        raise ValueError(f"{atoms.get_chemical_formula()}: the agent relaxes fully periodic cells (pbc={atoms.pbc.tolist()})")
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


class _CountedOptimizer(Optimizer):
    """An ASE optimizer whose :meth:`run` / :meth:`irun` count force calls (see the module docstring)."""

    def __init__(self, atoms: Atoms, logfile: IO | str | None, trajectory: Any, append_trajectory: bool) -> None:
        if atoms.calc is None:
            raise ValueError(f"{atoms.get_chemical_formula()}: attach a calculator (atoms.calc) before relaxing")
        self._counter: ForceCallCounter | None = None
        self._counted_before = 0  # calls of counters replaced since (the user swapped calculators)
        self._counter_base = 0
        super().__init__(atoms, logfile=logfile, trajectory=trajectory, append_trajectory=append_trajectory)

    @property
    def force_calls(self) -> int:
        """Energy+forces evaluations at distinct geometries in :meth:`run` / :meth:`irun`, the start included."""
        counted = self._counter.n_calls - self._counter_base if self._counter is not None else 0
        return self._counted_before + counted

    def _use_counter(self, counter: ForceCallCounter) -> None:
        if counter is not self._counter:
            self._counted_before = self.force_calls
            self._counter, self._counter_base = counter, counter.n_calls

    @contextmanager
    def _counting(self) -> Iterator[None]:
        calc = self.atoms.calc
        if calc is None:
            raise ValueError("The atoms lost their calculator")
        if isinstance(calc, ForceCallCounter):  # the benchmark's counter, or ours in a nested call: counts already
            self._use_counter(calc)
            yield
            return
        if self._counter is None or self._counter.calculator is not calc:
            self._use_counter(ForceCallCounter(calc, memory=_COUNTER_MEMORY))
        assert self._counter is not None
        self.atoms.calc = self._counter
        try:
            yield
        finally:
            self.atoms.calc = calc
            self._hand_back_results(calc)

    def _hand_back_results(self, calc: Any) -> None:
        """Give the user's calculator the results at the final geometry, so ``atoms.get_forces()`` costs nothing."""
        counter = self._counter
        if not (isinstance(calc, Calculator) and counter is not None and counter.atoms is not None and counter.results):
            return
        if not counter.check_state(self.atoms) and (calc.atoms is None or calc.check_state(self.atoms)):
            calc.atoms = self.atoms.copy()
            calc.results = dict(counter.results)

    def _before_run(self) -> None:
        """Hook before the first step of a run."""

    def irun(self, fmax: float = 0.05, steps: int = DEFAULT_MAX_STEPS) -> Iterator[bool]:
        with self._counting():
            self._before_run()
            yield from super().irun(fmax=fmax, steps=steps)

    def run(self, fmax: float = 0.05, steps: int = DEFAULT_MAX_STEPS) -> bool:
        with self._counting():
            self._before_run()
            return bool(super().run(fmax=fmax, steps=steps))

    def _current(self) -> tuple[float, np.ndarray]:
        """Energy and forces at the current geometry (a counted call the first time a geometry is seen)."""
        return float(self.atoms.get_potential_energy()), np.asarray(self.atoms.get_forces(), dtype=np.float64)


class RLOptimizer(_CountedOptimizer):
    """Relax atoms at fixed cell with a trained TD3/SAC agent: each step moves the atoms by the agent's
    deterministic action, exactly as :class:`~sb3_crystal.envs.CrystalRelaxEnv` would (same action scale, same
    contact limiting), then evaluates energy and forces once.

    Any number of atoms works: up to the agent's ``n_max`` the observation is padded to ``n_max``; beyond it a
    graph (TFN/CGCNN) actor is called on the observation padded to the structure's own size, while a
    fixed-size (MLP) agent raises ``ValueError``. Species outside those seen in training are refused.

    :param atoms: the structure (an ``Atoms`` with a calculator, fully periodic); relaxed in place.
    :param model: a trained TD3/SAC model (``CrystalTD3``, ``CrystalSAC``, ``TD3``, ``SAC``), a
        :class:`~sb3_crystal.relax.agent_io.CrystalAgent`, or ``None`` for the package's shipped agent.
    :param logfile: as in ASE (``"-"`` stdout, a path, a file, or ``None``).
    :param trajectory: as in ASE (a path or an open ``Trajectory``): one frame per step, the start included.
    :param append_trajectory: append to an existing trajectory file.
    :param max_displacement: shift for an action of 1, Å (default: the training environment's, else the env default).
    :param action_scale: ``"fixed"`` or ``"force"`` (default as above).
    :param force_cap: force cap of the ``"force"`` scale, eV/Å (default as above).
    :param min_distance: closest approach the contact rule allows, Å (default as above).
    """

    def __init__(
        self,
        atoms: Atoms,
        model: Any = None,
        logfile: IO | str | None = "-",
        trajectory: Any = None,
        append_trajectory: bool = False,
        max_displacement: float | None = None,
        action_scale: str | None = None,
        force_cap: float | None = None,
        min_distance: float | None = None,
    ) -> None:
        self.agent = load_default_agent() if model is None else as_agent(model)
        self.settings = self.agent.move_settings(
            max_displacement=max_displacement, action_scale=action_scale, force_cap=force_cap, min_distance=min_distance
        )
        self._moves = MoveRule(**self.settings)  # the environment's own rule; validates the settings
        check_agent_can_relax(self.agent, atoms)
        #: fraction of the agent's last move kept by the contact rule, and the largest atomic shift (Å) of that move.
        self.last_fraction = 1.0
        self.last_max_shift = float("nan")
        super().__init__(atoms, logfile=logfile, trajectory=trajectory, append_trajectory=append_trajectory)

    def todict(self) -> dict[str, Any]:
        description = super().todict()
        description.update(self.settings, n_max=self.agent.n_max, policy=type(self.agent.policy).__name__)
        return description

    def _before_run(self) -> None:
        distance = self.settings["min_distance"]
        if distance > 0:
            i, j, d = closest_pair(self.atoms, search_radius=distance)
            if d < distance:
                warnings.warn(
                    f"Atoms {i} and {j} are {d:.3f} Å apart, closer than the agent's min_distance {distance} Å: the "
                    "contact rule blocks every move (use HybridOptimizer, or a smaller min_distance)",
                    stacklevel=3,
                )

    def observation(self, forces: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The environment's observation of the current structure, padded to ``max(n_max, len(atoms))`` slots.

        :param forces: forces of the current structure (default: asked of the calculator).
        """
        atoms = self.atoms
        if forces is None:
            forces = atoms.get_forces()
        n = len(atoms)
        slots = max(n, self.agent.n_max)
        observation = {
            "positions": np.zeros((slots, 3), np.float32),
            "cell": np.array(atoms.cell, dtype=np.float32),
            "forces": np.zeros((slots, 3), np.float32),
            "species": np.zeros(slots, np.float32),
            "mask": np.zeros(slots, np.float32),
        }
        observation["positions"][:n] = atoms.positions
        observation["forces"][:n] = forces
        observation["species"][:n] = atoms.numbers
        observation["mask"][:n] = 1.0
        return observation

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
        forces = np.asarray(self.atoms.get_forces(), dtype=np.float64)
        observation = self.observation(forces)
        action = self.action(observation)
        positions, cell = self.atoms.positions, np.array(self.atoms.cell)
        shifts, fraction = self._moves.move(positions, cell, forces, action, observation["mask"].shape[0])
        self.last_fraction = float(fraction)
        self.last_max_shift = float(np.sqrt((shifts**2).sum(axis=1)).max()) if len(shifts) else 0.0
        if self.last_max_shift > 0:  # a fully blocked move leaves the geometry (and the calculator's cache) alone
            self.optimizable.set_x((self.atoms.positions + shifts).ravel())


def secant_pairs(path: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The secant pairs ``(s, y)`` = (Δx, Δgradient) between consecutive points of a path that have positive
    curvature along ``s``: ``s·y ≥`` :data:`MIN_CURVATURE` ``· s·s`` (``s·y > 0`` keeps a BFGS Hessian positive
    definite).

    :param path: ``(x, gradient)`` of each evaluated point, flat arrays, in the order visited.
    """
    pairs = []
    for (x0, g0), (x1, g1) in itertools.pairwise(path):
        s, y = x1 - x0, g1 - g0
        if np.abs(s).max() < 1e-7:  # the same geometry (a blocked move)
            continue
        if s @ y >= MIN_CURVATURE * (s @ s):
            pairs.append((s, y))
    return pairs


def bfgs_hessian(pairs: Sequence[tuple[np.ndarray, np.ndarray]], initial: np.ndarray) -> np.ndarray:
    """The Hessian after BFGS updates with ``pairs`` (each satisfying ``s·y > 0``), starting from ``initial``."""
    hessian = np.array(initial, dtype=np.float64)
    for s, y in pairs:
        hs = hessian @ s
        hessian += np.outer(y, y) / (s @ y) - np.outer(hs, hs) / (s @ hs)
    return hessian


def bfgs_inverse_hessian(pairs: Sequence[tuple[np.ndarray, np.ndarray]], initial: np.ndarray) -> np.ndarray:
    """The inverse Hessian after BFGS updates with ``pairs`` (each satisfying ``s·y > 0``), from ``initial``."""
    inverse = np.array(initial, dtype=np.float64)
    eye = np.eye(len(inverse))
    for s, y in pairs:
        rho = 1.0 / (s @ y)
        left = eye - rho * np.outer(s, y)
        inverse = left @ inverse @ left.T + rho * np.outer(s, s)
    return inverse


class _PresetInverseHessian:
    """Mixin for :class:`~ase.optimize.BFGSLineSearch`: an inverse Hessian set before the first step is kept
    (ASE's first update would replace it by the identity, or fail on the missing previous point)."""

    H: np.ndarray | None
    optimizable: Any

    def update(self, r: np.ndarray, g: np.ndarray, r0: np.ndarray | None, g0: np.ndarray | None, p0: Any) -> None:
        if r0 is None and self.H is not None:
            self.I = np.eye(self.optimizable.ndofs(), dtype=int)
            return
        super().update(r, g, r0, g0, p0)  # type: ignore[misc]


@functools.cache
def _with_preset_inverse_hessian(cls: type[Optimizer]) -> type[Optimizer]:
    return type(cls.__name__, (_PresetInverseHessian, cls), {"__doc__": cls.__doc__})


def warm_start(optimizer: Optimizer, path: Sequence[tuple[np.ndarray, float, np.ndarray]]) -> int:
    """Give a freshly made quasi-Newton or Gaussian-process optimizer what earlier force calls taught.

    - :class:`~ase.optimize.BFGS`: its initial Hessian becomes the BFGS update of ``alpha·I`` by the secant pairs of
      ``path`` (:func:`secant_pairs`);
    - :class:`~ase.optimize.BFGSLineSearch`: likewise for its initial inverse Hessian (in its scaled units); it must
      be made by :meth:`HybridOptimizer.finisher_class` (which keeps a preset inverse Hessian);
    - :class:`~ase.optimize.GPMin`: the points of ``path`` (but the current geometry, which its first step adds)
      join its training set;
    - any other optimizer is left alone.

    The optimizer's own updates then go on from there, exactly as after its own steps.

    :param optimizer: the optimizer, before its first step.
    :param path: ``(x, energy, gradient)`` of each evaluated geometry, flat arrays, in the order visited.
    :return: the number of secant pairs (BFGS) or points (GPMin) used.
    """
    if isinstance(optimizer, GPMin):
        # Only points within the kernel's length scale inform the model where it steps next; farther (higher) ones
        # would mostly raise its prior, the largest energy seen, and with it the model's curvature.
        here = optimizer.optimizable.get_x()
        reach = float(optimizer.kernel.l)
        points = [(x, e, g) for x, e, g in path if 0 < np.linalg.norm(x - here) <= reach]
        for x, energy, gradient in points:
            optimizer.x_list.append(np.array(x, dtype=np.float64))
            optimizer.y_list.append(np.append(energy, gradient))
        return len(points)
    pairs = secant_pairs([(x, g) for x, _, g in path])
    if not pairs:
        return 0
    if isinstance(optimizer, BFGS):
        optimizer.H0 = bfgs_hessian(pairs, optimizer.H0)
    elif isinstance(optimizer, BFGSLineSearch):
        if not isinstance(optimizer, _PresetInverseHessian):
            raise TypeError(f"{type(optimizer).__name__} needs HybridOptimizer.finisher_class to keep a preset Hessian")
        scale = 1.0 / optimizer.alpha  # BFGSLineSearch works with gradients divided by alpha
        start = optimizer.H if optimizer.H is not None else np.eye(optimizer.optimizable.ndofs())
        optimizer.H = bfgs_inverse_hessian([(s, y * scale) for s, y in pairs], start)
    else:
        return 0
    return len(pairs)


class HybridOptimizer(_CountedOptimizer):
    """The agent relaxes until the largest force is at most ``f_switch``, then a classical optimizer finishes.

    The agent also hands over early, and the classical optimizer then restarts from the **lowest-energy geometry
    seen** (one step of this optimizer, free of force calls: that geometry was evaluated before), when

    - it stalls: ``patience`` agent steps without lowering the smallest fmax seen by at least the fraction
      ``min_improvement`` (an agent that only crawls costs more force calls than the classical optimizer), or a
      move fully blocked by the contact rule (a deterministic agent would repeat it forever);
    - it raises the energy more than ``max_energy_rise`` eV/atom above the lowest seen;
    - it has taken ``max_agent_steps`` steps.

    The defaults keep the agent only while each step cuts the smallest fmax by 30 % and lowers the energy: on
    structures it never saw, a trained agent's first one or two steps from a distorted start are its useful ones.

    With ``warm_start`` the agent's force calls also inform the classical optimizer (:func:`warm_start`): a
    quasi-Newton finisher starts from the BFGS update of its initial Hessian by the secant pairs of the agent's
    path, GPMin from a training set holding the agent's points near the handover geometry.

    After the handover the path is the classical optimizer's from that geometry, so the hybrid converges whenever
    the classical optimizer does from there, even with an untrained agent. Force calls cover both phases, each
    geometry once (the handover geometry is not counted again).

    :param atoms: the structure (with a calculator, fully periodic); relaxed in place.
    :param model: as for :class:`RLOptimizer`.
    :param f_switch: hand over at fmax ≤ this, eV/Å.
    :param optimizer: classical optimizer: a name of :data:`CLASSICAL_OPTIMIZERS` (any case), an ASE Optimizer
        class, or ``"auto"`` (the default): BFGSLineSearch when the agent brought fmax down to ``f_switch`` (near
        a minimum a quasi-Newton step from the agent's secant pairs is best: on B2 AlFe it needed fewer force calls
        than GPMin), otherwise, when the agent handed over early far from a minimum, GPMin (warm-started with the
        agent's nearby points) on cells of up to :data:`AUTO_GPMIN_MAX_ATOMS` atoms and BFGSLineSearch on larger
        ones. On unseen cells of 2–8 atoms the GPMin finisher stayed within 1.11× of the best classical optimizer
        on three start sets, where BFGSLineSearch reached 1.52× on one (``docs/results.md``). GPMin's cost grows
        with the cube of (steps × 3N), and its path depends on ``fmax``.
    :param optimizer_kwargs: its arguments (``maxstep`` ...).
    :param patience: agent steps without enough fmax improvement before a stall handover.
    :param min_improvement: relative drop of the smallest fmax seen that counts as progress (0.3 = 30 %).
    :param max_energy_rise: energy rise over the lowest seen that triggers a handover, eV per atom (0: any rise).
    :param max_agent_steps: most agent steps (``None``: no limit).
    :param warm_start: give the classical optimizer what the agent's force calls taught (see above).
    :param logfile: as in ASE.
    :param trajectory: as in ASE: one frame per step of either phase, the start included.
    :param append_trajectory: append to an existing trajectory file.
    :param move_settings: ``max_displacement``, ``action_scale``, ``force_cap``, ``min_distance`` (see :class:`RLOptimizer`).
    """

    def __init__(
        self,
        atoms: Atoms,
        model: Any = None,
        f_switch: float = 0.1,
        optimizer: str | type[Optimizer] = DEFAULT_FINISHER,
        optimizer_kwargs: dict[str, Any] | None = None,
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
        if not f_switch > 0:
            raise ValueError(f"f_switch must be > 0 eV/Å, got {f_switch}")
        if not (isinstance(patience, int) and patience >= 1):
            raise ValueError(f"patience must be a positive integer, got {patience!r}")
        if not max_energy_rise >= 0:
            raise ValueError(f"max_energy_rise must be ≥ 0 eV/atom, got {max_energy_rise}")
        if max_agent_steps is not None and max_agent_steps < 0:
            raise ValueError(f"max_agent_steps must be ≥ 0 or None, got {max_agent_steps}")
        self._auto_finisher = is_auto_finisher(optimizer)
        #: the classical optimizer's class (for ``"auto"``: the one for a handover far from the minimum).
        self.optimizer_class = self.classical_optimizer(optimizer, len(atoms))
        self.optimizer_kwargs = dict(optimizer_kwargs or {})
        self.f_switch = float(f_switch)
        self.patience = patience
        if not 0 <= min_improvement < 1:
            raise ValueError(f"min_improvement must be in [0, 1), got {min_improvement}")
        self.min_improvement = float(min_improvement)
        self.max_energy_rise = float(max_energy_rise)
        self.max_agent_steps = max_agent_steps
        self.warm_start = bool(warm_start)
        #: secant pairs (BFGS, BFGSLineSearch) or points (GPMin) of the agent's path given to the classical optimizer.
        self.warm_start_size = 0
        #: the agent's optimizer (steps only: this optimizer logs, writes the trajectory and counts).
        self.agent_optimizer = RLOptimizer(atoms, model, logfile=None, **move_settings)
        self.agent = self.agent_optimizer.agent
        #: the classical optimizer, from the handover on.
        self.classical: Optimizer | None = None
        #: ``"agent"`` or ``"classical"``.
        self.phase = "agent"
        #: why the agent handed over (``"f_switch"``, ``"stall"``, ``"blocked"``, ``"energy"``, ``"agent_steps"``) or None.
        self.handover_reason: str | None = None
        #: step count and force calls at the handover (``None`` before).
        self.handover_step: int | None = None
        self.handover_force_calls: int | None = None
        self.agent_steps = 0
        self.classical_steps = 0
        self._best_energy = np.inf
        self._best_positions: np.ndarray | None = None
        self._best_fmax = np.inf
        self._since_improvement = 0
        self._path: list[tuple[np.ndarray, float, np.ndarray]] = []  # (x, energy, gradient) of the agent's geometries
        super().__init__(atoms, logfile=logfile, trajectory=trajectory, append_trajectory=append_trajectory)

    @staticmethod
    def classical_optimizer(optimizer: str | type[Optimizer], n_atoms: int | None = None) -> type[Optimizer]:
        """An optimizer class by name (a key of :data:`CLASSICAL_OPTIMIZERS`, any case), the class itself, or for
        ``"auto"`` the one for a cell of ``n_atoms`` atoms (GPMin up to :data:`AUTO_GPMIN_MAX_ATOMS`, else
        BFGSLineSearch)."""
        if isinstance(optimizer, type) and issubclass(optimizer, Optimizer):
            return optimizer
        if is_auto_finisher(optimizer):
            if n_atoms is None:
                raise ValueError("optimizer 'auto' depends on the number of atoms: give n_atoms")
            return GPMin if n_atoms <= AUTO_GPMIN_MAX_ATOMS else BFGSLineSearch
        lookup = {name.lower(): cls for name, cls in CLASSICAL_OPTIMIZERS.items()}
        if not isinstance(optimizer, str) or optimizer.lower() not in lookup:
            raise ValueError(f"Unknown classical optimizer {optimizer!r}: choose from auto, {', '.join(CLASSICAL_OPTIMIZERS)}")
        return lookup[optimizer.lower()]

    def finisher_class(self) -> type[Optimizer]:
        """The class the classical optimizer is made of: :attr:`optimizer_class`, but for a BFGSLineSearch with
        warm start a subclass that keeps the inverse Hessian :func:`warm_start` sets."""
        cls = self.optimizer_class
        if self.warm_start and issubclass(cls, BFGSLineSearch):
            return _with_preset_inverse_hessian(cls)
        return cls

    def todict(self) -> dict[str, Any]:
        description = super().todict()
        description.update(
            self.agent_optimizer.settings,
            f_switch=self.f_switch,
            classical=self.optimizer_class.__name__,
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
        assert self.classical is not None
        self.classical.step()
        self.classical.nsteps += 1
        self.classical_steps += 1

    def _handover_reason(self) -> str | None:
        """Update the records with the current geometry and say whether (and why) the agent hands over now."""
        energy, forces = self._current()
        fmax = float(np.sqrt((forces**2).sum(axis=1)).max()) if len(forces) else 0.0
        self._path.append((self.optimizable.get_x().copy(), energy, -forces.ravel()))
        if energy < self._best_energy:
            self._best_energy, self._best_positions = energy, self.atoms.positions.copy()
        if fmax < self._best_fmax * (1.0 - max(self.min_improvement, _IMPROVEMENT)):
            self._best_fmax, self._since_improvement = fmax, 0
        elif self.agent_steps > 0:
            self._since_improvement += 1
        if fmax <= self.f_switch:
            return "f_switch"
        if energy - self._best_energy > self.max_energy_rise * len(self.atoms):
            return "energy"
        if self.agent_steps > 0 and self.agent_optimizer.last_max_shift == 0:
            return "blocked"
        if self._since_improvement >= self.patience:
            return "stall"
        if self.max_agent_steps is not None and self.agent_steps >= self.max_agent_steps:
            return "agent_steps"
        return None

    def _hand_over(self, reason: str) -> bool:
        """Switch to the classical optimizer; :return: whether the atoms went back to the lowest-energy geometry."""
        self.phase, self.handover_reason = "classical", reason
        if self._auto_finisher and reason == "f_switch":
            self.optimizer_class = BFGSLineSearch
        self.handover_step, self.handover_force_calls = self.nsteps, self.force_calls
        restart = (
            reason != "f_switch"
            and self._best_positions is not None
            and not np.array_equal(self._best_positions, self.atoms.positions)
        )
        if restart:
            assert self._best_positions is not None
            self.optimizable.set_x(self._best_positions.ravel())
        self.classical = self.finisher_class()(self.atoms, logfile=None, **self.optimizer_kwargs)
        self.classical.fmax = self.fmax
        if self.warm_start:
            self.warm_start_size = warm_start(self.classical, self._path)
        where = "the lowest-energy geometry" if restart else "here"
        taught = f", warm-started with {self.warm_start_size} of the agent's points" if self.warm_start_size else ""
        self.logfile.write(
            f"{type(self).__name__}: agent hands over to {self.optimizer_class.__name__} after {self.agent_steps} "
            f"steps ({reason}), from {where}{taught}\n"
        )
        return restart
