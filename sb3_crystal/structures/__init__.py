"""Structures: prototype builders, file readers, random crystals, generators, relaxed minima, datasets, test families."""

from __future__ import annotations

from sb3_crystal.structures.dataset import EmptyDatasetError, StructureDataset, load_structures
from sb3_crystal.structures.families import EVALUATION_SEEDS, ReservedSeedError, check_training_seed, test_family
from sb3_crystal.structures.generators import (
    RandomCellGenerator,
    RattledCellGenerator,
    SolidSolutionGenerator,
    StructureGenerator,
    parse_generator_spec,
)
from sb3_crystal.structures.geometry import AtomsTooCloseError, check_min_distance, closest_pair, distort
from sb3_crystal.structures.minima import MinimumReport, RelaxationError, relaxed_minimum
from sb3_crystal.structures.prototypes import PROTOTYPES, build_prototype

__all__ = [
    "EVALUATION_SEEDS",
    "PROTOTYPES",
    "AtomsTooCloseError",
    "EmptyDatasetError",
    "MinimumReport",
    "RandomCellGenerator",
    "RattledCellGenerator",
    "RelaxationError",
    "ReservedSeedError",
    "SolidSolutionGenerator",
    "StructureDataset",
    "StructureGenerator",
    "build_prototype",
    "check_min_distance",
    "check_training_seed",
    "closest_pair",
    "distort",
    "load_structures",
    "parse_generator_spec",
    "relaxed_minimum",
    "test_family",
]
