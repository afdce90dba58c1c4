"""A cheap learned Hessian: pair force constants over neighbours, equivariant by construction.

Each pair of atoms (i, j) closer than the cutoff (periodic images included) contributes a 3×3 stiffness

    C_ij = a(r) r̂r̂ᵀ + b(r) (I − r̂r̂ᵀ),   r = |r_ij|, r̂ = r_ij / r,

with a (along the bond) and b (across it) smooth functions of the distance for each unordered species pair. The
pair adds C_ij to the blocks (i, i) and (j, j) and −C_ij to (i, j) and (j, i), so every row of 3×3 blocks sums to
zero (the acoustic sum rule: a rigid translation costs nothing) and the matrix is symmetric. A pair of an atom with
its own periodic image adds nothing (its distance cannot change). Rotating the structure rotates every r̂ and so
gives R H Rᵀ per block; permuting the atoms permutes the blocks; a translation changes nothing.

The radial functions are expansions in Gaussians times a cosine cutoff,

    a_p(r) = fc(r) Σ_k α_{p,k} exp(−(r − r_k)² / 2σ²),   fc(r) = ½ (1 + cos(π r / r_c)),

and the same for b with coefficients β.

An optional **embedding term** has the form of the many-body part of an embedded-atom Hessian, F''(ρ_i) ∇ρ_i ∇ρ_iᵀ:
for each atom i a set of 3N-vectors

    g_{i,k,t}[j] = φ_k(r_ij) r̂_ij  (neighbours j of species t),   g_{i,k,t}[i] = −Σ_j g_{i,k,t}[j],

(each sums to zero over atoms, so translations stay zero modes; a self-image cancels) and the term
Σ_i Σ_{(k,t),(l,u)} W^{(s_i)}_{(k,t),(l,u)} g_{i,k,t} g_{i,l,u}ᵀ with a symmetric matrix W per species of the centre
atom. It couples two neighbours of one atom (three-body), which a pair model cannot. Both terms are linear in their
coefficients (α, β, W), so the model is fitted to exact Hessians by linear least squares
(:mod:`sb3_crystal.curvature.fit`). A fitted model is plain data (JSON): the elements, the bases and the coefficients.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

__all__ = ["FORMAT", "PairCurvatureModel", "load_cell_model", "load_model"]

#: Identifier written into model files.
FORMAT = "sb3_crystal.curvature.PairCurvatureModel/1"


def _pair_types(n_elements: int) -> np.ndarray:
    """Index of each unordered species pair: ``table[e1, e2]`` for element indices e1, e2."""
    table = np.zeros((n_elements, n_elements), dtype=np.int64)
    k = 0
    for e1 in range(n_elements):
        for e2 in range(e1, n_elements):
            table[e1, e2] = table[e2, e1] = k
            k += 1
    return table


@dataclass
class PairCurvatureModel:
    """Pair force-constant model of a potential's Hessian (see the module docstring).

    :param elements: element symbols the model covers, e.g. ``("Al", "Fe")``.
    :param cutoff: r_c, Å: pairs at or beyond it contribute nothing.
    :param centers: Gaussian centres r_k, Å.
    :param width: Gaussian width σ, Å.
    :param coefficients: shape (n_pairs, 2, n_basis), eV/Å²: [p, 0] the along-bond a_p, [p, 1] the across-bond b_p,
        pairs numbered (e1, e2) with e1 ≤ e2 in the order of ``elements``; zeros for an unfitted model.
    :param embedding_centers: Gaussian centres of the embedding term's φ_k, Å (``None``: no embedding term).
    :param embedding_width: their width σ, Å.
    :param embedding: shape (n_elements, K·T, K·T) symmetric, eV/Å²: W per species of the centre atom, index
        (k, t) = t·K + k with t the neighbour's element index; zeros for an unfitted model.
    :param info: free plain-data notes (how it was fitted, its held-out errors).
    """

    elements: tuple[str, ...]
    cutoff: float
    centers: np.ndarray
    width: float
    coefficients: np.ndarray | None = None
    embedding_centers: np.ndarray | None = None
    embedding_width: float = 0.5
    embedding: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.elements = tuple(str(e) for e in self.elements)
        if not self.elements or len(set(self.elements)) != len(self.elements):
            raise ValueError(f"elements must be distinct element symbols, got {self.elements}")
        for symbol in self.elements:
            if symbol not in atomic_numbers:
                raise ValueError(f"elements: {symbol!r} is not an element symbol")
        self.cutoff = float(self.cutoff)
        self.width = float(self.width)
        if not (math.isfinite(self.cutoff) and self.cutoff > 0):
            raise ValueError(f"cutoff must be a finite distance > 0 Å, got {self.cutoff!r}")
        if not (math.isfinite(self.width) and self.width > 0):
            raise ValueError(f"width must be a finite distance > 0 Å, got {self.width!r}")
        self.centers = np.asarray(self.centers, dtype=np.float64).ravel()
        if self.centers.size == 0 or not np.all(np.isfinite(self.centers)):
            raise ValueError("centers must be a non-empty list of finite distances, Å")
        shape = (self.n_pair_types, 2, self.centers.size)
        if self.coefficients is None:
            self.coefficients = np.zeros(shape)
        self.coefficients = np.asarray(self.coefficients, dtype=np.float64)
        if self.coefficients.shape != shape:
            raise ValueError(
                f"coefficients must have shape {shape} (pairs, along/across, basis), got {self.coefficients.shape}"
            )
        if not np.all(np.isfinite(self.coefficients)):
            raise ValueError("coefficients must be finite")
        self._check_embedding()
        self._numbers = np.array([atomic_numbers[e] for e in self.elements])
        self._pairs = _pair_types(len(self.elements))

    def _check_embedding(self) -> None:
        """Check (and symmetrise) the embedding term's basis and matrices."""
        if self.embedding_centers is not None:
            self.embedding_centers = np.asarray(self.embedding_centers, dtype=np.float64).ravel()
            self.embedding_width = float(self.embedding_width)
            if self.embedding_centers.size == 0 or not np.all(np.isfinite(self.embedding_centers)):
                raise ValueError("embedding_centers must be a non-empty list of finite distances, Å")
            if not (math.isfinite(self.embedding_width) and self.embedding_width > 0):
                raise ValueError(f"embedding_width must be a finite distance > 0 Å, got {self.embedding_width!r}")
            size = self.embedding_centers.size * len(self.elements)
            shape3 = (len(self.elements), size, size)
            if self.embedding is None:
                self.embedding = np.zeros(shape3)
            self.embedding = np.asarray(self.embedding, dtype=np.float64)
            if self.embedding.shape != shape3:
                raise ValueError(f"embedding must have shape {shape3} (centre species, K·T, K·T), got {self.embedding.shape}")
            if not np.all(np.isfinite(self.embedding)):
                raise ValueError("embedding must be finite")
            self.embedding = 0.5 * (self.embedding + self.embedding.transpose(0, 2, 1))
        elif self.embedding is not None:
            raise ValueError("embedding coefficients given without embedding_centers")

    # -- description ----------------------------------------------------------------------------------------------
    @property
    def n_pair_types(self) -> int:
        """Unordered species pairs."""
        n = len(self.elements)
        return n * (n + 1) // 2

    @property
    def n_parameters(self) -> int:
        """Fitted coefficients (the embedding matrices counted by their independent entries)."""
        n = int(self.coefficients.size)
        if self.embedding is not None:
            size = self.embedding.shape[1]
            n += len(self.elements) * size * (size + 1) // 2
        return n

    def radial(self, r: np.ndarray, embedding: bool = False) -> np.ndarray:
        """Basis functions at distances ``r`` (any shape), shape ``r.shape + (n_basis,)``.

        :param embedding: the embedding term's basis instead of the pair term's.
        """
        r = np.asarray(r, dtype=np.float64)
        centers, width = (self.embedding_centers, self.embedding_width) if embedding else (self.centers, self.width)
        if centers is None:
            raise ValueError("this model has no embedding term")
        cut = np.where(r < self.cutoff, 0.5 * (1.0 + np.cos(np.pi * np.minimum(r, self.cutoff) / self.cutoff)), 0.0)
        gauss = np.exp(-0.5 * ((r[..., None] - centers) / width) ** 2)
        return gauss * cut[..., None]

    def embedding_vectors(
        self, numbers: np.ndarray, cell: np.ndarray, positions: np.ndarray, strain: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """The embedding term's g vectors: array (N, K·T, 3N) (centre atom, basis × neighbour species, displacement)
        and each atom's element index (N,).

        :param strain: append 9 entries per vector, its component along a homogeneous deformation ε (row-major):
            Σ_j φ_k(r_ij) r̂_ij ε r_ij (the coordinates of :meth:`strain_hessian`); shape (N, K·T, 3N + 9).
        """
        i, j, vectors, _ = self.pairs(numbers, cell, positions)
        n = len(np.asarray(numbers).ravel())
        kinds = self.element_indices(numbers)
        r = np.linalg.norm(vectors, axis=1)
        phi = self.radial(r, embedding=True)  # (pairs, K)
        k_basis = phi.shape[1]
        unit = vectors / np.maximum(r, 1e-12)[:, None]
        values = phi[:, :, None] * unit[:, None, :]  # (pairs, K, 3)
        g = np.zeros((n, len(self.elements), k_basis, n, 3))
        np.add.at(g, (i, kinds[j], slice(None), j), values)
        np.add.at(g, (i, kinds[j], slice(None), i), -values)
        g = g.reshape(n, len(self.elements) * k_basis, 3 * n)
        if strain:
            along = np.zeros((n, len(self.elements), k_basis, 3, 3))
            np.add.at(along, (i, kinds[j]), values[:, :, :, None] * vectors[:, None, None, :])
            g = np.concatenate([g, along.reshape(n, len(self.elements) * k_basis, 9)], axis=2)
        return g, kinds

    def stiffness(self, r: np.ndarray, pair: int) -> tuple[np.ndarray, np.ndarray]:
        """a(r) and b(r) of one pair type (its index as in ``coefficients``), eV/Å²."""
        phi = self.radial(r)
        return phi @ self.coefficients[pair, 0], phi @ self.coefficients[pair, 1]

    # -- the Hessian ----------------------------------------------------------------------------------------------
    def element_indices(self, numbers: Sequence[int] | np.ndarray) -> np.ndarray:
        """Index into ``elements`` of each atom.

        :raises ValueError: an atom of an element the model does not cover (naming the atom).
        """
        numbers = np.asarray(numbers, dtype=np.int64).ravel()
        index = np.full(len(numbers), -1)
        for k, z in enumerate(self._numbers):
            index[numbers == z] = k
        bad = np.flatnonzero(index < 0)
        if len(bad):
            z = int(numbers[bad[0]])
            name = chemical_symbols[z] if 0 <= z < len(chemical_symbols) else str(z)
            raise ValueError(f"atom {int(bad[0])} is {name}, which this curvature model does not cover {self.elements}")
        return index

    def pairs(
        self, numbers: np.ndarray, cell: np.ndarray, positions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Directed neighbour pairs within the cutoff: (i, j, bond vectors r_j − r_i with images, pair types)."""
        from matscipy.neighbours import neighbour_list

        numbers, cell, positions = _checked(numbers, cell, positions)
        kinds = self.element_indices(numbers)
        i, j, vectors = neighbour_list("ijD", positions=positions, cell=cell, pbc=np.ones(3, bool), cutoff=self.cutoff)
        return i, j, vectors, self._pairs[kinds[i], kinds[j]]

    def hessian(self, numbers: np.ndarray, cell: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """The model Hessian (3N, 3N), eV/Å², float64, rows and columns ordered atom by atom (x, y, z).

        :param numbers: atomic numbers (N,).
        :param cell: lattice vectors as rows (3, 3), Å (periodic along every axis).
        :param positions: Cartesian positions (N, 3), Å.
        """
        i, j, _, blocks = self._pair_blocks(numbers, cell, positions)
        n = len(np.asarray(numbers).ravel())
        hessian = _assemble(n, i, j, blocks)
        self._add_embedding(hessian, numbers, cell, positions, strain=False)
        return hessian

    def strain_hessian(self, numbers: np.ndarray, cell: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """The model Hessian over atomic displacements and a homogeneous deformation, (3N + 9, 3N + 9), eV/Å² on the
        atom block and eV/Å and eV on the mixed and strain blocks, float64.

        The coordinates are (u, ε): the structure goes to positions (I + ε) r_i + u_i and lattice vectors (I + ε) a_k
        (columns; ε a general 3×3 matrix, its entries row by row after the 3N atomic ones). Every bond vector
        r_ij (with its image offset) then changes by u_j − u_i + ε r_ij, and the model's quadratic form in those
        changes (the pair force constants and the embedding term's ∇ρ-like vectors) gives every block; the atom block
        is :meth:`hessian`. The map (u, ε) → geometry is linear, so no first-order (stress) term enters: the stress
        part of the elastic response is the model's transverse stiffness b(r), as in a pair potential's φ'/r.

        :param numbers: atomic numbers (N,).
        :param cell: lattice vectors as rows (3, 3), Å (periodic along every axis).
        :param positions: Cartesian positions (N, 3), Å.
        """
        i, j, vectors, blocks = self._pair_blocks(numbers, cell, positions)
        n = len(np.asarray(numbers).ravel())
        size = 3 * n + 9
        hessian = np.zeros((size, size))
        hessian[: 3 * n, : 3 * n] = _assemble(n, i, j, blocks)
        # A directed pair p's change under ε alone is ε r_p, i.e. S_p ε with S_p[a, (c, d)] = δ_ac r_d. Both directions
        # of every pair are listed, so the energy ½ Σ_unordered dᵀ C d is ¼ Σ_directed: strain block ½ Σ_p S_pᵀ C_p S_p,
        # mixed block −Σ_{p from i} C_p S_p on atom i (a self-image pair and its reverse cancel there).
        strain = 0.5 * np.einsum("pb,pac,pd->abcd", vectors, blocks, vectors).reshape(9, 9)
        coupling = np.zeros((n, 3, 3, 3))
        np.add.at(coupling, i, -np.einsum("pac,pd->pacd", blocks, vectors))
        hessian[: 3 * n, 3 * n :] = coupling.reshape(3 * n, 9)
        hessian[3 * n :, : 3 * n] = coupling.reshape(3 * n, 9).T
        hessian[3 * n :, 3 * n :] = strain
        self._add_embedding(hessian, numbers, cell, positions, strain=True)
        return hessian

    def _pair_blocks(
        self, numbers: np.ndarray, cell: np.ndarray, positions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The directed pairs (i, j, bond vectors) and each pair's 3×3 force-constant block."""
        i, j, vectors, kinds = self.pairs(numbers, cell, positions)
        r = np.linalg.norm(vectors, axis=1)
        phi = self.radial(r)
        a = np.einsum("pk,pk->p", phi, self.coefficients[kinds, 0])
        b = np.einsum("pk,pk->p", phi, self.coefficients[kinds, 1])
        return i, j, vectors, _blocks(vectors, r, a, b)

    def _add_embedding(
        self, hessian: np.ndarray, numbers: np.ndarray, cell: np.ndarray, positions: np.ndarray, strain: bool
    ) -> None:
        """Add the embedding term's quadratic form (over atoms, and the deformation with ``strain``) in place."""
        if self.embedding is None:
            return
        g, kinds = self.embedding_vectors(numbers, cell, positions, strain=strain)
        weighted = np.einsum("nab,nbp->nap", self.embedding[kinds], g)
        flat = g.shape[0] * g.shape[1]
        hessian += g.reshape(flat, -1).T @ weighted.reshape(flat, -1)

    # -- plain data -----------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready)."""
        return {
            "format": FORMAT,
            "elements": list(self.elements),
            "cutoff": self.cutoff,
            "centers": self.centers.tolist(),
            "width": self.width,
            "coefficients": self.coefficients.tolist(),
            "embedding_centers": None if self.embedding_centers is None else self.embedding_centers.tolist(),
            "embedding_width": self.embedding_width,
            "embedding": None if self.embedding is None else self.embedding.tolist(),
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "curvature model") -> PairCurvatureModel:
        """The model written by :meth:`to_dict`.

        :param where: what to call the source in error messages (a file name).
        :raises ValueError: a different format, a missing or bad entry.
        """
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"{where}: not a {FORMAT} file (format {found!r})")
        missing = [key for key in ("elements", "cutoff", "centers", "width", "coefficients") if key not in data]
        if missing:
            raise ValueError(f"{where}: missing entries {missing}")
        try:
            return cls(
                elements=tuple(data["elements"]),
                cutoff=data["cutoff"],
                centers=np.asarray(data["centers"], dtype=np.float64),
                width=data["width"],
                coefficients=np.asarray(data["coefficients"], dtype=np.float64),
                embedding_centers=None if data.get("embedding_centers") is None else np.asarray(data["embedding_centers"]),
                embedding_width=data.get("embedding_width", 0.5),
                embedding=None if data.get("embedding") is None else np.asarray(data["embedding"], dtype=np.float64),
                info=dict(data.get("info") or {}),
            )
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {err}") from None

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model as JSON (atomically: a failed write leaves no half-written file)."""
        from sb3_crystal.files import atomic_file

        path = Path(path)
        with atomic_file(path) as tmp:
            Path(tmp).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        return path


def load_model(path: str | os.PathLike | None = None) -> PairCurvatureModel:
    """Read a model file; ``None`` for the shipped Al–Fe model (fitted to the Mendelev EAM's exact Hessians).

    :raises FileNotFoundError: no such file.
    :raises ValueError: the file is not a curvature model (naming it).
    """
    path = Path(__file__).with_name("alfe_pair_model.json") if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"curvature model file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"curvature model file {path} is not JSON: {err}") from None
    return PairCurvatureModel.from_dict(data, where=str(path))


def load_cell_model(path: str | os.PathLike | None = None) -> PairCurvatureModel:
    """Read a model file for relaxations of the cell too; ``None`` for the shipped Al–Fe cell model: the same form
    as :func:`load_model`'s, fitted to the Mendelev EAM's exact Hessians over atoms *and* a homogeneous deformation
    of strained cells (:meth:`PairCurvatureModel.strain_hessian`). The atoms-only model is kept for fixed cells.

    :raises FileNotFoundError: no such file.
    :raises ValueError: the file is not a curvature model (naming it).
    """
    return load_model(Path(__file__).with_name("alfe_cell_model.json") if path is None else path)


# -- helpers ----------------------------------------------------------------------------------------------------------
def _checked(numbers: Any, cell: Any, positions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    numbers = np.asarray(numbers).ravel()
    cell = np.asarray(cell, dtype=np.float64)
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3 or len(positions) != len(numbers) or len(numbers) == 0:
        raise ValueError(
            f"positions must be (n_atoms, 3) with n_atoms = len(numbers) = {len(numbers)} > 0, got {positions.shape}"
        )
    if cell.shape != (3, 3):
        raise ValueError(f"cell must be (3, 3) lattice vectors as rows, got shape {cell.shape}")
    if not (np.all(np.isfinite(cell)) and np.all(np.isfinite(positions))):
        raise ValueError("cell and positions must be finite")
    if abs(np.linalg.det(cell)) < 1e-6:
        raise ValueError(f"cell is singular (volume {np.linalg.det(cell):.3g} Å³): the model needs a periodic cell")
    return numbers, cell, positions


def _blocks(vectors: np.ndarray, r: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per pair 3×3 stiffness a r̂r̂ᵀ + b (I − r̂r̂ᵀ), shape (n_pairs, 3, 3)."""
    unit = vectors / np.maximum(r, 1e-12)[:, None]
    outer = unit[:, :, None] * unit[:, None, :]
    return (a - b)[:, None, None] * outer + b[:, None, None] * np.eye(3)


def _assemble(n: int, i: np.ndarray, j: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """Hessian from directed pair stiffnesses: +C on (i, i), −C on (i, j); both directions of a pair are listed, so
    the pair's (j, j) and (j, i) blocks come from its reverse. Self-image pairs (i = j) cancel exactly."""
    h = np.zeros((n * n, 3, 3))
    np.add.at(h, i * n + i, blocks)
    np.add.at(h, i * n + j, -blocks)
    return h.reshape(n, n, 3, 3).transpose(0, 2, 1, 3).reshape(3 * n, 3 * n)
