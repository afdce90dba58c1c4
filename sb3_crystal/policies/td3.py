"""E(3)-equivariant TFN actor and the TD3 policies on padded crystal observations.

The actor maps the observation to one ``1x1o`` vector per atom (a displacement direction and size), radially squashed
into the unit ball, zero on padding and flattened to the ``(B, 3 * N_max)`` action SB3 expects. The twin critic
(:class:`~sb3_crystal.policies.common.TFNCritic`) and everything else the crystal policies share live in
:mod:`sb3_crystal.policies.common`, whose names this module re-exports.
"""

from typing import Any

import torch as th
from stable_baselines3.common.type_aliases import PyTorchObs
from stable_baselines3.td3.policies import TD3Policy

from sb3_crystal.policies.common import (
    OBS_KEYS,
    TFN_DEFAULTS,
    CrystalActorBase,
    CrystalCriticBase,
    CrystalGraphMixin,
    CrystalPolicyMixin,
    PassThroughExtractor,
    TFNCritic,
    TFNPolicyMixin,
    check_crystal_spaces,
    fused_adam_kwargs,
    has_cell,
    resolve_tfn_kwargs,
)
from sb3_crystal.policies.graph import masked_mean
from sb3_crystal.policies.tfn import radial_squash, tensor_from_irreps, tensor_squash, voigt_from_tensor

__all__ = [
    "OBS_KEYS",
    "TFN_DEFAULTS",
    "CrystalActorBase",
    "CrystalCriticBase",
    "CrystalGraphMixin",
    "CrystalPolicyMixin",
    "CrystalTD3PolicyBase",
    "CrystalTFNPolicy",
    "PassThroughExtractor",
    "TFNActor",
    "TFNCritic",
    "TFNPolicyMixin",
    "check_crystal_spaces",
    "fused_adam_kwargs",
    "resolve_tfn_kwargs",
]


class TFNActor(CrystalGraphMixin, CrystalActorBase):
    """Deterministic equivariant actor: one ``1x1o`` vector per atom, ``v * tanh|v| / |v|``, zero on padding.

    For a cell layout (``CrystalRelaxEnv(cell=True)``) each atom also outputs ``1x0e+1x2e``; their mean over the
    atoms is a symmetric tensor, squashed into the unit ball (:func:`~sb3_crystal.policies.tfn.tensor_squash`), whose
    6 numbers end the action: the strain step. Rotating the crystal rotates it as R T Rᵀ.

    :param args: see :class:`CrystalActorBase`
    :param tfn_kwargs: TFN hyperparameters (see :func:`resolve_tfn_kwargs`)
    :param kwargs: see :class:`CrystalActorBase`
    """

    def __init__(self, *args: Any, tfn_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tfn_kwargs = resolve_tfn_kwargs(**(tfn_kwargs or {}))
        self.encoder = self._make_encoder()
        self.cell = has_cell(self.observation_space)
        self.tfn = self._make_tfn(self.encoder.irreps_node_input, "1x1o+1x0e+1x2e" if self.cell else "1x1o")

    def displacement(self, obs: dict[str, th.Tensor]) -> th.Tensor:
        """Unsquashed per-atom ``1x1o`` output, shape (B, N_max, 3)."""
        return self._outputs(obs)[0]

    def _outputs(self, obs: dict[str, th.Tensor]) -> tuple[th.Tensor, th.Tensor | None]:
        """Per-atom vectors (B, N, 3) and, for a cell layout, the pooled ``1x0e+1x2e`` strain irreps (B, 6)."""
        n_structures = obs["positions"].shape[0]
        out = self.tfn(self.encoder(obs), self._edges(obs)).reshape(n_structures, obs["mask"].shape[1], -1)
        if not self.cell:
            return out, None  # slots from the observation: any padded size works
        return out[..., :3], masked_mean(out[..., 3:], obs["mask"])

    def forward(self, obs: PyTorchObs) -> th.Tensor:
        obs = self.extract_features(obs, self.features_extractor)
        vectors, strain = self._outputs(obs)
        actions = (radial_squash(vectors) * obs["mask"].unsqueeze(-1)).reshape(vectors.shape[0], -1)
        if strain is None:
            return actions
        return th.cat([actions, voigt_from_tensor(tensor_from_irreps(tensor_squash(strain)))], dim=-1)


class CrystalTD3PolicyBase(CrystalPolicyMixin, TD3Policy):
    """TD3 policy whose actor and twin critics are crystal networks, set up by a network mixin
    (:class:`TFNPolicyMixin` or :class:`~sb3_crystal.policies.cgcnn.CGCNNPolicyMixin`).

    :param observation_space: crystal Dict observation space (``positions, cell, forces, species, mask``)
    :param action_space: ``Box(-1, 1, (3 * N_max,))``
    :param lr_schedule: learning rate schedule
    :param net_arch: ignored (TD3Policy signature)
    :param activation_fn: ignored (TD3Policy signature)
    :param features_extractor_class: defaults to :class:`PassThroughExtractor`
    :param features_extractor_kwargs: its kwargs
    :param normalize_images: must stay False
    :param optimizer_class: optimizer
    :param optimizer_kwargs: optimizer kwargs
    :param n_critics: number of critics
    :param share_features_extractor: as in SB3
    :param network_kwargs: the network hyperparameters (plain data, YAML-friendly), see the network mixin
    """


class CrystalTFNPolicy(TFNPolicyMixin, CrystalTD3PolicyBase):
    """TD3 policy with an E(3)-equivariant TFN actor and invariant twin TFN critics for crystal relaxation.

    All TFN hyperparameters are plain data (YAML-friendly ``policy_kwargs``); start from a preset and override:
    ``policy_kwargs=dict(tfn_preset="paper")`` or ``dict(mul=16, lmax=2)``. Other parameters: see
    :class:`CrystalTD3PolicyBase`.

    :param tfn_preset: ``"small"`` (default, cheap on CPU) or ``"paper"``
    :param tfn_overrides: explicit TFN hyperparameters, see :data:`TFN_DEFAULTS` (``r_max``, ``n_layers``, ``mul``,
        ``lmax``, ``full_parity``, ``num_basis``, ``radial_neurons``, ``tp_mode``, ``avg_num_neighbors``,
        ``irreps_node_hidden``, ``max_neighbors``, ``species_dim``, ``force_basis``, ``action_basis``)
    """

    actor_class = TFNActor
