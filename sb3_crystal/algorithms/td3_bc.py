"""``CrystalTD3BC``: TD3 whose actor update also keeps close to demonstrated moves (TD3+BC).

A cloned actor (:func:`~sb3_crystal.exploration.demonstrations.pretrain_actor`) followed by plain TD3 can collapse:
the untrained critics' gradient pulls the actor away from the cloned moves before the critics know better
(measured in docs/results.md, *TD3+BC keeps the cloned actor*). TD3+BC (Fujimoto & Gu, "A minimalist approach to offline
reinforcement learning", NeurIPS 2021) adds a regression term to the actor loss,

    loss = −λ · mean Q₁(s, π(s)) + mean ‖π(s_d) − a_d‖²,    λ = α / mean |Q₁(s, π(s))|,

so the RL term can only move the actor as far as it improves Q relative to the scale of Q. Here the demonstrations
(s_d, a_d) are a separate set, the oracle's moves back to the training minima (:class:`ReferenceMoves`), and the Q
term uses the replay buffer as in TD3: the agent fine-tunes online from its cloned start.

The default α is 0.02, not the paper's 2.5: a cloned relaxer must stay accurate to about 0.01 in action units near
the minimum, far tighter than the behaviour data of offline RL, so the cloning term must dominate. The α scan behind
this default (``pipelines/train_b2.py --bc-alpha``) is in docs/results.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.utils import polyak_update
from torch.nn import functional as F

from sb3_crystal.algorithms.td3 import CrystalTD3
from sb3_crystal.envs import CrystalRelaxEnv
from sb3_crystal.exploration.demonstrations import (
    REFERENCE_MOVES_SEED,
    ReferenceMoves,
    action_regression_loss,
    check_action_size,
    pretrain_actor,
    reference_moves,
)


class CrystalTD3BC(CrystalTD3):
    """:class:`CrystalTD3` with a behaviour-cloning term in the actor loss (TD3+BC, see the module docstring).

    The demonstrations are not saved with the model (they can be large and are rebuilt from the environment):
    after :meth:`load`, call :meth:`set_demonstrations` before training on.

    :param policy: policy name (``"CrystalTFNPolicy"``, ...) or class.
    :param env: environment or id.
    :param demonstrations: observations and actions to stay close to, from
        :func:`~sb3_crystal.exploration.demonstrations.reference_moves`, or a number of such samples to draw from a copy of the
        training environment (a :class:`~sb3_crystal.envs.CrystalRelaxEnv`; seeds ``REFERENCE_MOVES_SEED + seed`` on, apart
        from the training episodes); required before the first gradient step.
    :param pretrain_epochs: first regress the actor onto the demonstrations for this many epochs
        (:func:`~sb3_crystal.exploration.demonstrations.pretrain_actor`): clone, then fine-tune.
    :param bc_alpha: α, the weight of the normalised Q term (0 is pure behaviour cloning; the TD3+BC paper used 2.5,
        which undoes a cloned relaxer here).
    :param bc_batch_size: demonstrations per actor update (default: the replay batch size).
    :param kwargs: the arguments of :class:`CrystalTD3` (``state_noise``, ``greedy``) and :class:`stable_baselines3.TD3`.
    """

    def __init__(
        self,
        policy: Any,
        env: Any,
        *args: Any,
        demonstrations: ReferenceMoves | int | None = None,
        pretrain_epochs: int = 0,
        bc_alpha: float = 0.02,
        bc_batch_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        if not (isinstance(bc_alpha, (int, float)) and np.isfinite(bc_alpha) and bc_alpha >= 0):
            raise ValueError(f"bc_alpha must be a finite number ≥ 0, got {bc_alpha!r}")
        if bc_batch_size is not None and not (isinstance(bc_batch_size, int) and bc_batch_size >= 1):
            raise ValueError(f"bc_batch_size must be a positive integer or None, got {bc_batch_size!r}")
        self.bc_alpha = float(bc_alpha)
        self.bc_batch_size = bc_batch_size
        if not (isinstance(pretrain_epochs, int) and pretrain_epochs >= 0):
            raise ValueError(f"pretrain_epochs must be an integer ≥ 0, got {pretrain_epochs!r}")
        if pretrain_epochs and demonstrations is None:
            raise ValueError("pretrain_epochs needs demonstrations")
        self._demonstrations: dict[str, Any] | None = None
        super().__init__(policy, env, *args, **kwargs)
        if isinstance(demonstrations, (int, np.integer)) and not isinstance(demonstrations, bool):
            demonstrations = self.draw_demonstrations(int(demonstrations))
        if demonstrations is not None:
            self.set_demonstrations(demonstrations)
            if pretrain_epochs:
                pretrain_actor(self, demonstrations, epochs=pretrain_epochs, seed=self.seed or 0, verbose=self.verbose)

    def draw_demonstrations(self, n_samples: int) -> ReferenceMoves:
        """``n_samples`` reference moves from a fresh copy of the training environment (its recorded arguments).

        :raises ValueError: the model was not built on a :class:`~sb3_crystal.envs.CrystalRelaxEnv`.
        """
        settings = getattr(self, "crystal_env_kwargs", None)
        if not settings:
            raise ValueError(
                "demonstrations=<number> draws reference moves from the training environment, which must be a "
                "CrystalRelaxEnv; pass ReferenceMoves instead"
            )
        env = CrystalRelaxEnv(**settings)
        try:
            return reference_moves(env, n_samples, seed=REFERENCE_MOVES_SEED + (self.seed or 0))
        finally:
            env.close()

    def set_demonstrations(self, demonstrations: ReferenceMoves) -> None:
        """Use ``demonstrations`` for the behaviour-cloning term from now on.

        :raises ValueError: actions of another size than the model's action space, or no samples.
        """
        if len(demonstrations) == 0:
            raise ValueError("demonstrations hold no samples")
        check_action_size(self, demonstrations)
        self._demonstrations = {
            "observations": {
                key: th.as_tensor(value, device=self.device) for key, value in demonstrations.observations.items()
            },
            "actions": th.as_tensor(demonstrations.actions, device=self.device),
        }

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_demonstrations"]

    def _behaviour_cloning_loss(self, batch_size: int) -> th.Tensor:
        assert self._demonstrations is not None
        actions = self._demonstrations["actions"]
        index = th.randint(len(actions), (batch_size,), device=self.device)
        observations = {key: value[index] for key, value in self._demonstrations["observations"].items()}
        return action_regression_loss(self.actor(observations), actions[index])

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        if self._demonstrations is None:
            raise RuntimeError("CrystalTD3BC needs demonstrations: pass demonstrations= or call set_demonstrations()")
        assert self.replay_buffer is not None
        self.policy.set_training_mode(True)
        self._update_learning_rate([self.actor.optimizer, self.critic.optimizer])
        actor_losses, critic_losses, bc_losses, q_weights = [], [], [], []
        for _ in range(gradient_steps):
            self._n_updates += 1
            replay = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
            discounts = replay.discounts if replay.discounts is not None else self.gamma
            with th.no_grad():
                noise = replay.actions.clone().normal_(0, self.target_policy_noise)
                noise = noise.clamp(-self.target_noise_clip, self.target_noise_clip)
                next_actions = (self.actor_target(replay.next_observations) + noise).clamp(-1, 1)
                next_q = th.cat(self.critic_target(replay.next_observations, next_actions), dim=1)
                next_q, _ = th.min(next_q, dim=1, keepdim=True)
                target_q = replay.rewards + (1 - replay.dones) * discounts * next_q
            critic_loss = sum(F.mse_loss(q, target_q) for q in self.critic(replay.observations, replay.actions))
            assert isinstance(critic_loss, th.Tensor)
            critic_losses.append(critic_loss.item())
            self.critic.optimizer.zero_grad()
            critic_loss.backward()
            self.critic.optimizer.step()

            if self._n_updates % self.policy_delay == 0:
                q = self.critic.q1_forward(replay.observations, self.actor(replay.observations))
                # λ normalises Q's scale, so α means the same whatever the reward's units and the return's size.
                q_weight = self.bc_alpha / q.abs().mean().detach().clamp_min(1e-6)
                bc_loss = self._behaviour_cloning_loss(self.bc_batch_size or batch_size)
                actor_loss = -q_weight * q.mean() + bc_loss
                actor_losses.append(actor_loss.item())
                bc_losses.append(bc_loss.item())
                q_weights.append(float(q_weight))
                self.actor.optimizer.zero_grad()
                actor_loss.backward()
                self.actor.optimizer.step()
                polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)
                polyak_update(self.actor.parameters(), self.actor_target.parameters(), self.tau)
                polyak_update(self.critic_batch_norm_stats, self.critic_batch_norm_stats_target, 1.0)
                polyak_update(self.actor_batch_norm_stats, self.actor_batch_norm_stats_target, 1.0)

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/critic_loss", np.mean(critic_losses))
        if actor_losses:
            self.logger.record("train/actor_loss", np.mean(actor_losses))
            self.logger.record("train/bc_loss", np.mean(bc_losses))
            self.logger.record("train/q_weight", np.mean(q_weights))
