"""Seeded distorted starts: the same starts for every relaxer.

For each structure (a relaxed minimum), ``n_starts`` starts are drawn with the paper's distortion
β·U(−1, 1) per Cartesian coordinate; start ``k`` uses ``np.random.default_rng(seed + k)``, so every relaxer
sees the same starts and any single start can be rebuilt alone from its ``start_seed`` column.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from sb3_crystal.structures.geometry import distort

__all__ = ["make_starts", "structure_name"]


def make_starts(minimum: Atoms, beta: float, n_starts: int, seed: int = 0, min_distance: float = 0.0) -> list[Atoms]:
    """Seeded distorted starts around a minimum (:func:`~sb3_crystal.structures.geometry.distort`).

    :param minimum: the relaxed structure.
    :param beta: distortion β in Å: each coordinate moves by β·U(−1, 1).
    :param n_starts: number of starts.
    :param seed: start ``k`` is drawn from ``np.random.default_rng(seed + k)``.
    :param min_distance: redraw starts with two atoms closer than this (Å; 0 keeps the paper's distribution).
    :return: the starts, each with ``info["start_seed"]``.
    """
    if n_starts < 0:
        raise ValueError(f"n_starts must be ≥ 0, got {n_starts}")
    starts = []
    for k in range(n_starts):
        start = distort(minimum, beta, np.random.default_rng(seed + k), min_distance=min_distance)
        start.calc = None
        start.info["start_seed"] = seed + k
        starts.append(start)
    return starts


def structure_name(atoms: Atoms) -> str:
    """``info["name"]``, else ``info["source"]``, else the chemical formula."""
    return str(atoms.info.get("name") or atoms.info.get("source") or atoms.get_chemical_formula())
