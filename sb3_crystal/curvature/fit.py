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

__all__ = [
    "NormalEquations",
    "design_tensor",
    "exact_hessian",
    "exact_strain_hessian",
    "fit_model",
    "hessian_errors",
    "parameters",
    "set_parameters",
    "strain_hessian_errors",
    "strain_weights",
]


def exact_hessian(calculator: Any, atoms: Atoms) -> np.ndarray:
    """The calculator's dense Hessian (3N, 3N), eV/Å², float64 (matscipy: ``get_hessian(atoms, format="dense")``)."""
    work = atoms.copy()
    work.calc = None
    return np.asarray(calculator.get_hessian(work, format="dense"), dtype=np.float64)


def exact_strain_hessian(hessian: np.ndarray, calculator: Any, atoms: Atoms, step: float = 1e-4) -> np.ndarray:
    """The exact Hessian over (u, ε), (3N + 9, 3N + 9), in the layout of
    :meth:`~sb3_crystal.curvature.PairCurvatureModel.strain_hessian`.

    The atom block is ``hessian`` (the analytic one); the columns of the deformation ε are central differences (step
    ``step``) of the calculator's gradient under the homogeneous deformation A = I + ε with the atoms following
    (u = 0): −forces for the mixed block and ∂E/∂A = V σ A⁻ᵀ (σ the calculator's stress) for the strain block.

    :param hessian: the exact (3N, 3N) Hessian at ``atoms``.
    :param calculator: an ASE calculator with forces and stress (the LAMMPS EAM).
    """
    n = len(atoms)
    out = np.zeros((3 * n + 9, 3 * n + 9))
    out[: 3 * n, : 3 * n] = hessian
    work = atoms.copy()
    work.calc = calculator

    def gradient(strain: np.ndarray) -> np.ndarray:
        deformation = np.eye(3) + strain
        work.set_cell(atoms.cell.array @ deformation.T, scale_atoms=False)
        work.positions = atoms.positions @ deformation.T
        g = np.empty(3 * n + 9)
        g[: 3 * n] = -np.asarray(work.get_forces(), dtype=np.float64).ravel()
        stress = np.asarray(work.get_stress(voigt=False), dtype=np.float64)
        g[3 * n :] = (work.get_volume() * stress @ np.linalg.inv(deformation).T).ravel()
        return g

    for p in range(9):
        unit = np.zeros(9)
        unit[p] = step
        out[:, 3 * n + p] = (gradient(unit.reshape(3, 3)) - gradient(-unit.reshape(3, 3))) / (2 * step)
    out[3 * n :, : 3 * n] = out[: 3 * n, 3 * n :].T
    out[3 * n :, 3 * n :] = 0.5 * (out[3 * n :, 3 * n :] + out[3 * n :, 3 * n :].T)
    return out


def design_tensor(model: PairCurvatureModel, atoms: Atoms, strain: bool = False) -> np.ndarray:
    """D with ``H(θ).ravel() = D θ``: shape ((3N)², n_parameters), H in its (3N, 3N) layout.

    Parameters are ordered as :func:`parameters` lays them out: the pair coefficients
    (``model.coefficients.ravel()``: pair, along/across, basis), then for each centre species the upper triangle
    (row by row) of its embedding matrix W.

    :param strain: the design of :meth:`~sb3_crystal.curvature.PairCurvatureModel.strain_hessian` instead,
        ((3N + 9)², n_parameters).
    """
    if strain:
        return _strain_design_tensor(model, atoms)
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


def _strain_design_tensor(model: PairCurvatureModel, atoms: Atoms) -> np.ndarray:
    """The design of the (3N + 9)² strain Hessian: every coefficient's unit model assembled as
    :meth:`~sb3_crystal.curvature.PairCurvatureModel.strain_hessian` assembles the blocks."""
    numbers, cell, positions = _checked(atoms.numbers, atoms.cell.array, atoms.positions)
    i, _, vectors, kinds = model.pairs(numbers, cell, positions)
    n = len(numbers)
    size = 3 * n + 9
    k_basis = model.centers.size
    r = np.linalg.norm(vectors, axis=1)
    phi = model.radial(r)
    unit = vectors / np.maximum(r, 1e-12)[:, None]
    along = unit[:, :, None] * unit[:, None, :]
    across = np.eye(3) - along
    atom = design_tensor(model, atoms)[:, : model.coefficients.size]  # the atom block's pair columns
    pair = np.zeros((size, size, model.n_pair_types, 2, k_basis))
    pair[: 3 * n, : 3 * n] = atom.reshape(3 * n, 3 * n, model.n_pair_types, 2, k_basis)
    for t in range(model.n_pair_types):
        mine = kinds == t
        for m, shape in enumerate((along, across)):
            blocks = shape[mine][:, :, :, None] * phi[mine][:, None, None, :]  # (pairs, 3, 3, K)
            v = vectors[mine]
            pair[3 * n :, 3 * n :, t, m] = 0.5 * np.einsum("pb,pack,pd->abcdk", v, blocks, v).reshape(9, 9, k_basis)
            coupling = np.zeros((n, 3, 3, 3, k_basis))
            np.add.at(coupling, i[mine], -np.einsum("pack,pd->pacdk", blocks, v))
            pair[: 3 * n, 3 * n :, t, m] = coupling.reshape(3 * n, 9, k_basis)
            pair[3 * n :, : 3 * n, t, m] = coupling.reshape(3 * n, 9, k_basis).transpose(1, 0, 2)
    pair = pair.reshape(size * size, -1)
    if model.embedding is None:
        return pair
    g, species = model.embedding_vectors(numbers, cell, positions, strain=True)
    columns = [pair]
    width = g.shape[1]
    upper = np.triu_indices(width)
    for c in range(len(model.elements)):
        mine = g[species == c]
        outer = np.einsum("nap,nbq->abpq", mine, mine)
        sym = outer + outer.transpose(1, 0, 2, 3)
        sym[np.arange(width), np.arange(width)] *= 0.5
        columns.append(sym[upper].reshape(len(upper[0]), -1).T)
    return np.concatenate(columns, axis=1)


def strain_weights(n_atoms: int, strain_hessian: np.ndarray) -> np.ndarray:
    """Per-entry weights of a (3N + 9)² strain Hessian in the fit: each block's squared error relative to its own
    size (atom block ‖H_uu‖², strain block ‖H_εε‖², mixed blocks ‖H_uu‖ ‖H_εε‖), so the blocks count alike
    whatever their units and however small the coupling of a symmetric cell."""
    m = 3 * n_atoms
    uu = float(np.linalg.norm(strain_hessian[:m, :m])) ** 2
    ee = float(np.linalg.norm(strain_hessian[m:, m:])) ** 2
    weights = np.full(strain_hessian.shape, 1.0 / np.sqrt(uu * ee))
    weights[:m, :m] = 1.0 / uu
    weights[m:, m:] = 1.0 / ee
    return weights


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
        """Add one structure with its exact Hessian; its squared error counts ``weight / N``.

        A (3N + 9, 3N + 9) ``hessian`` is a strain Hessian (:func:`exact_strain_hessian`): it is fitted with the
        blockwise relative weights of :func:`strain_weights` times ``weight``.
        """
        n = len(atoms)
        if np.shape(hessian) == (3 * n + 9, 3 * n + 9):
            target = np.asarray(hessian, dtype=np.float64)
            design = design_tensor(self.model, atoms, strain=True)
            w = float(weight) * strain_weights(n, target).ravel()
            target = target.ravel()
            self.ata += design.T @ (w[:, None] * design)
            self.atb += design.T @ (w * target)
            self.btb += float(w @ target**2)
            self.n_structures += 1
            return
        hessian = np.asarray(hessian, dtype=np.float64)
        if hessian.shape != (3 * n, 3 * n):
            raise ValueError(
                f"hessian of a {n}-atom structure must be ({3 * n}, {3 * n}) or ({3 * n + 9}, {3 * n + 9}) (with the "
                f"strain), got {hessian.shape}"
            )
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


def strain_hessian_errors(
    model: PairCurvatureModel, atoms: Atoms, strain_hessian: np.ndarray, generalised_forces: np.ndarray
) -> dict[str, float]:
    """How well ``model`` stands in for the exact strain Hessian at one structure (a fresh ``FrechetCellFilter``
    around it: deformation I, ``exp_cell_factor`` N).

    :param strain_hessian: the exact (3N + 9, 3N + 9) Hessian of :func:`exact_strain_hessian`.
    :param generalised_forces: the filter's generalised forces (N + 3, 3).
    :return: relative Frobenius errors of the atom block (``atoms``), the strain block (``strain``), the mixed block
        (``coupling``, relative to ‖H_uu‖^½ ‖H_εε‖^½) and the relaxed strain response H_εε − H_εu H_uu⁺ H_uε
        (``relaxed``); ``step_cosine``: cosine of the model's and the exact Hessian's step of atoms and cell
        (:func:`~sb3_crystal.curvature.cell_curvature_step`, no history, no cap).
    """
    from sb3_crystal.curvature.step import cell_curvature_step

    n = len(atoms)
    m = 3 * n
    mine = model.strain_hessian(atoms.numbers, atoms.cell.array, atoms.positions)
    exact = np.asarray(strain_hessian, dtype=np.float64)

    def relaxed(h: np.ndarray) -> np.ndarray:
        return h[m:, m:] - h[m:, :m] @ np.linalg.pinv(h[:m, :m], rcond=1e-8, hermitian=True) @ h[:m, m:]

    def error(a: np.ndarray, b: np.ndarray, scale: float | None = None) -> float:
        return float(np.linalg.norm(a - b) / (np.linalg.norm(b) if scale is None else scale))

    scale = float(np.sqrt(np.linalg.norm(exact[:m, :m]) * np.linalg.norm(exact[m:, m:])))
    x = np.vstack([atoms.positions, float(n) * np.eye(3)])  # any cell rows: the step reads the deformation only
    steps = [
        cell_curvature_step(
            atoms.numbers, atoms.cell.array, x, generalised_forces, np.eye(3), float(n), hessian=h, max_step=1e9
        ).ravel()
        for h in (mine, exact)
    ]
    cosine = float(steps[0] @ steps[1] / max(np.linalg.norm(steps[0]) * np.linalg.norm(steps[1]), 1e-300))
    return {
        "atoms": error(mine[:m, :m], exact[:m, :m]),
        "strain": error(mine[m:, m:], exact[m:, m:]),
        "coupling": error(mine[:m, m:], exact[:m, m:], scale),
        "relaxed": error(relaxed(mine), relaxed(exact)),
        "step_cosine": cosine,
    }
