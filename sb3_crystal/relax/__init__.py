"""Relaxing structures with trained agents: ASE optimizers (:class:`RLOptimizer`, :class:`HybridOptimizer`), many
structures at once (:func:`relax_many`, pymatgen's :func:`relax_structure`, the resumable :func:`run_batch`), and
agent files (:func:`save_agent`, :func:`load_agent`, :func:`load_model`, :func:`load_default_agent`,
:func:`load_shipped_agent`)."""

from __future__ import annotations

from sb3_crystal.relax.agent_io import (
    AgentFormatError,
    CrystalAgent,
    NoDefaultAgentError,
    ZeroPolicy,
    as_agent,
    load_agent,
    load_default_agent,
    load_model,
    load_shipped_agent,
    save_agent,
    trained_species,
)
from sb3_crystal.relax.batch import BatchProfile, RelaxationResult, relax_many, relax_structure
from sb3_crystal.relax.batch_runner import run_batch
from sb3_crystal.relax.counted import check_agent_can_relax
from sb3_crystal.relax.hybrid_optimizer import FINISHERS, HybridOptimizer
from sb3_crystal.relax.learned_curvature import LearnedCurvature
from sb3_crystal.relax.optimizer import CLASSICAL_OPTIMIZERS
from sb3_crystal.relax.rl_optimizer import RLOptimizer

__all__ = [
    "CLASSICAL_OPTIMIZERS",
    "FINISHERS",
    "AgentFormatError",
    "BatchProfile",
    "CrystalAgent",
    "HybridOptimizer",
    "LearnedCurvature",
    "NoDefaultAgentError",
    "RLOptimizer",
    "RelaxationResult",
    "ZeroPolicy",
    "as_agent",
    "check_agent_can_relax",
    "load_agent",
    "load_default_agent",
    "load_model",
    "load_shipped_agent",
    "relax_many",
    "relax_structure",
    "run_batch",
    "save_agent",
    "trained_species",
]
