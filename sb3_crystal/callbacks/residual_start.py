"""Start a residual agent at its classical proposal: the actor's output layer zeroed before the first step."""

from __future__ import annotations

import torch as th
from stable_baselines3.common.callbacks import BaseCallback

__all__ = ["ZeroActionStart"]


class ZeroActionStart(BaseCallback):
    """Zero the output layer of a TFN actor (and its target) when training starts from step 0.

    With ``action_mode="residual"`` a zero action is the environment's L-BFGS proposal, so the agent starts as
    that classical step and RL only has to learn corrections that pay (the recipe of
    ``benchmarks/train_history_agent.py``). A resumed run (``num_timesteps > 0``) is left alone. In an rl-zoo
    YAML: ``callback: [sb3_crystal.callbacks.residual_start.ZeroActionStart]``.
    """

    def _on_training_start(self) -> None:
        if self.model.num_timesteps > 0:
            return
        actor = getattr(self.model, "actor", None)
        output = getattr(getattr(actor, "tfn", None), "output", None)
        if output is None:
            raise TypeError(f"ZeroActionStart needs a TFN actor (CrystalTFNPolicy with TD3), not {type(actor).__name__}")
        with th.no_grad():
            for parameter in [*output.lin2.parameters(), *output.self_connection.parameters()]:
                parameter.zero_()
        target = getattr(self.model, "actor_target", None)
        if target is not None:
            target.load_state_dict(actor.state_dict())

    def _on_step(self) -> bool:
        return True
