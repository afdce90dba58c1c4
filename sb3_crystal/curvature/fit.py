"""Fitting a :class:`~sb3_crystal.curvature.PairCurvatureModel` to exact Hessians by linear least squares.

The model Hessian is linear in its coefficients, H(θ) = Σ_m θ_m D_m, so the fit solves the normal equations of

    Σ_s w_s ‖H(θ) − H_s‖²_F / N_s  +  λ ‖θ‖²

over training structures s (N_s atoms, weight w_s), accumulated one structure at a time (one structure's design
tensor D_m holds 9 N² × n_parameters numbers, so structures of up to a few hundred atoms fit in memory). The exact
Hessians come from a calculator with ``get_hessian`` (matscipy's analytic EAM Hessian).

:func:`hessian_errors` measures a model against exact Hessians: the relative Frobenius error and how close the
step of :func:`~sb3_crystal.curvature.curvature_step` (no history) comes to the step with the exact Hessian.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from ase import Atoms

from sb3_crystal.curvature.model import PairCurvatureModel, _checked
from sb3_crystal.curvature.step import curvature_step

__all__ = ["NormalEquations", "design_tensor", "exact_hessian", "fit_model", "hessian_errors", "parameters", "set_parameters"]


def exact_hessian(calculator: Any, atoms: Atoms) -> np.ndarray:
    """The calculator's dense Hessian (3N, 3N), eV/Å², float64 (matscipy: ``get_hessian(atoms, format="dense")``)."""
    work = atoms.copy()
    work.calc = None
    return np.asarray(calculator.get_hessian(work, format="dense"), dtype=np.float64)


def design_tensor(model: PairCurvatureModel, atoms: Atoms) -> np.ndarray:
    """D with ``H(θ).ravel() = D θ``: shape ((3N)², n_parameters), H in its (3N, 3N) layout.

    Parameters are ordered as :func:`parameters` lays them out: the pair coefficients
    (``model.coefficients.ravel()``: pair, along/across, basis), then for each centre species the upper triangle
    (row by row) of its embedding matrix W.
    """
    numbers, cell, positions = _checked(atoms.numbers, atoms.cell.array, atoms.positions)
    i, j, vectors, kinds = model.pairs(numbers, cell, positions)
    n = len(numbers)
    k_basis = model.centers.size
    r = np.linalg.norm(vectors, axis=1)
    phi = model.radial(r)  # (pairs, K)
    unit = vectors / np.maximum(r, 1e-12)[:, None]
    along = (unit[:, :, None] * unit[:, None, :]).reshape(-1, 9)
    across = np.eye(3).reshape(1, 9) - along
    # per pair: (9, 2, K) values for its own pair type's columns
    values = np.stack([along[:, :, None] * phi[:, None, :], across[:, :, None] * phi[:, None, :]], axis=2)
    design = np.zeros((n * n, 9, model.n_pair_types, 2, k_basis))
    np.add.at(design, (i * n + i, slice(None), kinds), values)
    np.add.at(design, (i * n + j, slice(None), kinds), -values)
    pair = design.reshape(n, n, 3, 3, -1).transpose(0, 2, 1, 3, 4).reshape(9 * n * n, -1)
    if model.embedding is None:
        return pair
    g, species = model.embedding_vectors(numbers, cell, positions)
    size = g.shape[1]
    upper = np.triu_indices(size)
    columns = [pair]
    for c in range(len(model.elements)):
        mine = g[species == c]
        outer = np.einsum("nap,nbq->abpq", mine, mine)  # (size, size, 3N, 3N)
        sym = outer + outer.transpose(1, 0, 2, 3)
        sym[np.arange(size), np.arange(size)] *= 0.5
        columns.append(sym[upper].reshape(len(upper[0]), -1).T)
    return np.concatenate(columns, axis=1)


def parameters(model: PairCurvatureModel) -> np.ndarray:
    """The model's coefficients as one vector in the order of :func:`design_tensor`."""
    parts = [model.coefficients.ravel()]
    if model.embedding is not None:
        upper = np.triu_indices(model.embedding.shape[1])
        parts += [w[upper] for w in model.embedding]
    return np.concatenate(parts)


def set_parameters(model: PairCurvatureModel, theta: np.ndarray) -> PairCurvatureModel:
    """Write a vector laid out as :func:`parameters` back into ``model`` (in place) and return it."""
    theta = np.asarray(theta, dtype=np.float64).ravel()
    if theta.size != model.n_parameters:
        raise ValueError(f"expected {model.n_parameters} parameters, got {theta.size}")
    m = model.coefficients.size
    model.coefficients = theta[:m].reshape(model.coefficients.shape)
    if model.embedding is not None:
        size = model.embedding.shape[1]
        upper = np.triu_indices(size)
        per = len(upper[0])
        matrices = np.zeros_like(model.embedding)
        for c in range(len(model.elements)):
            w = np.zeros((size, size))
            w[upper] = theta[m + c * per : m + (c + 1) * per]
            matrices[c] = w + np.triu(w, 1).T
        model.embedding = matrices
    return model


class NormalEquations:
    """Accumulates AᵀA and Aᵀh of the weighted least-squares fit, structure by structure.

    :param model: the model whose basis is fitted (its coefficients are not read).
    """

    def __init__(self, model: PairCurvatureModel) -> None:
        self.model = model
        m = model.n_parameters
        self.ata = np.zeros((m, m))
        self.atb = np.zeros(m)
        self.btb = 0.0
        self.n_structures = 0

    def add(self, atoms: Atoms, hessian: np.ndarray, weight: float = 1.0) -> None:
        """Add one structure with its exact Hessian; its squared error counts ``weight / N``."""
        n = len(atoms)
        hessian = np.asarray(hessian, dtype=np.float64)
        if hessian.shape != (3 * n, 3 * n):
            raise ValueError(f"hessian of a {n}-atom structure must be ({3 * n}, {3 * n}), got {hessian.shape}")
        design = design_tensor(self.model, atoms)
        target = hessian.ravel()
        w = float(weight) / n
        self.ata += w * design.T @ design
        self.atb += w * design.T @ target
        self.btb += w * float(target @ target)
        self.n_structures += 1

    def solve(self, ridge: float = 1e-6) -> np.ndarray:
        """The parameter vector (laid out as :func:`parameters`) minimising the accumulated loss plus
        ``ridge · trace-scaled ‖θ‖²``."""
        if self.n_structures == 0:
            raise ValueError("no structures added to the fit")
        m = self.model.n_parameters
        scale = np.trace(self.ata) / m
        return np.linalg.solve(self.ata + ridge * scale * np.eye(m), self.atb)


def fit_model(
    model: PairCurvatureModel,
    structures: Iterable[Atoms],
    hessians: Iterable[np.ndarray],
    weights: Sequence[float] | None = None,
    ridge: float = 1e-6,
) -> PairCurvatureModel:
    """Fit ``model``'s coefficients to exact Hessians (in place) and return it.

    :param model: the basis to fit.
    :param structures: training structures.
    :param hessians: their exact Hessians, (3N, 3N) each.
    :param weights: per-structure weights (default 1).
    :param ridge: relative ridge on the coefficients.
    """
    equations = NormalEquations(model)
    for k, (atoms, hessian) in enumerate(zip(structures, hessians, strict=True)):
        equations.add(atoms, hessian, 1.0 if weights is None else float(weights[k]))
    return set_parameters(model, equations.solve(ridge))


def hessian_errors(model: PairCurvatureModel, atoms: Atoms, hessian: np.ndarray, forces: np.ndarray) -> dict[str, float]:
    """How well ``model`` stands in for the exact Hessian at one structure.

    :return: ``frobenius`` ‖H_model − H‖ / ‖H‖; ``step_cosine`` and ``step_ratio``: cosine and length ratio of the
        model's step (no history, no cap) and the step with the exact Hessian (same regularisation, no cap).
    """
    h_model = model.hessian(atoms.numbers, atoms.cell.array, atoms.positions)
    frobenius = float(np.linalg.norm(h_model - hessian) / np.linalg.norm(hessian))
    big = 1e9
    mine = curvature_step(atoms.numbers, atoms.cell.array, atoms.positions, forces, hessian=h_model, max_step=big).ravel()
    exact = curvature_step(atoms.numbers, atoms.cell.array, atoms.positions, forces, hessian=hessian, max_step=big).ravel()
    cosine = float(mine @ exact / max(np.linalg.norm(mine) * np.linalg.norm(exact), 1e-300))
    return {
        "frobenius": frobenius,
        "step_cosine": cosine,
        "step_ratio": float(np.linalg.norm(mine) / max(np.linalg.norm(exact), 1e-300)),
    }
