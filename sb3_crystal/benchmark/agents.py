"""Trained agents as benchmark relaxers: :class:`AgentRelaxer` (the agent alone) and :class:`HybridRelaxer`
(agent to ``f_switch`` or an early handover, then a classical optimizer).

Both drive the ASE optimizers of :mod:`sb3_crystal.relax` through the loop of
:class:`~sb3_crystal.benchmark.classical.ASEOptimizerRelaxer`, so they see the same starts and pay force calls by
the same :class:`~sb3_crystal.benchmark.classical.ForceCallCounter` rule as the classical relaxers::

    run_benchmark(minima, optimizers=["BFGS", "FIRE", AgentRelaxer(model), HybridRelaxer(model, 0.1, "BFGSLineSearch")])

A deterministic agent's path does not depend on the threshold ε (ε only decides when to stop), and neither does
the hybrid's (its handover rules use ``f_switch``, energies and step counts): one run to the smallest ε answers
every ε exactly, when the classical optimizer's path ignores ε too (GPMin's does not: it is run once per ε).
"""

from __future__ import annotations

from typing import Any

from ase.optimize.optimize import Optimizer

from sb3_crystal.benchmark.classical import ASEOptimizerRelaxer
from sb3_crystal.relax.agent_io import CrystalAgent, as_agent, load_default_agent
from sb3_crystal.relax.optimizer import (
    DEFAULT_FINISHER,
    FMAX_INDEPENDENT_OPTIMIZERS,
    HybridOptimizer,
    RLOptimizer,
    is_auto_finisher,
)

__all__ = ["AgentRelaxer", "HybridRelaxer"]


def _agent(model: Any) -> CrystalAgent:
    return load_default_agent() if model is None else as_agent(model)


class AgentRelaxer(ASEOptimizerRelaxer):
    """A trained agent alone (:class:`~sb3_crystal.relax.RLOptimizer`) as a relaxer.

    :param model: TD3/SAC model, :class:`~sb3_crystal.relax.CrystalAgent`, or ``None`` for the shipped agent.
    :param name: name in tables.
    :param move_settings: ``max_displacement``, ``action_scale``, ``force_cap``, ``min_distance`` overrides.
    """

    def __init__(self, model: Any = None, name: str = "RL", **move_settings: Any) -> None:
        self.agent = _agent(model)
        super().__init__(name, RLOptimizer, fmax_independent=True, model=self.agent, **move_settings)


class HybridRelaxer(ASEOptimizerRelaxer):
    """Agent until fmax ≤ ``f_switch``, then a classical optimizer (:class:`~sb3_crystal.relax.HybridOptimizer`).

    :param model: TD3/SAC model, :class:`~sb3_crystal.relax.CrystalAgent`, or ``None`` for the shipped agent.
    :param f_switch: handover threshold, eV/Å.
    :param optimizer: a name of :data:`~sb3_crystal.relax.hybrid_optimizer.FINISHERS`, an ASE Optimizer class,
        or ``"auto"`` (:data:`~sb3_crystal.relax.optimizer.DEFAULT_FINISHER`: GPMin on small cells, BFGSLineSearch on
        large ones).
    :param name: name in tables (default ``"RL+<optimizer>@<f_switch>"``, e.g. ``"RL+auto@0.1"``).
    :param kwargs: further :class:`~sb3_crystal.relax.HybridOptimizer` arguments (``patience``, ``max_energy_rise``,
        ``warm_start``, ``optimizer_kwargs``, move settings).
    """

    def __init__(
        self,
        model: Any = None,
        f_switch: float = 0.1,
        optimizer: str | type[Optimizer] = DEFAULT_FINISHER,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.agent = _agent(model)
        auto = is_auto_finisher(optimizer)
        chosen: str | type[Optimizer] = "auto" if auto else HybridOptimizer.classical_optimizer(optimizer)
        # Only optimizers known to ignore fmax in their steps keep the one-run read-off exact ("auto" may be GPMin).
        exact = not auto and chosen in FMAX_INDEPENDENT_OPTIMIZERS
        name = name or f"RL+{'auto' if auto else chosen.__name__}@{f_switch:g}"  # type: ignore[union-attr]
        super().__init__(
            name, HybridOptimizer, fmax_independent=exact, model=self.agent, f_switch=f_switch, optimizer=chosen, **kwargs
        )
