"""Trained agents as benchmark relaxers: :class:`AgentRelaxer` (the agent alone) and :class:`HybridRelaxer`
(agent to ``switch_fmax`` or an early handover, then the finisher, a classical optimizer).

Both drive the ASE optimizers of :mod:`sb3_crystal.relax` through the loop of
:class:`~sb3_crystal.benchmark.classical.ASEOptimizerRelaxer`, so they see the same starts and pay force calls by
the same :class:`~sb3_crystal.benchmark.classical.ForceCallCounter` rule as the classical relaxers::

    run_benchmark(minima, optimizers=["BFGS", "FIRE", AgentRelaxer(model), HybridRelaxer(model, finisher="BFGSLineSearch")])

A deterministic agent's path does not depend on the threshold ε (ε only decides when to stop), and neither does
the hybrid's (its handover rules use ``switch_fmax``, energies and step counts): one run to the smallest ε answers
every ε exactly, when the finisher's path ignores ε too (GPMin's does not: it is run once per ε).
"""

from __future__ import annotations

from typing import Any

from ase.optimize.optimize import Optimizer

from sb3_crystal._deprecation import renamed_keyword
from sb3_crystal.benchmark.classical import ASEOptimizerRelaxer
from sb3_crystal.relax.agent_io import CrystalAgent, as_agent, load_default_agent
from sb3_crystal.relax.optimizer import (
    DEFAULT_FINISHER,
    FMAX_INDEPENDENT_OPTIMIZERS,
    HybridOptimizer,
    RLOptimizer,
    is_auto_finisher,
)

__all__ = ["AgentRelaxer", "HybridRelaxer", "LearnedCurvatureRelaxer"]


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
    """Agent until fmax ≤ ``switch_fmax``, then the finisher (:class:`~sb3_crystal.relax.HybridOptimizer`).

    :param model: TD3/SAC model, :class:`~sb3_crystal.relax.CrystalAgent`, or ``None`` for the shipped agent.
    :param switch_fmax: handover threshold, eV/Å.
    :param finisher: a name of :data:`~sb3_crystal.relax.hybrid_optimizer.FINISHERS`, an ASE Optimizer class,
        or ``"auto"`` (:data:`~sb3_crystal.relax.optimizer.DEFAULT_FINISHER`).
    :param name: name in tables (default ``"RL+<finisher>@<switch_fmax>"``, e.g. ``"RL+auto@0.1"``).
    :param kwargs: further :class:`~sb3_crystal.relax.HybridOptimizer` arguments (``patience``, ``max_energy_rise``,
        ``warm_start``, ``finisher_kwargs``, move settings); the deprecated ``f_switch`` and ``optimizer`` still work
        and warn.
    """

    def __init__(
        self,
        model: Any = None,
        switch_fmax: float = 0.1,
        finisher: str | type[Optimizer] = DEFAULT_FINISHER,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        switch_fmax = renamed_keyword(kwargs, "f_switch", "switch_fmax", switch_fmax, 0.1, type(self).__name__)
        finisher = renamed_keyword(kwargs, "optimizer", "finisher", finisher, DEFAULT_FINISHER, type(self).__name__)
        self.agent = _agent(model)
        auto = is_auto_finisher(finisher)
        chosen: str | type[Optimizer] = "auto" if auto else HybridOptimizer.resolve_finisher(finisher)
        # Only optimizers known to ignore fmax in their steps keep the one-run read-off exact ("auto" may be GPMin).
        exact = not auto and chosen in FMAX_INDEPENDENT_OPTIMIZERS
        name = name or f"RL+{'auto' if auto else chosen.__name__}@{switch_fmax:g}"  # type: ignore[union-attr]
        super().__init__(
            name,
            HybridOptimizer,
            fmax_independent=exact,
            model=self.agent,
            switch_fmax=switch_fmax,
            finisher=chosen,
            **kwargs,
        )


class LearnedCurvatureRelaxer(ASEOptimizerRelaxer):
    """:class:`~sb3_crystal.relax.LearnedCurvature` (the learned Hessian's steps in the trust region) as a relaxer.

    :param name: table name.
    :param kwargs: further :class:`~sb3_crystal.relax.LearnedCurvature` arguments (``patience``, ``max_step``,
        ``trust_region``).
    """

    def __init__(self, name: str = "LearnedCurvature", **kwargs: Any) -> None:
        from sb3_crystal.relax.learned_curvature import LearnedCurvature

        super().__init__(name, LearnedCurvature, fmax_independent=True, **kwargs)
