"""``CrystalRelaxEnv``: the paper's relaxation MDP as a gymnasium environment (``CrystalRelax-v0``)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator
from gymnasium import spaces

from sb3_crystal.calculators import CalculatorSpec, make_calculator
from sb3_crystal.envs.cell import FilteredPath
from sb3_crystal.envs.moves import MoveRule
from sb3_crystal.envs.observation import ObservationLayout
from sb3_crystal.envs.rewards import check_reward, relaxation_reward
from sb3_crystal.envs.safeguard import TrustRegion
from sb3_crystal.structures.dataset import StructureDataset, StructureSpec
from sb3_crystal.structures.generators import StructureGenerator, parse_generator_spec
from sb3_crystal.structures.geometry import distort, largest_norm, max_force
from sb3_crystal.structures.validation import check_structure


class CrystalRelaxEnv(gym.Env[dict[str, np.ndarray], np.ndarray]):
    """Move the atoms of a periodic cell (fixed lattice) until every force is below ε.

    Reset picks a relaxed structure from the dataset (uniformly, or by ``structure_weights``) and shifts every
    Cartesian coordinate by β·ξ, ξ ~ U(−1, 1). A step shifts each atom by its slice of the action and
    recomputes energy and forces (one force call).

    **Observation** (``Dict``, float32, padded to ``n_max`` atoms, fresh arrays each call; the layout is
    :class:`~sb3_crystal.envs.observation.ObservationLayout`): ``positions`` (n_max, 3) Å; ``cell`` (3, 3) Å, lattice
    vectors as rows; ``forces`` (n_max, 3) eV/Å; ``species`` (n_max,) atomic numbers (0 on padding); ``mask``
    (n_max,) 1 for an atom, 0 for padding. With ``history=k`` also the last ``k`` steps' displacements and force
    changes per atom and invariant signals; with ``proposal="lbfgs"`` the L-BFGS step from that history.
    Positions are not wrapped into the cell: an atom keeps its trajectory.

    **Action**: ``Box(−1, 1, (3·n_max,))``, one 3-vector per atom slot; padded slots are ignored. With
    ``action_scale="fixed"`` the shift is ``a_i·max_displacement`` Å; with ``"force"`` (MACS-like) it is
    ``a_i·max_displacement·min(|f_i|, force_cap)/force_cap``, so steps shrink with the force near the minimum; with
    ``"proposal"`` (for residual actions) it shrinks with the proposal's step instead
    (:class:`~sb3_crystal.envs.moves.MoveRule`).
    With ``action_mode="residual"`` that shift is added to the observation's classical proposal: at a zero action
    the atoms take the L-BFGS step.

    **Contacts**: a move that would bring two atoms closer than ``min_distance`` is shortened (the whole action
    scaled by the largest fraction in [0, 1], found by bisection, that keeps every pair at least
    ``min_distance`` apart); ``info["action_fraction"]`` reports the fraction. In a start, the atoms of a pair
    closer than ``min_distance`` get their displacements redrawn. So LAMMPS never sees overlapping atoms and
    forces stay finite.

    **Reward**: a function of :data:`~sb3_crystal.envs.rewards.REWARDS`: ``force`` = −max|f|, ``step`` = −1 until
    done and 0 at done, ``log_force`` = −log10 max|f|, ``hybrid`` = w1·force + w2·step + w3·log_force (forces after
    the move), ``calls`` = −(force calls of the step), ``log_ratio`` = decades the largest force fell.
    ``terminated`` when max|f| ≤ ε; ``truncated`` after ``max_steps`` steps (never ``terminated``, so TD3
    bootstraps there).

    **info**: ``fmax``, ``energy``, ``force_calls`` (this episode, the reset's included), ``is_success``,
    ``max_shift`` (largest atomic shift of the step, Å), ``action_fraction``, ``rejected`` (tries the trust
    region rejected in the step), ``n_atoms``, ``structure_index``, ``episode_step``.

    ε, reward, weights and β can change between episodes: :meth:`set_epsilon`, :meth:`set_reward`,
    :meth:`set_beta` (through ``VecEnv.env_method`` for vectorised environments).

    :param structures: dataset spec: prototype names (``"AlFe-B2"``), structure files (CIF, POSCAR, extxyz, the
        paper's CSV), ``"random:count=20,atoms=2-3,seed=0"``, ``Atoms``, or a list of these.
    :param calculator: ``"lammps"`` (default, Mendelev 2005 Al–Fe EAM), ``"matscipy"``, ``"emt"``,
        ``"module:Class"``, or an ASE calculator object or factory.
    :param n_max: atom slots of the observation; default the largest cell of the dataset.
    :param beta: distortion parameter β, Å.
    :param epsilon: force threshold ε, eV/Å.
    :param reward: ``"force"``, ``"step"``, ``"log_force"`` or ``"hybrid"``.
    :param reward_weights: hybrid weights (w_force, w_step, w_log_force).
    :param max_displacement: largest shift per Cartesian component for an action of 1, Å.
    :param action_scale: ``"fixed"``, ``"force"`` or ``"proposal"`` (see above; ``"proposal"`` needs ``proposal``).
    :param force_cap: c_max of the force-adaptive scale, eV/Å.
    :param max_steps: step limit of an episode (paper: 1000 in training, 100 in tests).
    :param min_distance: closest approach allowed between atoms during an episode, Å.
    :param structure_weights: sampling weights of the structures (normalised), default uniform.
    :param relax_fmax: force threshold of the pre-relaxation of the dataset, eV/Å.
    :param input_min_distance: input structures (and ``reset`` starts given as ``options["atoms"]``) with atoms
        closer than this are rejected, Å.
    :param cache_dir: minima cache folder (``None`` default location, ``False`` no cache).
    :param saddles: dataset structures that relax to a saddle point: ``"keep"``, ``"escape"`` (relax into a
        true minimum nearby) or ``"drop"``.
    :param history: past steps the observation carries (0: the paper's observation).
    :param proposal: ``"none"``, ``"lbfgs"`` (a classical step from the history in the observation) or ``"curvature"``
        (the learned Hessian's quasi-Newton step, :mod:`sb3_crystal.curvature`; the proposal's cap is then 0.3 Å).
    :param action_mode: ``"absolute"`` or ``"residual"`` (the action corrects the proposal; needs ``proposal``).
    :param trust_region: reject moves that raise the energy or the largest force too much and retry them
        shorter (:class:`~sb3_crystal.envs.safeguard.TrustRegion`): ``True``, its settings as a dict, or ``None``.
    :param generator: a source of fresh start structures whose minimum nobody knows
        (:class:`~sb3_crystal.structures.generators.StructureGenerator` or its ``"generate:..."`` spec): a reset draws
        one with the environment's generator and starts from it as drawn (``structure_index`` −1).
    :param generator_fraction: fraction of resets that draw from ``generator``; the others distort a dataset minimum.
    :param cell: relax the cell too, through ASE's ``FrechetCellFilter`` (:mod:`sb3_crystal.envs.cell`): the
        observation adds ``cell_forces`` (and ``cell_proposal``), the action 6 strain numbers after the atoms' 3·n_max,
        the history holds the filter's generalised coordinates, and ε bounds the largest row of the filter's
        generalised forces (atoms and cell), as for ASE's optimizers on that filter. Needs a calculator with stress.
        With ``proposal="curvature"`` the proposal is the learned Hessian's joint step of atoms and cell
        (:func:`sb3_crystal.curvature.cell_curvature_step`; at a zero residual action this is
        :class:`~sb3_crystal.relax.LearnedCurvature` through the filter). Refused tries of the trust region enter
        the history, followed by the way back, as at fixed cell.
    :param max_strain: logarithmic strain of the cell per unit strain action (with ``cell``).
    :param render_mode: ``"rgb_array"`` makes :meth:`render` return a picture of the structure.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}  # noqa: RUF012 - gymnasium convention

    def __init__(
        self,
        structures: StructureSpec = "AlFe-B2",
        calculator: CalculatorSpec = "lammps",
        n_max: int | None = None,
        beta: float = 0.5,
        epsilon: float = 0.01,
        reward: str = "force",
        reward_weights: Sequence[float] = (1.0, 0.0, 0.5),
        max_displacement: float = 0.5,
        action_scale: str = "fixed",
        force_cap: float = 1.0,
        max_steps: int = 1000,
        min_distance: float = 1.5,
        structure_weights: Sequence[float] | None = None,
        relax_fmax: float = 1e-3,
        input_min_distance: float = 0.5,
        cache_dir: str | os.PathLike | bool | None = None,
        saddles: str = "keep",
        history: int = 0,
        proposal: str = "none",
        action_mode: str = "absolute",
        trust_region: bool | dict[str, Any] | None = None,
        generator: str | StructureGenerator | None = None,
        generator_fraction: float = 1.0,
        cell: bool = False,
        max_strain: float = 0.01,
        render_mode: str | None = None,
    ) -> None:
        super().__init__()
        self.render_mode = render_mode
        self._init_kwargs = {key: value for key, value in locals().items() if key not in {"self", "__class__", "render_mode"}}
        self.moves = MoveRule(max_displacement, action_scale, force_cap, min_distance, action_mode, max_strain)
        if action_scale == "proposal" and proposal == "none":
            raise ValueError("action_scale='proposal' scales corrections of a classical proposal: set proposal")
        if action_mode == "residual" and proposal == "none":
            raise ValueError("action_mode='residual' corrects a classical proposal: set proposal='lbfgs' or 'curvature'")
        ObservationLayout(n_max=1, history=history, proposal=proposal, cell=cell)  # validates before the dataset
        #: the rule that rejects uphill moves (``None``: every move is taken).
        self.trust_region = TrustRegion.from_config(trust_region)
        #: the source of fresh generated starts (``None``: dataset minima only).
        self.generator = parse_generator_spec(generator) if isinstance(generator, str) else generator
        if self.generator is not None and not isinstance(self.generator, StructureGenerator):
            raise TypeError(f"generator must be a 'generate:...' spec or a StructureGenerator, not {type(generator).__name__}")
        if not (isinstance(generator_fraction, (int, float)) and 0 <= generator_fraction <= 1):
            raise ValueError(f"generator_fraction must be in [0, 1], got {generator_fraction!r}")
        self.generator_fraction = float(generator_fraction)
        if not (isinstance(max_steps, int) and max_steps >= 1):
            raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
        self.set_epsilon(epsilon)
        self.set_beta(beta)
        self.set_reward(reward, reward_weights)
        self.max_steps = max_steps
        if not (
            isinstance(input_min_distance, (int, float)) and math.isfinite(input_min_distance) and input_min_distance >= 0
        ):
            raise ValueError(f"input_min_distance must be a finite number ≥ 0 Å, got {input_min_distance!r}")
        #: input structures (and ``reset`` starts) with atoms closer than this are rejected, Å.
        self.input_min_distance = float(input_min_distance)

        self.calculator: BaseCalculator = make_calculator(calculator)
        self.dataset = StructureDataset(
            structures,
            self.calculator,
            relax_fmax=relax_fmax,
            min_distance=input_min_distance,
            cache_dir=cache_dir,
            saddles=saddles,
        )
        largest = max(self.dataset.max_atoms, self.generator.max_atoms if self.generator is not None else 0)
        self.n_max = largest if n_max is None else int(n_max)
        if self.generator is not None and self.generator.max_atoms > self.n_max:
            raise ValueError(
                f"generator {self.generator.spec} draws up to {self.generator.max_atoms} atoms, more than n_max={self.n_max}"
            )
        too_big = [i for i, atoms in enumerate(self.dataset) if len(atoms) > self.n_max]
        if too_big:
            i = too_big[0]
            raise ValueError(
                f"Structure {self.dataset.reports[i].source} has {len(self.dataset[i])} atoms, more than n_max={self.n_max}"
            )
        nearest = self.dataset.nearest_neighbour_distances()
        if self.min_distance >= nearest.min():
            i = int(nearest.argmin())
            raise ValueError(
                f"min_distance={self.min_distance} Å is not below the nearest-neighbour distance {nearest[i]:.3f} Å "
                f"of relaxed structure {self.dataset.reports[i].source}"
            )
        self.structure_weights = self._normalise_weights(structure_weights)

        #: what the observation holds (shared with the optimizers and agent files).
        self.layout = ObservationLayout(n_max=self.n_max, history=history, proposal=proposal, cell=cell)
        #: the cell filter's coordinates of the episode (``None`` at fixed cell).
        self._path: FilteredPath | None = None
        self.observation_space: spaces.Dict = self.layout.observation_space()
        self.action_space = self.layout.action_space()
        self._history = self.layout.new_history()
        self._proposal: np.ndarray | None = None

        self._atoms: Atoms | None = None
        self._forces = np.zeros((0, 3))
        self._generalised = np.zeros((0, 3))
        self._cell = np.zeros((3, 3))
        self._energy = math.nan
        self._fmax = math.nan
        self._structure_index = -1
        self._episode_step = 0
        self._force_calls = 0
        self._rejected = 0

    # -- settings that curricula change between episodes ------------------------------------------------------
    def set_epsilon(self, epsilon: float) -> None:
        """Set the force threshold ε (eV/Å, > 0)."""
        self._check_positive("epsilon", epsilon)
        self.epsilon = float(epsilon)

    def set_beta(self, beta: float) -> None:
        """Set the distortion parameter β (Å, ≥ 0), used from the next reset."""
        if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta (distortion in Å) must be a finite number ≥ 0, got {beta!r}")
        self.beta = float(beta)

    def set_reward(self, reward: str, weights: Sequence[float] | None = None) -> None:
        """Set the reward function and, optionally, the hybrid weights (w_force, w_step, w_log_force)."""
        current = getattr(self, "reward_weights", (1.0, 0.0, 0.5))
        self.reward, self.reward_weights = check_reward(reward, current if weights is None else weights)

    def get_init_kwargs(self) -> dict[str, Any]:
        """The constructor's arguments, so an evaluation environment can be built like this one."""
        return dict(self._init_kwargs)

    def get_settings(self) -> dict[str, Any]:
        """The settings a curriculum may change, as plain data."""
        return {"epsilon": self.epsilon, "beta": self.beta, "reward": self.reward, "reward_weights": list(self.reward_weights)}

    # -- gymnasium API ------------------------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Start an episode from a distorted minimum.

        :param seed: seeds the environment's generator (structure choice and distortion).
        :param options: ``{"structure_index": i}`` to pick a dataset structure; ``{"atoms": Atoms}`` to start
            from the given structure as it is (no distortion), e.g. to relax an unseen structure; it is checked as
            the constructor checks its structures (a clear error before any force call).
        """
        super().reset(seed=seed)
        options = options or {}
        if "atoms" in options:
            start = self._validated_start(options["atoms"])
            self._structure_index = -1
        elif self._draws_generated(options):
            assert self.generator is not None
            start = self._validated_start(self.generator.sample(self.np_random))
            self._structure_index = -1
        else:
            index = options.get("structure_index")
            if index is None:
                index = int(self.np_random.choice(len(self.dataset), p=self.structure_weights))
            elif not 0 <= int(index) < len(self.dataset):
                raise IndexError(f"structure_index {index} out of range for a dataset of {len(self.dataset)} structures")
            self._structure_index = int(index)
            start = distort(self.dataset[self._structure_index], self.beta, self.np_random, self.min_distance)
        self._atoms = start
        self._cell = np.array(start.cell)
        self._episode_step = 0
        self._force_calls = 0
        self._rejected = 0
        if self.layout.cell:
            self._start_cell_episode()
            return self._observation(), self._info(max_shift=0.0, fraction=1.0)
        self._evaluate()
        self._history.reset(self._atoms.positions, self._forces, self._energy)
        return self._observation(), self._info(max_shift=0.0, fraction=1.0)

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._atoms is None:
            raise RuntimeError("Call reset() before step()")
        previous_fmax, calls_before = self._fmax, self._force_calls
        if self._path is not None:
            shifts, fraction = self._cell_move(action)
        else:
            shifts, fraction = self.moves.move(
                self._atoms.positions, self._cell, self._forces, action, self.n_max, self._proposal
            )
            shifts, self._rejected = self._move(shifts)
            self._history.record(self._atoms.positions, self._forces, self._energy)
        self._episode_step += 1
        terminated = bool(self._fmax <= self.epsilon)
        step_calls = self._force_calls - calls_before
        reward = relaxation_reward(self.reward, self._fmax, terminated, self.reward_weights, previous_fmax, step_calls)
        truncated = bool(not terminated and self._episode_step >= self.max_steps)
        max_shift = largest_norm(shifts)
        return self._observation(), float(reward), terminated, truncated, self._info(max_shift, fraction)

    # -- the cell too (``cell=True``) ------------------------------------------------------------------------------
    def _start_cell_episode(self) -> None:
        from ase.filters import FrechetCellFilter

        assert self._atoms is not None
        self._atoms.calc = self.calculator
        self._path = FilteredPath(
            FrechetCellFilter(self._atoms), self.layout.proposal_memory, self.layout.proposal_max_step, self._history
        )
        self._evaluate_cell()
        x, f, _ = self._path.point()
        self._history.reset(x, f, self._energy)

    def _evaluate_cell(self) -> tuple[float, np.ndarray]:
        """Evaluate the current geometry through the filter: one force call; :return: filter energy and generalised
        forces (the Cartesian forces are kept for the observation)."""
        assert self._atoms is not None and self._path is not None
        _, forces, energy = self._path.point()
        cartesian = np.asarray(self._atoms.get_forces(), dtype=np.float64)
        if not (np.all(np.isfinite(forces)) and math.isfinite(energy)):
            raise RuntimeError(
                f"Calculator returned non-finite energy, forces or stress for {self._atoms.get_chemical_formula()}"
            )
        self._energy, self._forces, self._generalised = float(energy), cartesian, forces
        self._cell = np.array(self._atoms.cell)
        self._fmax = max_force(forces)
        self._force_calls += 1
        return self._energy, forces

    def _cell_move(self, action: np.ndarray) -> tuple[np.ndarray, float]:
        """Move atoms and cell by a cell action through the filter (and the trust region), evaluate, record the
        history; :return: the atoms' Cartesian shifts (before the cell's strain) and the contact rule's fraction."""
        assert self._atoms is not None and self._path is not None
        path, n = self._path, len(self._atoms)
        proposal = self._proposal
        atom_base, cell_base = (None, None) if proposal is None else (proposal[:n], proposal[n:])
        shifts, fraction = self.moves.move(self._atoms.positions, self._cell, self._forces, action, self.n_max, atom_base)
        move = np.vstack([shifts, self.moves.cell_step(action, self.n_max, path.cell_factor, cell_base)])
        base = path.save()
        start = (self._energy, self._forces, self._generalised, self._fmax, self._cell)
        tried: list[np.ndarray] = []

        def evaluate(trial: np.ndarray) -> tuple[float, np.ndarray]:
            path.move(base, trial)
            if not trial.any():  # back where the step began: known already, no force call
                self._energy, self._forces, self._generalised, self._fmax, self._cell = start
                return self._energy, self._generalised
            tried.append(np.asarray(path.filter.get_positions(), dtype=np.float64).reshape(-1, 3).copy())
            return self._evaluate_cell()

        if self.trust_region is None:
            evaluate(move)
            self._rejected = 0
        else:
            outcome = self.trust_region.step(move, self._energy, self._generalised, evaluate, n_atoms=n)
            move, self._rejected = outcome.shifts, outcome.rejected
            path.record_refused(tried, outcome.rejected_points, base)  # as the optimizer does
        x, f, _ = path.point()
        self._history.record(x, f, self._energy)
        return move[:n], fraction

    def _move(self, shifts: np.ndarray) -> tuple[np.ndarray, int]:
        """Move the atoms by ``shifts`` (through the trust region, if any) and evaluate; :return: the shifts made
        and the number of rejected tries."""
        assert self._atoms is not None
        if self.trust_region is None:
            self._atoms.positions = self._atoms.positions + shifts
            self._evaluate()
            return shifts, 0
        base = self._atoms.positions.copy()
        start = (self._energy, self._forces, self._fmax)

        def evaluate(trial: np.ndarray) -> tuple[float, np.ndarray]:
            assert self._atoms is not None
            self._atoms.positions = base + trial
            if not trial.any():  # back where the step began: known already, no force call
                self._energy, self._forces, self._fmax = start
            else:
                self._evaluate()
            return self._energy, self._forces

        outcome = self.trust_region.step(shifts, self._energy, self._forces, evaluate)
        TrustRegion.record_rejected(self._history, outcome, base, start[0], start[1])
        return outcome.shifts, outcome.rejected

    def render(self) -> np.ndarray | None:
        """With ``render_mode="rgb_array"``: an (H, W, 3) uint8 picture of the cell and its atoms."""
        if self.render_mode != "rgb_array" or self._atoms is None:
            return None
        import matplotlib  # plotting only when asked

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from ase.visualize.plot import plot_atoms

        figure, axes = plt.subplots(figsize=(4, 4), dpi=80)
        plot_atoms(self._atoms, axes, rotation="10x,20y,0z", radii=0.5)
        axes.set_title(f"step {self._episode_step}, fmax {self._fmax:.3g} eV/Å")
        axes.set_axis_off()
        figure.canvas.draw()
        image = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
        plt.close(figure)
        return image

    def close(self) -> None:
        closer = getattr(self.calculator, "close", None)
        if callable(closer):
            closer()

    # -- helpers ------------------------------------------------------------------------------------------------
    @property
    def max_displacement(self) -> float:
        """Shift per Cartesian component for an action of 1, Å (see :class:`~sb3_crystal.envs.moves.MoveRule`)."""
        return self.moves.max_displacement

    @property
    def action_scale(self) -> str:
        """``"fixed"`` or ``"force"``."""
        return self.moves.action_scale

    @property
    def force_cap(self) -> float:
        """c_max of the force-adaptive action scale, eV/Å."""
        return self.moves.force_cap

    @property
    def min_distance(self) -> float:
        """Closest approach a move may create, Å."""
        return self.moves.min_distance

    @property
    def atoms(self) -> Atoms:
        """A copy of the current structure (no calculator attached)."""
        if self._atoms is None:
            raise RuntimeError("Call reset() first")
        return self._atoms.copy()

    @property
    def forces(self) -> np.ndarray:
        """Forces of the current structure (float64, eV/Å)."""
        return self._forces.copy()

    def _evaluate(self) -> None:
        assert self._atoms is not None
        atoms = self._atoms
        compute = getattr(self.calculator, "compute", None)
        if callable(compute):
            energy, forces = compute(atoms.numbers, self._cell, atoms.positions)
        else:
            atoms.calc = self.calculator
            energy, forces = atoms.get_potential_energy(), atoms.get_forces()
            atoms.calc = None
        forces = np.asarray(forces, dtype=np.float64)
        if not (np.all(np.isfinite(forces)) and math.isfinite(energy)):
            raise RuntimeError(f"Calculator returned non-finite energy or forces for {atoms.get_chemical_formula()}")
        self._energy, self._forces = float(energy), forces
        self._fmax = max_force(forces)
        self._force_calls += 1

    @property
    def proposal(self) -> np.ndarray | None:
        """The classical proposal at the current geometry (float64, Å), ``None`` without one."""
        return None if self._proposal is None else self._proposal.copy()

    def _observation(self) -> dict[str, np.ndarray]:
        assert self._atoms is not None
        frame = None if self._path is None else self._path.frame()
        self._proposal = self.layout.proposal_step(self._history, self._atoms.numbers, self._cell, frame)
        structure = (self._atoms.positions, self._forces) if self._path is not None else None
        return self.layout.build(self._atoms.numbers, self._cell, self._history, proposal=self._proposal, structure=structure)

    def _info(self, max_shift: float, fraction: float) -> dict[str, Any]:
        return {
            "fmax": self._fmax,
            "energy": self._energy,
            "force_calls": self._force_calls,
            "is_success": bool(self._fmax <= self.epsilon),
            "max_shift": max_shift,
            "action_fraction": fraction,
            "rejected": self._rejected,
            "n_atoms": len(self._atoms) if self._atoms is not None else 0,
            "structure_index": self._structure_index,
            "episode_step": self._episode_step,
        }

    def _draws_generated(self, options: dict[str, Any]) -> bool:
        """Whether this reset starts from a generated structure (never when a dataset index is asked for)."""
        if self.generator is None or "structure_index" in options:
            return False
        return self.generator_fraction >= 1 or bool(self.np_random.random() < self.generator_fraction)

    def _validated_start(self, atoms: Atoms) -> Atoms:
        """``options["atoms"]`` checked as the constructor checks its structures
        (:func:`~sb3_crystal.structures.validation.check_structure`); :return: a copy without calculator."""
        where = "options['atoms']"
        check_structure(atoms, where=where, min_distance=self.input_min_distance, calculator=self.calculator)
        if len(atoms) > self.n_max:
            raise ValueError(
                f"{where}: structure {atoms.get_chemical_formula()} has {len(atoms)} atoms, more than n_max={self.n_max}"
            )
        return Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=True)

    def _normalise_weights(self, weights: Sequence[float] | None) -> np.ndarray | None:
        if weights is None:
            return None
        values = np.asarray(weights, dtype=np.float64)
        if values.shape != (len(self.dataset),) or not np.all(np.isfinite(values)) or (values < 0).any() or values.sum() <= 0:
            raise ValueError(
                f"structure_weights must be {len(self.dataset)} non-negative finite numbers "
                f"with a positive sum, got {weights!r}"
            )
        return values / values.sum()

    @staticmethod
    def _check_positive(name: str, value: float) -> None:
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
