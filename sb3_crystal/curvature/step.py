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

__all__ = [
    "HessianModel",
    "StrainHessianModel",
    "cell_curvature_step",
    "curvature_step",
    "frechet_hessian",
    "regularised_hessian",
    "secant_pairs",
    "wants_secant_pairs",
]

#: A secant pair enters the BFGS update when s·y ≥ this × s·s (positive curvature with a margin), eV/Å².
MIN_PAIR_CURVATURE = 1e-3
#: Default floor on the regularised Hessian's eigenvalues, eV/Å².
MIN_CURVATURE = 0.5


class HessianModel(Protocol):
    """Anything that gives a (3N, 3N) Hessian of a periodic structure (the pair model does)."""

    def hessian(self, numbers: np.ndarray, cell: np.ndarray, positions: np.ndarray) -> np.ndarray: ...


class StrainHessianModel(Protocol):
    """Anything that gives a (3N + 9, 3N + 9) Hessian over atomic displacements and a homogeneous deformation (the
    pair model's :meth:`~sb3_crystal.curvature.PairCurvatureModel.strain_hessian`)."""

    def strain_hessian(self, numbers: np.ndarray, cell: np.ndarray, positions: np.ndarray) -> np.ndarray: ...


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


@lru_cache(maxsize=16)
def _complement_with_cell(n_atoms: int) -> np.ndarray:
    """Orthonormal basis (3N + 9, 3N + 6) of the filter displacements with no rigid translation of the atom rows."""
    basis = np.zeros((3 * n_atoms + 9, 3 * n_atoms + 6))
    basis[: 3 * n_atoms, : 3 * n_atoms - 3] = _complement(n_atoms)
    basis[3 * n_atoms :, 3 * n_atoms - 3 :] = np.eye(9)
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
    b = _bfgs_update(b, basis, history_pairs, 3 * n)
    gradient_free = basis.T @ forces.ravel()
    step = (basis @ np.linalg.solve(0.5 * (b + b.T), gradient_free)).reshape(n, 3)
    longest = float(np.linalg.norm(step, axis=1).max()) if n else 0.0
    if longest > max_step:
        step *= max_step / longest
    return step


def _frechet_derivatives(log_deformation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and second Fréchet derivatives of the matrix exponential at L = ``log_deformation`` (3, 3).

    :return: ``first`` (9, 3, 3), D exp_L[e_p] for the 9 unit matrices e_p (row-major), and ``second`` (9, 9, 3, 3),
        D² exp_L[e_p, e_q]. The second derivative is read off the exponential of the block-triangular matrix
        [[L, A, 0], [0, L, B], [0, 0, L]], whose corner block is the part of D² exp_L[A, B] with A before B.
    """
    from scipy.linalg import expm, expm_frechet

    units = np.eye(9).reshape(9, 3, 3)
    first = np.stack([expm_frechet(log_deformation, e, compute_expm=False) for e in units])
    ordered = np.zeros((9, 9, 3, 3))
    block = np.zeros((9, 9))
    for k in range(3):
        block[3 * k : 3 * k + 3, 3 * k : 3 * k + 3] = log_deformation
    for p in range(9):
        for q in range(9):
            block[0:3, 3:6] = units[p]
            block[3:6, 6:9] = units[q]
            ordered[p, q] = expm(block)[0:3, 6:9]
    return first, ordered + ordered.transpose(1, 0, 2, 3)


def frechet_hessian(
    strain_hessian: np.ndarray,
    deformation: np.ndarray,
    generalised_forces: np.ndarray,
    cell_factor: float,
    first_order: bool = True,
) -> np.ndarray:
    """A (u, ε) Hessian written in ``FrechetCellFilter``'s coordinates, (3N + 9, 3N + 9).

    The filter's coordinates are the positions in the undeformed cell, x̃_i = D⁻¹ r_i, and the cell rows
    X = c log D + const (D the deformation gradient from the filter's original cell, c its ``exp_cell_factor``;
    ASE adds a constant multiple of the identity, which commutes with everything and drops out); its
    generalised forces are −∂E/∂(x̃, X). A small change (δx̃, δX) moves the structure by u_i = D δx̃_i and
    ε = D exp_L[δX / c] D⁻¹ (L = X / c), so the Hessian is Jᵀ H J with that Jacobian J. The map is not linear, so
    ``first_order`` adds its second derivatives contracted with the gradient, which the generalised forces give
    exactly: the coupling −Σ_i f_i · D exp_L[δX / c] δx̃_i (Cartesian forces f_i) and the cell term
    −G : D² exp_L[δX / c, δX / c] (G = −∂E/∂D, recovered from the cell rows of the forces). Both vanish at a
    stress-free minimum.

    :param strain_hessian: the Hessian over (u, ε) of :meth:`~sb3_crystal.curvature.PairCurvatureModel.strain_hessian`.
    :param deformation: the filter's deformation gradient D (3, 3) (``FrechetCellFilter.deform_grad()``).
    :param generalised_forces: the filter's generalised forces (N + 3, 3): N atom rows, then the 3 cell rows.
    :param cell_factor: the filter's ``exp_cell_factor`` c.
    :param first_order: add the terms of the map's curvature (see above).
    """
    from scipy.linalg import logm

    f = np.asarray(generalised_forces, dtype=np.float64)
    n = len(f) - 3
    c = float(cell_factor)
    if not (math.isfinite(c) and c > 0):
        raise ValueError(f"cell_factor must be a finite number > 0, got {cell_factor!r}")
    deformation = np.asarray(deformation, dtype=np.float64)
    if deformation.shape != (3, 3) or not np.all(np.isfinite(deformation)) or np.linalg.det(deformation) <= 0:
        raise ValueError(f"deformation must be a finite (3, 3) matrix with a positive determinant, got {deformation}")
    log_deformation = np.real(logm(deformation))
    inverse = np.linalg.inv(deformation)
    first, second = _frechet_derivatives(log_deformation)
    jacobian = np.zeros((3 * n + 9, 3 * n + 9))
    jacobian[: 3 * n, : 3 * n] = np.kron(np.eye(n), deformation)
    jacobian[3 * n :, 3 * n :] = (first @ inverse).reshape(9, 9).T / c
    hessian = jacobian.T @ strain_hessian @ jacobian
    if first_order:
        cartesian = f[:n] @ inverse  # the filter's atom rows are f @ D
        # ∂²r_i,b / ∂x̃_i,a ∂X_p = D exp_L[e_p]_{b a} / c, times ∂E/∂r_i,b = −f_i,b
        coupling = -np.einsum("ib,pba->iap", cartesian, first).reshape(3 * n, 9) / c
        hessian[: 3 * n, 3 * n :] += coupling
        hessian[3 * n :, : 3 * n] += coupling.T
        # The cell rows are Σ_ab D exp_L[e_p]_ab G_ab / c: solve for G, then −G : D² exp_L[e_p, e_q] / c².
        g = np.linalg.solve(first.reshape(9, 9), c * f[n:].ravel())
        hessian[3 * n :, 3 * n :] -= np.einsum("pqk,k->pq", second.reshape(9, 9, 9), g) / c**2
    return 0.5 * (hessian + hessian.T)


def cell_curvature_step(
    numbers: np.ndarray,
    cell: np.ndarray,
    generalised_positions: np.ndarray,
    generalised_forces: np.ndarray,
    deformation: np.ndarray,
    cell_factor: float,
    history_pairs: Sequence[tuple[np.ndarray, np.ndarray]] = (),
    model: StrainHessianModel | None = None,
    max_step: float = 0.3,
    min_curvature: float = MIN_CURVATURE,
    hessian: np.ndarray | None = None,
    first_order: bool = True,
) -> np.ndarray:
    """The quasi-Newton step of atoms and cell together in ``FrechetCellFilter``'s coordinates.

    As :func:`curvature_step`, with the model's Hessian over atoms and a homogeneous deformation
    (:meth:`~sb3_crystal.curvature.PairCurvatureModel.strain_hessian`) written in the filter's coordinates
    (:func:`frechet_hessian`): restricted to the displacements without rigid translation of the atoms, made positive
    definite (eigenvalues λ → max(|λ|, ``min_curvature``)), BFGS-updated with ``history_pairs`` (filter
    coordinates and generalised forces), solved against the generalised forces, and scaled so that no atom moves
    more than ``max_step`` and the cell rows' step has no singular value above it (so no cell row moves more
    either; a bound on the rows themselves would not turn with the crystal).

    :param numbers: atomic numbers (N,).
    :param cell: lattice vectors as rows (3, 3), Å, of the current geometry.
    :param generalised_positions: the filter's coordinates (N + 3, 3).
    :param generalised_forces: the filter's generalised forces (N + 3, 3), eV/Å on the atom rows.
    :param deformation: the filter's deformation gradient D (3, 3) (``FrechetCellFilter.deform_grad()``).
    :param cell_factor: the filter's ``exp_cell_factor``.
    :param history_pairs: secant pairs ``(s, y)`` in the filter's coordinates, oldest first: ``s`` the step of the
        generalised positions, ``y`` = −(change of the generalised forces), (N + 3, 3) or flat.
    :param model: the Hessian model (``None``: the shipped Al–Fe cell model, :func:`~sb3_crystal.curvature.load_cell_model`).
    :param max_step: longest atomic shift (Å) and largest singular value of the cell rows' step, > 0.
    :param min_curvature: eigenvalue floor, in the filter's units.
    :param hessian: a (3N + 9, 3N + 9) Hessian over (u, ε) to use instead of the model's (the exact one, for checks).
    :param first_order: include the terms of the filter map's curvature (:func:`frechet_hessian`).
    :return: (N + 3, 3): the atoms' Cartesian shifts u_i = D δx̃_i (before the cell's deformation, the convention of
        :meth:`sb3_crystal.envs.cell.FilteredPath.move`), then the step of the filter's 3 cell rows.
    """
    x = np.asarray(generalised_positions, dtype=np.float64)
    f = np.asarray(generalised_forces, dtype=np.float64)
    n = len(np.asarray(numbers).ravel())
    if x.shape != (n + 3, 3) or f.shape != (n + 3, 3):
        raise ValueError(f"generalised positions {x.shape} and forces {f.shape} must both be (n_atoms + 3, 3) = ({n + 3}, 3)")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(f))):
        raise ValueError("generalised positions or forces hold NaN or infinite entries")
    if not (isinstance(max_step, (int, float)) and math.isfinite(max_step) and max_step > 0):
        raise ValueError(f"max_step must be a finite number > 0, got {max_step!r}")
    if not (math.isfinite(min_curvature) and min_curvature > 0):
        raise ValueError(f"min_curvature must be a finite number > 0, got {min_curvature!r}")
    deformation = np.asarray(deformation, dtype=np.float64)
    if hessian is None:
        if model is None:
            from sb3_crystal.curvature.model import load_cell_model

            model = _shipped_model(load_cell_model, "cell")
        positions = x[:n] @ deformation.T
        hessian = model.strain_hessian(numbers, cell, positions)
    hessian = np.asarray(hessian, dtype=np.float64)
    if hessian.shape != (3 * n + 9, 3 * n + 9):
        raise ValueError(f"hessian must be ({3 * n + 9}, {3 * n + 9}) for {n} atoms, got {hessian.shape}")
    if not np.all(np.isfinite(hessian)):
        raise ValueError("hessian holds NaN or infinite entries")
    filtered = frechet_hessian(hessian, deformation, f, cell_factor, first_order)
    basis = _complement_with_cell(n)
    values, vectors = np.linalg.eigh(basis.T @ filtered @ basis)
    values = np.maximum(np.abs(values), min_curvature)
    b = (vectors * values) @ vectors.T
    b = _bfgs_update(b, basis, history_pairs, 3 * n + 9)
    step = (basis @ np.linalg.solve(0.5 * (b + b.T), basis.T @ f.ravel())).reshape(n + 3, 3)
    step[:n] = step[:n] @ deformation.T
    # the cell rows' largest singular value: at least every row's length, and unchanged when X turns to R X Rᵀ
    longest = max(float(np.linalg.norm(step[:n], axis=1).max()), float(np.linalg.norm(step[n:], 2)))
    if longest > max_step:
        step *= max_step / longest
    return step


def _bfgs_update(
    b: np.ndarray, basis: np.ndarray, history_pairs: Sequence[tuple[np.ndarray, np.ndarray]], size: int
) -> np.ndarray:
    """``b`` (on ``basis``'s subspace) updated by BFGS with the secant pairs that have positive curvature."""
    for k, (s, y) in enumerate(history_pairs):
        s = np.asarray(s, dtype=np.float64).ravel()
        y = np.asarray(y, dtype=np.float64).ravel()
        if s.shape != (size,) or y.shape != (size,):
            raise ValueError(f"history_pairs[{k}]: s {s.shape} and y {y.shape} must hold {size} numbers each")
        if not (np.all(np.isfinite(s)) and np.all(np.isfinite(y))):
            raise ValueError(f"history_pairs[{k}] holds NaN or infinite entries")
        s, y = basis.T @ s, basis.T @ y
        sy, ss = float(s @ y), float(s @ s)
        if ss <= 1e-20 or sy < MIN_PAIR_CURVATURE * ss:
            continue
        bs = b @ s
        b = b - np.outer(bs, bs) / float(s @ bs) + np.outer(y, y) / sy
    return b


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


def _shipped_model(loader: Any, key: str = "model") -> Any:
    if key not in _SHIPPED:
        _SHIPPED[key] = loader()
    return _SHIPPED[key]
