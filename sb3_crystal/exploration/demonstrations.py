"""Demonstrations for actor pretraining: the move that takes a distorted start back to its reference minimum.

Every start of :class:`~sb3_crystal.envs.CrystalRelaxEnv` is a relaxed reference structure plus a random
distortion, so the move that undoes the distortion is known during training. Regressing the actor onto it (behaviour
cloning of an oracle, as in RL from demonstrations) gives TD3 a policy that already steps towards the minimum; TD3 then
trains its critics on that policy's transitions and may refine it with the RL reward. On a single structure this
removes the seed lottery of TD3 from scratch (see docs/results.md, *B2 specialist*). The oracle needs the reference,
so it serves training structures only; the trained actor is used on unseen ones like any other.

Why the samples span many distortion sizes: after its first move the agent sits close to the minimum, and its next
move must be accurate there too, so the distortion β is drawn log-uniformly between ``min_beta`` and the
environment's β.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch as th
from ase import Atoms
from ase.optimize import BFGS
from stable_baselines3 import SAC
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from sb3_crystal.envs import CrystalRelaxEnv

#: Per-atom action norm of the regression targets at most this: a radially squashed actor (norm < 1) can reach them.
MAX_TARGET_NORM = 0.98

#: First seed of reference-move samples drawn for training (``REFERENCE_MOVES_SEED + training seed``, …): the
#: training scripts and :class:`~sb3_crystal.algorithms.CrystalTD3BC` keep them apart from evaluation seeds.
REFERENCE_MOVES_SEED = 1_000_000


def reference_move(start: Atoms, reference: Atoms) -> np.ndarray:
    """Shifts (n_atoms, 3), Å, that take ``start`` onto ``reference`` up to a rigid translation (minimum image).

    The mean shift is removed: a translation of the whole cell changes no force, and translation-invariant
    policies cannot predict it.

    :raises ValueError: different atom counts, species or cells.
    """
    if len(start) != len(reference) or not np.array_equal(start.numbers, reference.numbers):
        raise ValueError(
            f"start {start.get_chemical_formula()} and reference {reference.get_chemical_formula()} "
            "must hold the same atoms in the same order"
        )
    cell = np.array(start.cell, dtype=np.float64)
    if not np.allclose(cell, np.array(reference.cell), atol=1e-8):
        raise ValueError("start and reference must share their cell")
    delta = np.asarray(reference.positions, dtype=np.float64) - np.asarray(start.positions, dtype=np.float64)
    fractional = np.linalg.solve(cell.T, delta.T).T
    delta = (fractional - np.round(fractional)) @ cell
    return delta - delta.mean(axis=0)


@dataclass
class ReferenceMoves:
    """Observations of distorted starts and the actions (flat, padded, in [−1, 1]) that undo their distortion.

    :param observations: the environment's observation dict, each entry stacked to (n_samples, ...).
    :param actions: shape (n_samples, 3·n_max).
    :param betas: distortion β of each sample, Å.
    :param structure_indices: the dataset structure each sample was drawn from.
    """

    observations: dict[str, np.ndarray]
    actions: np.ndarray
    betas: np.ndarray
    structure_indices: np.ndarray

    def __len__(self) -> int:
        return len(self.actions)

    @staticmethod
    def concatenate(parts: Sequence[ReferenceMoves]) -> ReferenceMoves:
        """One set holding the samples of ``parts`` in order (same environment layout)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        keys = parts[0].observations.keys()
        return ReferenceMoves(
            {key: np.concatenate([part.observations[key] for part in parts]) for key in keys},
            np.concatenate([part.actions for part in parts]),
            np.concatenate([part.betas for part in parts]),
            np.concatenate([part.structure_indices for part in parts]),
        )


def reference_moves(env: CrystalRelaxEnv, n_samples: int, seed: int = 0, min_beta: float = 0.005) -> ReferenceMoves:
    """Distorted starts of ``env``'s structures with the actions that move them back to their reference minima.

    Each sample draws a structure (``env``'s structure weights), β log-uniformly in [``min_beta``, ``env.beta``],
    resets ``env`` with seed ``seed + i`` (its contact rule applies) and expresses :func:`reference_move` as an
    action through ``env``'s move rule, clipped to [−1, 1] per component and to :data:`MAX_TARGET_NORM` per atom.
    ``env``'s β is restored afterwards.

    :param env: the training environment.
    :param n_samples: number of starts.
    :param seed: seeds β draws and resets (``seed``, ``seed + 1``, ...).
    :param min_beta: smallest distortion, Å.
    :raises ValueError: ``n_samples`` < 1 or ``min_beta`` not in (0, env.beta].
    """
    if not (isinstance(n_samples, (int, np.integer)) and n_samples >= 1):
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    _, betas, structures = _draw_starts(env, n_samples, seed, min_beta)
    beta = env.beta
    observations: list[dict[str, np.ndarray]] = [{}] * n_samples
    actions = np.zeros((n_samples, 3 * env.n_max), np.float32)
    try:
        # structure by structure: a calculator that caches its set-up per cell (LAMMPS) then sets up once per cell
        for i in np.argsort(structures, kind="stable"):
            env.set_beta(float(betas[i]))
            obs, _ = env.reset(seed=seed + int(i), options={"structure_index": int(structures[i])})
            actions[i] = _target_action(env, reference_move(env.atoms, env.dataset[int(structures[i])]))
            observations[i] = obs
    finally:
        env.set_beta(beta)
    return ReferenceMoves(_stack(observations), actions, betas, structures)


def _draw_starts(
    env: CrystalRelaxEnv, n_starts: int, seed: int, min_beta: float
) -> tuple[np.random.Generator, np.ndarray, np.ndarray]:
    """The generator, β (log-uniform in [``min_beta``, ``env.beta``]) and structure (``env``'s weights) of each start.

    :raises ValueError: ``min_beta`` not in (0, env.beta].
    """
    if not (isinstance(min_beta, (int, float)) and 0 < min_beta <= env.beta):
        raise ValueError(f"min_beta must be in (0, env.beta = {env.beta}] Å, got {min_beta!r}")
    rng = np.random.default_rng(seed)
    betas = np.exp(rng.uniform(math.log(min_beta), math.log(env.beta), size=n_starts))
    structures = rng.choice(len(env.dataset), size=n_starts, p=env.structure_weights)
    return rng, betas, structures


def _stack(observations: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.stack([obs[key] for obs in observations]) for key in observations[0]}


def check_action_size(model: OffPolicyAlgorithm, samples: ReferenceMoves) -> None:
    """:raises ValueError: ``samples`` hold actions of another size than ``model``'s action space."""
    n_actions = int(np.prod(model.action_space.shape))  # type: ignore[arg-type]
    if samples.actions.shape[1] != n_actions:
        raise ValueError(
            f"samples hold actions of size {samples.actions.shape[1]}, the model's action space has {n_actions} "
            "(were they drawn from an environment with another n_max?)"
        )


def _target_action(env: CrystalRelaxEnv, move: np.ndarray) -> np.ndarray:
    """``move`` (Å) as a flat action of ``env`` at its current forces, clipped to what a squashed actor reaches."""
    action = env.moves.action_for(move, env.forces, env.n_max, env.proposal).reshape(env.n_max, 3)
    norms = np.linalg.norm(action, axis=1, keepdims=True)
    return (action * np.minimum(1.0, MAX_TARGET_NORM / np.maximum(norms, 1e-12))).ravel()


def relaxation_moves(
    env: CrystalRelaxEnv,
    n_samples: int,
    seed: int = 0,
    min_beta: float = 0.005,
    points_per_path: int = 8,
    fmax: float = 1e-3,
    max_steps: int = 500,
) -> ReferenceMoves:
    """Geometries along BFGS relaxations of distorted starts, each with the move to where that relaxation ends.

    Unlike :func:`reference_moves`, the target is the local minimum the start actually relaxes to, which differs
    from the reference when a large distortion crosses into another basin, and the samples cover the geometries
    an optimizer passes through on its way down, close to the minimum included. Starts are drawn as in
    :func:`reference_moves` (seeds ``seed + path``); each is relaxed with ASE's BFGS on ``env``'s calculator to
    ``fmax``; the start and ``points_per_path − 1`` other points of the path chosen at random become samples.
    Paths that do not reach ``fmax`` within ``max_steps`` are dropped.

    :param env: the training environment (its calculator must be an ASE calculator).
    :param n_samples: number of samples wanted (paths × ``points_per_path``, fewer if paths are short).
    :param seed: seeds β, structure and point draws and the resets.
    :param min_beta: smallest distortion, Å.
    :param points_per_path: samples taken from one relaxation.
    :param fmax: force threshold that defines the end of a relaxation, eV/Å.
    :param max_steps: BFGS steps at most per relaxation.
    :raises ValueError: bad ``n_samples``, ``min_beta`` or ``points_per_path``.
    """
    if not (isinstance(n_samples, (int, np.integer)) and n_samples >= 1):
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    if not (isinstance(points_per_path, (int, np.integer)) and points_per_path >= 1):
        raise ValueError(f"points_per_path must be a positive integer, got {points_per_path!r}")
    rng, betas, structures = _draw_starts(env, -(-n_samples // points_per_path), seed, min_beta)
    beta = env.beta
    observations: list[dict[str, np.ndarray]] = []
    actions: list[np.ndarray] = []
    kept_betas: list[float] = []
    kept_structures: list[int] = []
    try:
        for i in np.argsort(structures, kind="stable"):
            env.set_beta(float(betas[i]))
            env.reset(seed=seed + int(i), options={"structure_index": int(structures[i])})
            atoms = env.atoms
            atoms.calc = env.calculator
            path = [atoms.positions.copy()]
            optimizer = BFGS(atoms, logfile=None)
            optimizer.attach(lambda atoms=atoms, path=path: path.append(atoms.positions.copy()))
            if not optimizer.run(fmax=fmax, steps=max_steps):
                continue
            end = atoms.copy()
            chosen = [0, *rng.permutation(np.arange(1, len(path)))[: points_per_path - 1]]
            for k in chosen:
                point = end.copy()
                point.positions = path[k]
                observations.append(env.reset(options={"atoms": point})[0])
                actions.append(_target_action(env, reference_move(point, end)))
                kept_betas.append(float(betas[i]))
                kept_structures.append(int(structures[i]))
    finally:
        env.set_beta(beta)
    if not actions:
        raise RuntimeError(f"no relaxation reached fmax {fmax} eV/Å within {max_steps} steps")
    return ReferenceMoves(_stack(observations), np.stack(actions), np.array(kept_betas), np.array(kept_structures))


def action_regression_loss(predicted: th.Tensor, targets: th.Tensor) -> th.Tensor:
    """Mean over samples and atom slots of the squared distance between predicted and target per-atom actions.

    :param predicted: flat actions, shape (batch, 3·n_max).
    :param targets: the same shape.
    """
    error = (predicted - targets).reshape(len(targets), -1, 3)
    return (error**2).sum(dim=-1).mean()


def _deterministic_actions(model: OffPolicyAlgorithm, obs: dict[str, th.Tensor]) -> th.Tensor:
    if isinstance(model, SAC):
        return model.actor(obs, deterministic=True)
    return model.actor(obs)


def pretrain_actor(
    model: OffPolicyAlgorithm,
    samples: ReferenceMoves,
    epochs: int = 60,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    seed: int = 0,
    verbose: int = 1,
) -> list[float]:
    """Regress ``model``'s actor (its deterministic action) onto ``samples.actions``; returns the loss per epoch.

    Mean squared error of the per-atom action vectors, Adam with a cosine-decayed learning rate. For TD3/DDPG the
    target actor is set to the result, so TD3's first updates start from it. The critics are untouched.

    :param model: a TD3, DDPG or SAC model whose observation space matches the samples.
    :param samples: from :func:`reference_moves`.
    :param epochs: passes over the samples.
    :param batch_size: samples per gradient step.
    :param learning_rate: initial Adam learning rate.
    :param seed: seeds the batch order.
    :param verbose: 1 prints the loss after every epoch (to stderr).
    :raises ValueError: bad epochs, batch size or learning rate, or samples of another action size.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not (isinstance(value, (int, np.integer)) and value >= 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not (isinstance(learning_rate, (int, float)) and math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a finite number > 0, got {learning_rate!r}")
    check_action_size(model, samples)
    device = model.device
    observations = {key: th.as_tensor(value, device=device) for key, value in samples.observations.items()}
    targets = th.as_tensor(samples.actions, device=device)
    actor = model.actor
    optimizer = th.optim.Adam(actor.parameters(), lr=learning_rate)
    batches_per_epoch = max(1, len(samples) // batch_size)
    schedule = th.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * batches_per_epoch)
    generator = th.Generator().manual_seed(seed)
    actor.set_training_mode(True)
    losses: list[float] = []
    for epoch in range(epochs):
        order = th.randperm(len(samples), generator=generator).to(device)
        total = 0.0
        for batch in range(batches_per_epoch):
            index = order[batch * batch_size : (batch + 1) * batch_size]
            predicted = _deterministic_actions(model, {key: value[index] for key, value in observations.items()})
            loss = action_regression_loss(predicted, targets[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach())
        losses.append(total / batches_per_epoch)
        if verbose:
            print(f"[pretrain] epoch {epoch + 1}/{epochs}: loss {losses[-1]:.3g}", file=sys.stderr, flush=True)
    actor.set_training_mode(False)
    actor_target = getattr(model, "actor_target", None)
    if actor_target is not None:
        actor_target.load_state_dict(actor.state_dict())
    return losses
