"""``RewardCurriculum``: pretrain on a smooth reward, then switch to ``step`` and lower ε stage by stage."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

from sb3_crystal.envs.rewards import check_reward

#: The paper's recipe: pretrain with hybrid (1, 0, 0.5), then ``step`` with ε lowered 0.1 → 0.01 eV/Å.
PAPER_STAGES: list[dict[str, Any]] = [
    {"reward": "hybrid", "reward_weights": [1.0, 0.0, 0.5], "epsilon": 0.1, "target_steps": 30},
    {"reward": "step", "epsilon": 0.1, "target_steps": 20},
    {"reward": "step", "epsilon": 0.05, "target_steps": 25},
    {"reward": "step", "epsilon": 0.02, "target_steps": 30},
    {"reward": "step", "epsilon": 0.01},
]


class RewardCurriculum(BaseCallback):
    """Stages of (reward, weights, ε, β), advanced when evaluation shows the agent relaxes fast enough.

    Use it as ``callback_after_eval`` of a :class:`~sb3_crystal.callbacks.RelaxationEvalCallback`. A stage
    is plain data: ``{"reward": "step", "epsilon": 0.05, "target_steps": 25, "min_success": 0.9}`` (optional
    ``reward_weights`` and ``beta``). After an evaluation where ⟨L⟩ ≤ ``target_steps`` and the success rate
    ≥ ``min_success`` (default 0.9), the next stage's settings go to every training environment through
    ``env_method`` (so ``SubprocVecEnv`` workers too); the last stage has no target. The stage index is kept
    on the model (``model.curriculum_stage``), so it is saved with it and restored on resume.

    :param stages: the stages, first to last (default :data:`PAPER_STAGES`).
    :param verbose: 1 prints each switch.
    """

    def __init__(self, stages: Sequence[dict[str, Any]] | None = None, verbose: int = 0) -> None:
        super().__init__(verbose=verbose)
        self.stages = [dict(stage) for stage in (PAPER_STAGES if stages is None else stages)]
        if not self.stages:
            raise ValueError("RewardCurriculum needs at least one stage")
        for i, stage in enumerate(self.stages):
            unknown = set(stage) - {"reward", "reward_weights", "epsilon", "beta", "target_steps", "min_success"}
            if unknown or "reward" not in stage or "epsilon" not in stage:
                raise ValueError(f"curriculum stage {i} needs 'reward' and 'epsilon' (unknown keys: {sorted(unknown)})")
            check_reward(stage["reward"], stage.get("reward_weights", (1.0, 0.0, 0.5)))
            if not float(stage["epsilon"]) > 0:
                raise ValueError(f"curriculum stage {i}: epsilon must be > 0, got {stage['epsilon']}")

    @property
    def stage(self) -> int:
        """Index of the current stage."""
        return int(getattr(self.model, "curriculum_stage", 0))

    def _init_callback(self) -> None:
        self.model.curriculum_stage = min(self.stage, len(self.stages) - 1)  # type: ignore[attr-defined]
        self.apply(self.stage)

    def apply(self, index: int) -> None:
        """Send stage ``index``'s settings to every training environment and log the stage."""
        stage = self.stages[index]
        self.training_env.env_method("set_reward", stage["reward"], stage.get("reward_weights"))
        self.training_env.env_method("set_epsilon", float(stage["epsilon"]))
        if "beta" in stage:
            self.training_env.env_method("set_beta", float(stage["beta"]))
        self.model.curriculum_stage = index  # type: ignore[attr-defined]
        self.logger.record("curriculum/stage", index)
        self.logger.record("curriculum/epsilon", float(stage["epsilon"]))

    def _on_step(self) -> bool:
        metrics = getattr(self.parent, "last_metrics", {}).get("eval")
        index = self.stage
        self.logger.record("curriculum/stage", index)
        stage = self.stages[index]
        if metrics is None or index + 1 >= len(self.stages) or "target_steps" not in stage:
            return True
        if metrics.relaxation_steps <= stage["target_steps"] and metrics.success_rate >= stage.get("min_success", 0.9):
            self.apply(index + 1)
            if self.verbose:
                print(f"Curriculum: stage {index} → {index + 1}: {self.stages[index + 1]}")
        return True
