"""Structures: prototype builders, file readers, random crystals, relaxed minima and datasets."""

from __future__ import annotations

from sb3_crystal.structures.dataset import EmptyDatasetError, StructureDataset, load_structures
from sb3_crystal.structures.geometry import AtomsTooCloseError, check_min_distance, closest_pair, distort
from sb3_crystal.structures.minima import MinimumReport, RelaxationError, relaxed_minimum
from sb3_crystal.structures.prototypes import PROTOTYPES, build_prototype

__all__ = [
    "PROTOTYPES",
    "AtomsTooCloseError",
    "EmptyDatasetError",
    "MinimumReport",
    "RelaxationError",
    "StructureDataset",
    "build_prototype",
    "check_min_distance",
    "closest_pair",
    "distort",
    "load_structures",
    "relaxed_minimum",
]
