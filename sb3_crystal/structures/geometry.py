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

    Draws that bring two atoms closer than ``min_distance`` are rejected and redrawn, so the start follows
    β·U(−1, 1) conditioned on no pair closer than ``min_distance``.

    :param atoms: the (relaxed) structure.
    :param beta: distortion parameter in Å.
    :param rng: random generator.
    :param min_distance: smallest interatomic distance a start may have, in Å (0 disables the check).
    :param max_tries: draws before giving up with a ``RuntimeError``.
    """
    start = atoms.copy()
    for _ in range(max_tries):
        start.positions = atoms.positions + random_displacements(len(atoms), beta, rng)
        if min_distance <= 0 or closest_pair(start, min_distance)[2] >= min_distance:
            return start
    raise RuntimeError(
        f"No distortion with beta={beta} Å of {atoms.get_chemical_formula()} kept all atoms {min_distance} Å apart "
        f"in {max_tries} draws: lower beta or min_distance"
    )
