"""CGCNN baseline policies for TD3 and SAC (torch-geometric ``CGConv`` over a gaussian distance expansion).

Invariant to translations, lattice wrapping and permutations, but NOT rotation-equivariant: the force vector enters
as three Cartesian components and the action is three Cartesian outputs with a per-component ``tanh``. This mirrors
the reference repository's CGCNN actor/critic (``utils/model_CGCNN.py``), with a masked-mean critic pooling.

SAC (:class:`CrystalCGCNNSACPolicy`): SB3's standard squashed diagonal Gaussian, per atom and Cartesian component,
``a = tanh(u)``, ``u ~ N(mu, sigma^2)``. Its log-probability ignores padded atoms and, as for the equivariant SAC actor
(:mod:`sb3_crystal.policies.sac`), is rescaled by ``N_max / n_real``, so that SB3's ``target_entropy="auto"``
(``-3 N_max``) means -1 nat per *real* degree of freedom whatever the padding.
"""

import inspect
import math
from typing import Any

import torch as th
from stable_baselines3.common.type_aliases import PyTorchObs
from stable_baselines3.sac.policies import LOG_STD_MAX, LOG_STD_MIN
from torch import nn

from sb3_crystal.policies.common import CrystalActorBase, CrystalCriticBase, refuse_cell
from sb3_crystal.policies.graph import PeriodicGraph, masked_mean
from sb3_crystal.policies.sac import CrystalSACActorBase, CrystalSACPolicyBase, tanh_log_det
from sb3_crystal.policies.td3 import CrystalTD3PolicyBase
from sb3_crystal.policies.tfn import (
    MAX_Z,
    GraphCache,
    layout_fields,
    log_norm_basis,
    observed_vectors,
    per_atom_signals,
    safe_norm,
)


class CGCNNTrunk(nn.Module):
    """Node embedding + ``n_conv`` ``CGConv`` layers on the periodic graph.

    :param extra_node_dim: extra per-atom input features (the critic's action)
    :param r_max: cutoff radius (Å)
    :param gaussian_step: spacing (and width) of the distance gaussians (Å)
    :param hidden_dim: node feature width
    :param n_conv: number of ``CGConv`` layers
    :param species_dim: species embedding size
    :param force_basis: number of ``log10 |f|`` gaussians (also for each further vector field)
    :param vector_fields: further vector fields of the observation, ``(key, vectors per atom)``
        (:func:`~sb3_crystal.policies.tfn.layout_fields`)
    :param n_signals: invariant per-structure signals of the observation
    """

    def __init__(
        self,
        extra_node_dim: int = 0,
        r_max: float = 5.0,
        gaussian_step: float = 0.2,
        hidden_dim: int = 32,
        n_conv: int = 3,
        species_dim: int = 8,
        force_basis: int = 8,
        vector_fields: tuple[tuple[str, int], ...] = (),
        n_signals: int = 0,
    ) -> None:
        super().__init__()
        self.force_basis = force_basis
        self.vector_fields = tuple(vector_fields)
        self.n_signals = int(n_signals)
        n_fields = 1 + sum(count for _, count in self.vector_fields)
        self.gaussian_step = gaussian_step
        self.register_buffer("centers", th.arange(0.0, r_max + 1e-6, gaussian_step), persistent=False)
        self.species_embedding = nn.Embedding(MAX_Z + 1, species_dim)
        n_inputs = species_dim + n_fields * (3 + force_basis) + self.n_signals + extra_node_dim
        self.embed = nn.Sequential(nn.Linear(n_inputs, hidden_dim), nn.LeakyReLU())
        # imported here: torch-geometric pulls in torch._dynamo (seconds), which `import sb3_crystal` need not pay
        from torch_geometric.nn import CGConv

        self.convs = nn.ModuleList(CGConv(hidden_dim, dim=len(self.centers), aggr="mean") for _ in range(n_conv))

    def forward(self, obs: dict[str, th.Tensor], graph: PeriodicGraph, extra: th.Tensor | None = None) -> th.Tensor:
        """:return: (B * N, hidden_dim) node features"""
        fields = observed_vectors(obs, self.vector_fields)
        parts = [self.species_embedding(obs["species"].round().long().clamp(0, MAX_Z))]
        for field in fields:
            norm = safe_norm(field)
            parts += [field / norm.clamp_min(1e-8), log_norm_basis(norm, self.force_basis)]  # not equivariant on purpose
        if self.n_signals > 0:
            parts.append(per_atom_signals(obs, self.n_signals))
        if extra is not None:
            parts.append(extra)
        x = th.cat(parts, dim=-1).reshape(graph.num_nodes, -1)
        x = self.embed(x) * graph.node_mask.unsqueeze(-1)
        edge_index = th.stack([graph.edge_src, graph.edge_dst])
        edge_attr = th.exp(-(((graph.edge_len.unsqueeze(-1) - self.centers) / self.gaussian_step) ** 2))
        for conv in self.convs:
            x = nn.functional.leaky_relu(conv(x, edge_index, edge_attr))
        return x


#: Defaults of the CGCNN hyperparameters (plain data), read off :class:`CGCNNTrunk`'s signature (the arguments the
#: observation decides are left out).
CGCNN_DEFAULTS: dict[str, Any] = {
    name: parameter.default
    for name, parameter in inspect.signature(CGCNNTrunk.__init__).parameters.items()
    if name not in ("self", "extra_node_dim", "vector_fields", "n_signals")
}


def _resolve_cgcnn_kwargs(overrides: dict[str, Any]) -> dict[str, Any]:
    unknown = set(overrides) - set(CGCNN_DEFAULTS)
    if unknown:
        raise TypeError(f"Unknown CGCNN hyperparameters {sorted(unknown)}; known: {sorted(CGCNN_DEFAULTS)}")
    return {**CGCNN_DEFAULTS, **overrides}


class _CGCNNMixin:
    """CGCNN graph and trunk construction for crystal networks (needs ``self.cgcnn_kwargs``, ``self.graph_cache``)."""

    cgcnn_kwargs: dict[str, Any]
    graph_cache: GraphCache

    def _graph(self, obs: dict[str, th.Tensor]) -> PeriodicGraph:
        return self.graph_cache.get(obs["positions"], obs["cell"], obs["mask"], self.cgcnn_kwargs["r_max"], 0, 2).graph

    def _trunk(self, extra_node_dim: int = 0) -> CGCNNTrunk:
        vector_fields, n_signals = layout_fields(self.observation_space)  # type: ignore[attr-defined]
        return CGCNNTrunk(extra_node_dim, **self.cgcnn_kwargs, vector_fields=vector_fields, n_signals=n_signals)

    def _head(self, out_dim: int, *final: nn.Module) -> nn.Sequential:
        """Per-atom MLP head ``hidden -> hidden -> out_dim``, then ``final`` layers."""
        hidden = self.cgcnn_kwargs["hidden_dim"]
        return nn.Sequential(nn.Linear(hidden, hidden), nn.LeakyReLU(), nn.Linear(hidden, out_dim), *final)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "cgcnn_kwargs": self.cgcnn_kwargs}  # type: ignore[misc]


class CGCNNActor(_CGCNNMixin, CrystalActorBase):
    """CGCNN actor: per-atom MLP head to 3 components, ``tanh``, zero on padding.

    :param args: see :class:`~sb3_crystal.policies.td3.CrystalActorBase`
    :param cgcnn_kwargs: see :data:`CGCNN_DEFAULTS`
    :param kwargs: see :class:`~sb3_crystal.policies.td3.CrystalActorBase`
    """

    def __init__(self, *args: Any, cgcnn_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        refuse_cell(self.observation_space, "the CGCNN actor")
        self.cgcnn_kwargs = _resolve_cgcnn_kwargs(cgcnn_kwargs or {})
        self.trunk = self._trunk()
        self.head = self._head(3, nn.Tanh())

    def forward(self, obs: PyTorchObs) -> th.Tensor:
        obs = self.extract_features(obs, self.features_extractor)
        graph = self._graph(obs)
        actions = self.head(self.trunk(obs, graph)) * graph.node_mask.unsqueeze(-1)
        return actions.reshape(graph.n_structures, -1)


class CGCNNCritic(_CGCNNMixin, CrystalCriticBase):
    """Twin CGCNN critics: per-atom action concatenated to the node inputs, masked-mean pooling, MLP head.

    :param args: see :class:`~sb3_crystal.policies.td3.CrystalCriticBase`
    :param cgcnn_kwargs: see :data:`CGCNN_DEFAULTS`
    :param kwargs: see :class:`~sb3_crystal.policies.td3.CrystalCriticBase`
    """

    def __init__(self, *args: Any, cgcnn_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cgcnn_kwargs = _resolve_cgcnn_kwargs(cgcnn_kwargs or {})
        self.q_trunks = nn.ModuleList(self._trunk(extra_node_dim=3) for _ in range(self.n_critics))
        self.q_heads = nn.ModuleList(self._head(1) for _ in range(self.n_critics))

    def _q_values(
        self, features: dict[str, th.Tensor], per_atom_actions: th.Tensor, n_q: int, strain: th.Tensor | None = None
    ) -> tuple[th.Tensor, ...]:
        graph = self._graph(features)
        mask = features["mask"]
        q_values = []
        for k in range(n_q):
            nodes = self.q_trunks[k](features, graph, per_atom_actions).reshape(mask.shape[0], mask.shape[1], -1)
            q_values.append(self.q_heads[k](masked_mean(nodes, mask)))
        return tuple(q_values)


class CGCNNPolicyMixin:
    """CGCNN networks for a crystal policy (TD3 or SAC); keeps SB3's default (unfused) Adam."""

    critic_class = CGCNNCritic
    fuse_adam = False

    def _set_network_kwargs(self, **cgcnn_overrides: Any) -> None:
        self.cgcnn_kwargs = _resolve_cgcnn_kwargs(cgcnn_overrides)

    def _network_kwargs(self) -> dict[str, Any]:
        return {"cgcnn_kwargs": self.cgcnn_kwargs}

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), **self.cgcnn_kwargs}  # type: ignore[misc]


class CrystalCGCNNPolicy(CGCNNPolicyMixin, CrystalTD3PolicyBase):
    """TD3 policy with CGCNN actor/critics (non-equivariant baseline). Registered as ``"CrystalCGCNNPolicy"``.

    Parameters: see :class:`~sb3_crystal.policies.td3.CrystalTD3PolicyBase`.

    :param cgcnn_overrides: ``r_max``, ``gaussian_step``, ``hidden_dim``, ``n_conv``, ``species_dim``, ``force_basis``
    """

    actor_class = CGCNNActor


class CGCNNSACActor(_CGCNNMixin, CrystalSACActorBase):
    """Stochastic CGCNN actor: per atom, a diagonal Gaussian over the 3 Cartesian components, ``tanh``-squashed.

    The per-atom head outputs the mean and ``log_std`` of each component (plus a learned ``log_std`` offset);
    actions and log-probabilities are zero / ignored on padded atoms.

    :param args: see :class:`~sb3_crystal.policies.sac.CrystalSACActorBase`
    :param cgcnn_kwargs: see :data:`CGCNN_DEFAULTS`
    :param kwargs: see :class:`~sb3_crystal.policies.sac.CrystalSACActorBase`
    """

    def __init__(self, *args: Any, cgcnn_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cgcnn_kwargs = _resolve_cgcnn_kwargs(cgcnn_kwargs or {})
        self.trunk = self._trunk()
        self.head = self._head(6)
        self.log_std_offset = nn.Parameter(th.tensor(float(self.log_std_init)))

    def get_action_dist_params(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """:return: mean (B, N, 3), log_std (B, N, 3), mask (B, N)"""
        features = self.extract_features(obs, self.features_extractor)
        graph = self._graph(features)
        out = self.head(self.trunk(features, graph)).reshape(graph.n_structures, graph.n_max, 6)
        log_std = (out[..., 3:] + self.log_std_offset).clamp(LOG_STD_MIN, LOG_STD_MAX)
        return out[..., :3], log_std, features["mask"]

    def _squash(self, pre_squash: th.Tensor) -> th.Tensor:
        return th.tanh(pre_squash)

    def _log_prob_per_atom(self, pre_squash: th.Tensor, noise: th.Tensor, log_std: th.Tensor) -> th.Tensor:
        gaussian = -0.5 * noise**2 - log_std - 0.5 * math.log(2 * math.pi)
        return (gaussian - tanh_log_det(pre_squash)).sum(dim=-1)


class CrystalCGCNNSACPolicy(CGCNNPolicyMixin, CrystalSACPolicyBase):
    """SAC policy with a stochastic CGCNN actor and twin CGCNN critics (non-equivariant baseline).

    Registered as ``"CrystalCGCNNPolicy"`` for SAC. Parameters: see
    :class:`~sb3_crystal.policies.sac.CrystalSACPolicyBase`.

    :param cgcnn_overrides: ``r_max``, ``gaussian_step``, ``hidden_dim``, ``n_conv``, ``species_dim``, ``force_basis``
    """

    actor_class = CGCNNSACActor
