"""Geometric checks and the paper's random distortion of a structure."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from matscipy.neighbours import neighbour_list


class AtomsTooCloseError(ValueError):
    """Two atoms of an input structure are closer than the allowed distance."""


def closest_pair(atoms: Atoms, search_radius: float = 3.0) -> tuple[int, int, float]:
    """The closest pair of atoms, periodic images included (an atom and its own image count too).

    :param atoms: periodic structure.
    :param search_radius: radius of the neighbour search in Å; pairs farther apart are not seen.
    :return: ``(i, j, distance)``; ``(-1, -1, inf)`` when no pair lies within ``search_radius``.
    """
    i, j, d = neighbour_list("ijd", atoms, float(search_radius))
    if len(d) == 0:
        return -1, -1, float("inf")
    k = int(np.argmin(d))
    return int(i[k]), int(j[k]), float(d[k])


def has_pair_closer_than(positions: np.ndarray, cell: np.ndarray, distance: float) -> bool:
    """Whether two atoms (or an atom and an image) of a periodic cell are closer than ``distance`` Å.

    Works on plain arrays, without building an ``Atoms``: it runs in the environment's step.
    """
    i = neighbour_list("i", positions=positions, cell=cell, pbc=np.ones(3, bool), cutoff=float(distance))
    return len(i) > 0


def check_min_distance(atoms: Atoms, min_distance: float, where: str = "structure") -> None:
    """Raise :class:`AtomsTooCloseError` naming the pair when two atoms are closer than ``min_distance``.

    :param atoms: periodic structure.
    :param min_distance: smallest allowed interatomic distance in Å.
    :param where: what to call the structure in the message (a file name, a dataset entry).
    """
    if min_distance <= 0:
        return
    i, j, d = closest_pair(atoms, search_radius=min_distance)
    if d < min_distance:
        symbols = atoms.get_chemical_symbols()
        raise AtomsTooCloseError(
            f"{where}: atoms {i} ({symbols[i]}) and {j} ({symbols[j]}) are {d:.3f} Å apart, "
            f"closer than the allowed {min_distance} Å"
        )


def random_displacements(n_atoms: int, beta: float, rng: np.random.Generator) -> np.ndarray:
    """The paper's distortion: every Cartesian coordinate shifted by β·ξ, ξ ~ U(−1, 1).

    :param n_atoms: number of atoms.
    :param beta: distortion parameter in Å (≥ 0).
    :param rng: random generator.
    :return: displacements, shape (n_atoms, 3), in Å.
    """
    if not beta >= 0:
        raise ValueError(f"beta (distortion in Å) must be ≥ 0, got {beta}")
    return beta * rng.uniform(-1.0, 1.0, size=(n_atoms, 3))


def distort(atoms: Atoms, beta: float, rng: np.random.Generator, min_distance: float = 0.0, max_tries: int = 1000) -> Atoms:
    """A copy of ``atoms`` distorted by :func:`random_displacements`.

    Atoms of a pair closer than ``min_distance`` get their displacements redrawn (only those atoms, so large
    cells do not need a lucky draw for every pair at once) until no such pair is left.

    :param atoms: the (relaxed) structure.
    :param beta: distortion parameter in Å.
    :param rng: random generator.
    :param min_distance: smallest interatomic distance a start may have, in Å (0 disables the check).
    :param max_tries: redraw rounds before giving up with a ``RuntimeError``.
    """
    start = atoms.copy()
    displacements = random_displacements(len(atoms), beta, rng)
    for _ in range(max_tries):
        start.positions = atoms.positions + displacements
        if min_distance <= 0:
            return start
        i, j = neighbour_list("ij", start, float(min_distance))
        if len(i) == 0:
            return start
        crowded = np.unique(np.concatenate([i, j]))
        displacements[crowded] = random_displacements(len(crowded), beta, rng)
    raise RuntimeError(
        f"No distortion with beta={beta} Å of {atoms.get_chemical_formula()} kept all atoms {min_distance} Å apart "
        f"in {max_tries} draws: lower beta or min_distance"
    )


def largest_norm(vectors: np.ndarray) -> float:
    """Largest row norm of an (n, 3) array (0 for no rows): fmax of forces, the longest atomic shift of a move."""
    vectors = np.asarray(vectors, dtype=np.float64)
    return float(np.sqrt((vectors**2).sum(axis=1)).max()) if len(vectors) else 0.0


def max_force(forces: np.ndarray) -> float:
    """Largest atomic force norm, eV/Å."""
    return largest_norm(forces)
