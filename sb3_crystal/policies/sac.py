"""Equivariant stochastic TFN actor for SAC.

Per atom, an isotropic Gaussian around the equivariant mean ``mu_i`` (``1x1o``) with an invariant scale
``sigma_i = exp(log_std_i)`` (``1x0e``) is sampled and squashed radially, ``y = v tanh|v| / |v|``. Both the sampling
density (isotropic) and the squash commute with rotations, so the action *distribution* is equivariant.

Log-probability (per real atom, 3D change of variables with ``r = |v|``)::

    log p(y) = log N(v; mu, sigma^2 I) - log(1 - tanh(r)^2) - 2 log(tanh(r) / r)

(radial stretch ``tanh'(r)``, two tangential stretches ``tanh(r) / r``). Padded atoms are ignored.

Target entropy: the returned log-prob is the sum over real atoms rescaled by ``N_max / n_real``, i.e. ``N_max`` times
the mean log-density per real atom. SB3's ``target_entropy="auto"`` (``-dim(A) = -3 N_max``) then asks for -1 nat per
*real* degree of freedom (-3 per atom) for every structure, independently of its padding. For a data set of a
single size this is SB3's usual heuristic, with the temperature rescaled by the constant ``N_max / n_real``.
"""

import math
from typing import Any, ClassVar

import torch as th
from stable_baselines3.common.type_aliases import PyTorchObs
from stable_baselines3.sac.policies import LOG_STD_MAX, LOG_STD_MIN, SACPolicy
from torch import nn
from torch.nn import functional as F

from sb3_crystal.policies.common import (
    CrystalActorBase,
    CrystalGraphMixin,
    CrystalPolicyMixin,
    TFNPolicyMixin,
    refuse_cell,
    resolve_tfn_kwargs,
)
from sb3_crystal.policies.tfn import radial_squash, safe_norm


def tanh_log_det(u: th.Tensor) -> th.Tensor:
    """``log(1 - tanh(u)^2)``, elementwise, stable for large ``|u|``."""
    return 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))


def radial_squash_log_det(v: th.Tensor) -> th.Tensor:
    """``log |det d squash(v) / dv|`` per 3-vector, numerically stable at 0 and for large ``|v|``.

    :param v: (..., 3)
    :return: (...)
    """
    r = safe_norm(v).squeeze(-1)
    return tanh_log_det(r) + 2.0 * th.log(th.tanh(r) / r)


def masked_log_prob(per_atom: th.Tensor, mask: th.Tensor) -> th.Tensor:
    """Sum of per-atom log-densities over real atoms, rescaled by ``N_max / n_real`` (see the module docstring).

    :param per_atom: (B, N) log-density of each atom's action
    :param mask: (B, N) 1 real / 0 padding
    :return: (B,)
    """
    per_atom = per_atom * mask
    return per_atom.sum(dim=1) * (per_atom.shape[1] / mask.sum(dim=1).clamp_min(1.0))


class CrystalSACActorBase(CrystalActorBase):
    """What every stochastic crystal actor shares: per atom, a Gaussian sample ``mean + std * noise``, squashed into
    the action bound, zero on padding; the log-probability is masked and rescaled by :func:`masked_log_prob`.

    Subclasses build their network (and ``log_std_offset``) after calling this constructor and implement
    :meth:`get_action_dist_params`, :meth:`_squash` and :meth:`_log_prob_per_atom`.

    :param args: see :class:`~sb3_crystal.policies.common.CrystalActorBase`
    :param log_std_init: initial value of the learned ``log_std`` offset
    :param use_sde: must be False (gSDE is not supported)
    :param use_expln: ignored (passed by ``SACPolicy``)
    :param clip_mean: ignored (passed by ``SACPolicy``; the squash bounds the mean)
    :param kwargs: see :class:`~sb3_crystal.policies.common.CrystalActorBase`
    """

    def __init__(
        self,
        *args: Any,
        log_std_init: float = -1.0,
        use_sde: bool = False,
        use_expln: bool = False,
        clip_mean: float = 2.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        refuse_cell(self.observation_space, f"the SAC actor {type(self).__name__}")
        if use_sde:
            raise ValueError(f"gSDE is not supported by the crystal SAC actors ({type(self).__name__})")
        self.log_std_init = log_std_init
        self.use_sde = False

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "log_std_init": self.log_std_init}

    def get_action_dist_params(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """:return: mean (B, N, 3), log_std (B, N, 1 or 3), mask (B, N)"""
        raise NotImplementedError

    def _squash(self, pre_squash: th.Tensor) -> th.Tensor:
        """Per-atom squash of the (B, N, 3) Gaussian sample into the action bound."""
        raise NotImplementedError

    def _log_prob_per_atom(self, pre_squash: th.Tensor, noise: th.Tensor, log_std: th.Tensor) -> th.Tensor:
        """:return: (B, N) log-density of each atom's squashed action"""
        raise NotImplementedError

    def _sample(self, obs: PyTorchObs, deterministic: bool) -> tuple[th.Tensor, th.Tensor, th.Tensor, th.Tensor, th.Tensor]:
        mean, log_std, mask = self.get_action_dist_params(obs)
        noise = th.zeros_like(mean) if deterministic else th.randn_like(mean)
        pre_squash = mean + log_std.exp() * noise
        actions = self._squash(pre_squash) * mask.unsqueeze(-1)
        return actions.reshape(actions.shape[0], -1), pre_squash, noise, log_std, mask

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self._sample(obs, deterministic)[0]

    def action_log_prob(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:
        """Sample actions and their log-probability (masked, rescaled to ``N_max`` atoms, see the module docstring).

        :return: actions (B, 3 * N_max), log_prob (B,)
        """
        actions, pre_squash, noise, log_std, mask = self._sample(obs, deterministic=False)
        return actions, masked_log_prob(self._log_prob_per_atom(pre_squash, noise, log_std), mask)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self(observation, deterministic)


class TFNSACActor(CrystalGraphMixin, CrystalSACActorBase):
    """Stochastic equivariant actor: per atom ``mu`` (``1x1o``) and ``log_std`` (``1x0e``) from one TFN.

    :param args: see :class:`CrystalSACActorBase`
    :param tfn_kwargs: TFN hyperparameters
    :param kwargs: see :class:`CrystalSACActorBase`
    """

    def __init__(self, *args: Any, tfn_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tfn_kwargs = resolve_tfn_kwargs(**(tfn_kwargs or {}))
        self.encoder = self._make_encoder()
        self.tfn = self._make_tfn(self.encoder.irreps_node_input, "1x0e+1x1o")
        self.log_std_offset = nn.Parameter(th.tensor(float(self.log_std_init)))

    def get_action_dist_params(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """:return: mean (B, N, 3), log_std (B, N, 1), mask (B, N)"""
        features = self.extract_features(obs, self.features_extractor)
        out = self.tfn(self.encoder(features), self._edges(features))
        n_structures = features["mask"].shape[0]
        log_std = (out[:, :1] + self.log_std_offset).clamp(LOG_STD_MIN, LOG_STD_MAX)
        return out[:, 1:].reshape(n_structures, -1, 3), log_std.reshape(n_structures, -1, 1), features["mask"]

    def _squash(self, pre_squash: th.Tensor) -> th.Tensor:
        return radial_squash(pre_squash)

    def _log_prob_per_atom(self, pre_squash: th.Tensor, noise: th.Tensor, log_std: th.Tensor) -> th.Tensor:
        gaussian = -0.5 * (noise**2).sum(-1) - 3.0 * log_std.squeeze(-1) - 1.5 * math.log(2 * math.pi)
        return gaussian - radial_squash_log_det(pre_squash)


class CrystalSACPolicyBase(CrystalPolicyMixin, SACPolicy):
    """SAC policy whose actor and twin critics are crystal networks, set up by a network mixin
    (:class:`~sb3_crystal.policies.td3.TFNPolicyMixin` or :class:`~sb3_crystal.policies.cgcnn.CGCNNPolicyMixin`).

    :param observation_space: crystal Dict observation space
    :param action_space: ``Box(-1, 1, (3 * N_max,))``
    :param lr_schedule: learning rate schedule
    :param net_arch: ignored
    :param activation_fn: ignored
    :param use_sde: must be False
    :param log_std_init: initial ``log_std`` offset
    :param use_expln: ignored
    :param clip_mean: ignored (the squash bounds the mean)
    :param features_extractor_class: defaults to :class:`~sb3_crystal.policies.td3.PassThroughExtractor`
    :param features_extractor_kwargs: its kwargs
    :param normalize_images: must stay False
    :param optimizer_class: optimizer
    :param optimizer_kwargs: optimizer kwargs
    :param n_critics: number of critics
    :param share_features_extractor: as in SB3
    :param network_kwargs: the network hyperparameters (plain data, YAML-friendly), see the network mixin
    """

    sb3_defaults: ClassVar[dict[str, Any]] = {**CrystalPolicyMixin.sb3_defaults, "log_std_init": -1.0}


class CrystalTFNSACPolicy(TFNPolicyMixin, CrystalSACPolicyBase):
    """SAC policy with an equivariant stochastic TFN actor and invariant twin TFN critics.

    Registered as ``"CrystalTFNPolicy"`` for SAC. TFN hyperparameters as in
    :class:`~sb3_crystal.policies.td3.CrystalTFNPolicy`; other parameters: see :class:`CrystalSACPolicyBase`.

    :param tfn_preset: ``"small"`` (default) or ``"paper"``
    :param tfn_overrides: explicit TFN hyperparameters
    """

    actor_class = TFNSACActor
