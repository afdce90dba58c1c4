"""A quasi-Newton step whose curvature comes from a learned Hessian, refined by the relaxation's own secant pairs.

:func:`curvature_step` computes ``B⁻¹ F`` where ``B`` starts as the model Hessian at the current geometry, made
positive definite (each eigenvalue λ replaced by max(|λ|, ``min_curvature``): a negative curvature is walked down,
not up, as in the exact-Hessian Newton baseline) on the subspace orthogonal to the three rigid translations, and is
then updated by BFGS with the secant pairs of the last steps (oldest first; a pair enters only with positive
curvature). The model plays the part a preconditioner plays in ASE's ``PreconLBFGS``: the initial Hessian that the
updates correct. The whole step is scaled down so that no atom moves more than ``max_step``.

Everything is float64, dense and rotation, translation and permutation equivariant when the model is (the pair
model is, by construction): ``B`` and the pairs rotate together, and the translation projection does not depend on
the frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Protocol

import numpy as np

__all__ = ["HessianModel", "curvature_step", "regularised_hessian", "secant_pairs", "wants_secant_pairs"]

#: A secant pair enters the BFGS update when s·y ≥ this × s·s (positive curvature with a margin), eV/Å².
MIN_PAIR_CURVATURE = 1e-3
#: Default floor on the regularised Hessian's eigenvalues, eV/Å².
MIN_CURVATURE = 0.5


class HessianModel(Protocol):
    """Anything that gives a (3N, 3N) Hessian of a periodic structure (the pair model does)."""

    def hessian(self, numbers: np.ndarray, cell: np.ndarray, positions: np.ndarray) -> np.ndarray: ...


@lru_cache(maxsize=16)
def _complement(n_atoms: int) -> np.ndarray:
    """Orthonormal basis (3N, 3N − 3) of the displacements with no rigid translation."""
    translations = np.zeros((3 * n_atoms, 3))
    for axis in range(3):
        translations[axis::3, axis] = 1.0 / math.sqrt(n_atoms)
    # The full QR of the translations: its last 3N − 3 columns span their orthogonal complement.
    q, _ = np.linalg.qr(translations, mode="complete")
    basis = q[:, 3:]
    basis.setflags(write=False)
    return basis


def regularised_hessian(hessian: np.ndarray, min_curvature: float = MIN_CURVATURE) -> tuple[np.ndarray, np.ndarray]:
    """A positive definite version of ``hessian`` on the translation-free subspace.

    :param hessian: (3N, 3N), eV/Å².
    :param min_curvature: eigenvalue floor, eV/Å² (> 0).
    :return: ``(basis, b)``: the orthonormal basis Q (3N, 3N − 3) of translation-free displacements and the
        (3N − 3)² matrix B = V max(|Λ|, floor) Vᵀ of Qᵀ H Q.
    """
    hessian = np.asarray(hessian, dtype=np.float64)
    if hessian.ndim != 2 or hessian.shape[0] != hessian.shape[1] or hessian.shape[0] % 3:
        raise ValueError(f"hessian must be a square (3N, 3N) matrix, got shape {hessian.shape}")
    if not np.all(np.isfinite(hessian)):
        raise ValueError("hessian holds NaN or infinite entries")
    if not (math.isfinite(min_curvature) and min_curvature > 0):
        raise ValueError(f"min_curvature must be a finite number > 0 eV/Å², got {min_curvature!r}")
    basis = _complement(hessian.shape[0] // 3)
    reduced = basis.T @ (0.5 * (hessian + hessian.T)) @ basis
    values, vectors = np.linalg.eigh(reduced)
    values = np.maximum(np.abs(values), min_curvature)
    return basis, (vectors * values) @ vectors.T


def curvature_step(
    numbers: np.ndarray,
    cell: np.ndarray,
    positions: np.ndarray,
    forces: np.ndarray,
    history_pairs: Sequence[tuple[np.ndarray, np.ndarray]] = (),
    model: HessianModel | None = None,
    max_step: float = 0.3,
    min_curvature: float = MIN_CURVATURE,
    hessian: np.ndarray | None = None,
) -> np.ndarray:
    """The quasi-Newton step ``B⁻¹ F`` from the current geometry (see the module docstring).

    :param numbers: atomic numbers (N,).
    :param cell: lattice vectors as rows (3, 3), Å.
    :param positions: Cartesian positions (N, 3), Å.
    :param forces: forces at ``positions`` (N, 3), eV/Å.
    :param history_pairs: secant pairs ``(s, y)`` of past steps, oldest first: ``s`` the step Δx and ``y`` the change
        of the gradient Δg = −ΔF over it, each (N, 3) or flat (3N,) (the convention of
        :func:`sb3_crystal.envs.observation.lbfgs_step`); empty for the model's Newton step alone.
    :param model: the Hessian model (``None``: the shipped Al–Fe pair model, :func:`~sb3_crystal.curvature.load_model`).
    :param max_step: longest atomic displacement, Å (> 0).
    :param min_curvature: eigenvalue floor of the initial Hessian, eV/Å².
    :param hessian: a (3N, 3N) Hessian to use instead of the model's (the exact one, for calibration).
    :return: the step, (N, 3) Å, float64; a descent direction (F·step > 0 unless F = 0).
    """
    forces = np.asarray(forces, dtype=np.float64)
    positions = np.asarray(positions, dtype=np.float64)
    n = len(np.asarray(numbers).ravel())
    if forces.shape != (n, 3) or positions.shape != (n, 3):
        raise ValueError(f"forces {forces.shape} and positions {positions.shape} must both be (n_atoms, 3) = ({n}, 3)")
    if not np.all(np.isfinite(forces)):
        raise ValueError("forces hold NaN or infinite entries")
    if not (isinstance(max_step, (int, float)) and math.isfinite(max_step) and max_step > 0):
        raise ValueError(f"max_step must be a finite number > 0 Å, got {max_step!r}")
    if hessian is None:
        if model is None:
            from sb3_crystal.curvature.model import load_model

            model = _shipped_model(load_model)
        hessian = model.hessian(numbers, cell, positions)
    hessian = np.asarray(hessian, dtype=np.float64)
    if hessian.shape != (3 * n, 3 * n):
        raise ValueError(f"hessian must be ({3 * n}, {3 * n}) for {n} atoms, got {hessian.shape}")
    basis, b = regularised_hessian(hessian, min_curvature)
    for k, (s, y) in enumerate(history_pairs):
        s = np.asarray(s, dtype=np.float64).ravel()
        y = np.asarray(y, dtype=np.float64).ravel()
        if s.shape != (3 * n,) or y.shape != (3 * n,):
            raise ValueError(f"history_pairs[{k}]: s {s.shape} and y {y.shape} must hold 3N = {3 * n} numbers each")
        if not (np.all(np.isfinite(s)) and np.all(np.isfinite(y))):
            raise ValueError(f"history_pairs[{k}] holds NaN or infinite entries")
        s, y = basis.T @ s, basis.T @ y
        sy, ss = float(s @ y), float(s @ s)
        if ss <= 1e-20 or sy < MIN_PAIR_CURVATURE * ss:
            continue
        bs = b @ s
        b = b - np.outer(bs, bs) / float(s @ bs) + np.outer(y, y) / sy
    gradient_free = basis.T @ forces.ravel()
    step = (basis @ np.linalg.solve(0.5 * (b + b.T), gradient_free)).reshape(n, 3)
    longest = float(np.linalg.norm(step, axis=1).max()) if n else 0.0
    if longest > max_step:
        step *= max_step / longest
    return step


def secant_pairs(steps: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The ``history_pairs`` of :func:`curvature_step` from a history's steps.

    :param steps: (shift, force change) of past steps, newest first, as
        :meth:`sb3_crystal.envs.observation.RelaxationHistory.steps` gives them.
    :return: (s, y) = (shift, −force change), oldest first.
    """
    return [(np.asarray(shift, dtype=np.float64), -np.asarray(change, dtype=np.float64)) for shift, change in steps][::-1]


def wants_secant_pairs(forces: np.ndarray, steps: Sequence[tuple[np.ndarray, np.ndarray]]) -> bool:
    """The adaptive rule: pass the secant pairs to :func:`curvature_step` only when the newest step made no progress.

    True when the newest step did not lower the largest atomic force, or when it went back to where the step before
    it started (a trust region refused that try, and the history recorded the try and the way back); False with no
    step yet. Otherwise the model's own Newton step is better than its BFGS update (the secant pairs of long steps
    disagree with the model at the new point); after a step without progress the pairs change the proposal, so a
    refused step is not proposed again.

    :param forces: forces at the current point (N, 3), eV/Å.
    :param steps: (shift, force change) of past steps, newest first (at least the newest two are read).
    """
    if not steps:
        return False
    forces = np.asarray(forces, dtype=np.float64)
    shift, change = (np.asarray(a, dtype=np.float64) for a in steps[0])
    now = float(np.linalg.norm(forces, axis=1).max())
    before = float(np.linalg.norm(forces - change, axis=1).max())
    if now >= before:
        return True
    if len(steps) > 1:
        previous = np.asarray(steps[1][0], dtype=np.float64)
        scale = max(float(np.abs(previous).max()), 1e-12)
        if np.allclose(shift, -previous, rtol=0.0, atol=1e-9 * scale):
            return True
    return False


_SHIPPED: dict[str, Any] = {}


def _shipped_model(loader: Any) -> HessianModel:
    if "model" not in _SHIPPED:
        _SHIPPED["model"] = loader()
    return _SHIPPED["model"]
