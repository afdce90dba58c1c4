"""CGCNN baseline policies for TD3 and SAC (torch-geometric ``CGConv`` over a gaussian distance expansion).

Invariant to translations, lattice wrapping and permutations, but NOT rotation-equivariant: the force vector enters
as three Cartesian components and the action is three Cartesian outputs with a per-component ``tanh``. This mirrors
the reference repository's CGCNN actor/critic (``utils/model_CGCNN.py``), with a masked-mean critic pooling.

SAC (:class:`CrystalCGCNNSACPolicy`): SB3's standard squashed diagonal Gaussian, per atom and Cartesian component,
``a = tanh(u)``, ``u ~ N(mu, sigma^2)``. Its log-probability ignores padded atoms and, as for the equivariant SAC actor
(:mod:`sb3_crystal.policies.sac`), is rescaled by ``N_max / n_real``, so that SB3's ``target_entropy="auto"``
(``-3 N_max``) means -1 nat per *real* degree of freedom whatever the padding.
"""

import math
from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BaseModel, BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.sac.policies import LOG_STD_MAX, LOG_STD_MIN, SACPolicy
from stable_baselines3.td3.policies import TD3Policy
from torch import nn
from torch.nn import functional as F

from sb3_crystal.policies.graph import PeriodicGraph, masked_mean
from sb3_crystal.policies.td3 import PassThroughExtractor, check_crystal_spaces
from sb3_crystal.policies.tfn import MAX_Z, GraphCache, log_norm_basis, safe_norm

#: Defaults of the CGCNN hyperparameters (plain data).
CGCNN_DEFAULTS: dict[str, Any] = dict(r_max=5.0, gaussian_step=0.2, hidden_dim=32, n_conv=3, species_dim=8, force_basis=8)


def _resolve_cgcnn_kwargs(overrides: dict[str, Any]) -> dict[str, Any]:
    unknown = set(overrides) - set(CGCNN_DEFAULTS)
    if unknown:
        raise TypeError(f"Unknown CGCNN hyperparameters {sorted(unknown)}; known: {sorted(CGCNN_DEFAULTS)}")
    return {**CGCNN_DEFAULTS, **overrides}


class CGCNNTrunk(nn.Module):
    """Node embedding + ``n_conv`` ``CGConv`` layers on the periodic graph.

    :param extra_node_dim: extra per-atom input features (the critic's action)
    :param r_max: cutoff radius (Å)
    :param gaussian_step: spacing (and width) of the distance gaussians (Å)
    :param hidden_dim: node feature width
    :param n_conv: number of ``CGConv`` layers
    :param species_dim: species embedding size
    :param force_basis: number of ``log10 |f|`` gaussians
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
    ) -> None:
        super().__init__()
        self.force_basis = force_basis
        self.gaussian_step = gaussian_step
        self.register_buffer("centers", th.arange(0.0, r_max + 1e-6, gaussian_step), persistent=False)
        self.species_embedding = nn.Embedding(MAX_Z + 1, species_dim)
        self.embed = nn.Sequential(nn.Linear(species_dim + 3 + force_basis + extra_node_dim, hidden_dim), nn.LeakyReLU())
        # imported here: torch-geometric pulls in torch._dynamo (seconds), which `import sb3_crystal` need not pay
        from torch_geometric.nn import CGConv

        self.convs = nn.ModuleList(CGConv(hidden_dim, dim=len(self.centers), aggr="mean") for _ in range(n_conv))

    def forward(self, obs: dict[str, th.Tensor], graph: PeriodicGraph, extra: th.Tensor | None = None) -> th.Tensor:
        """:return: (B * N, hidden_dim) node features"""
        forces = obs["forces"]
        f_norm = safe_norm(forces)
        parts = [
            self.species_embedding(obs["species"].round().long().clamp(0, MAX_Z)),
            forces / f_norm.clamp_min(1e-8),  # Cartesian components: not equivariant on purpose
            log_norm_basis(f_norm, self.force_basis),
        ]
        if extra is not None:
            parts.append(extra)
        x = th.cat(parts, dim=-1).reshape(graph.num_nodes, -1)
        x = self.embed(x) * graph.node_mask.unsqueeze(-1)
        edge_index = th.stack([graph.edge_src, graph.edge_dst])
        edge_attr = th.exp(-(((graph.edge_len.unsqueeze(-1) - self.centers) / self.gaussian_step) ** 2))
        for conv in self.convs:
            x = nn.functional.leaky_relu(conv(x, edge_index, edge_attr))
        return x


class _CGCNNMixin:
    cgcnn_kwargs: dict[str, Any]
    graph_cache: GraphCache

    def _graph(self, obs: dict[str, th.Tensor]) -> PeriodicGraph:
        return self.graph_cache.get(obs["positions"], obs["cell"], obs["mask"], self.cgcnn_kwargs["r_max"], 0, 2).graph

    def _trunk(self, extra_node_dim: int = 0) -> CGCNNTrunk:
        return CGCNNTrunk(extra_node_dim, **self.cgcnn_kwargs)


class CGCNNActor(_CGCNNMixin, BasePolicy):
    """CGCNN actor: per-atom MLP head to 3 components, ``tanh``, zero on padding.

    :param observation_space: crystal Dict observation space
    :param action_space: ``Box(-1, 1, (3 * N_max,))``
    :param features_extractor: a :class:`~sb3_crystal.policies.td3.PassThroughExtractor`
    :param features_dim: ignored
    :param normalize_images: must stay False
    :param graph_cache: graph cache shared with the other networks of the policy
    :param cgcnn_kwargs: see :data:`CGCNN_DEFAULTS`
    :param net_arch: ignored
    :param activation_fn: ignored
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Box,
        features_extractor: BaseFeaturesExtractor,
        features_dim: int = 1,
        normalize_images: bool = False,
        graph_cache: GraphCache | None = None,
        cgcnn_kwargs: dict[str, Any] | None = None,
        net_arch: Any = None,
        activation_fn: Any = None,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
            squash_output=True,
        )
        self.n_max = check_crystal_spaces(observation_space, action_space)
        self.features_dim = features_dim
        self.cgcnn_kwargs = {**CGCNN_DEFAULTS, **(cgcnn_kwargs or {})}
        self.graph_cache = graph_cache if graph_cache is not None else GraphCache()
        self.trunk = self._trunk()
        hidden = self.cgcnn_kwargs["hidden_dim"]
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.LeakyReLU(), nn.Linear(hidden, 3), nn.Tanh())

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(features_dim=self.features_dim, features_extractor=self.features_extractor, cgcnn_kwargs=self.cgcnn_kwargs)
        return data

    def forward(self, obs: PyTorchObs) -> th.Tensor:
        obs = self.extract_features(obs, self.features_extractor)
        graph = self._graph(obs)
        actions = self.head(self.trunk(obs, graph)) * graph.node_mask.unsqueeze(-1)
        return actions.reshape(graph.n_structures, -1)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self(observation)


class CGCNNCritic(_CGCNNMixin, BaseModel):
    """Twin CGCNN critics: per-atom action concatenated to the node inputs, masked-mean pooling, MLP head.

    :param observation_space: crystal Dict observation space
    :param action_space: ``Box(-1, 1, (3 * N_max,))``
    :param features_extractor: a :class:`~sb3_crystal.policies.td3.PassThroughExtractor`
    :param features_dim: ignored
    :param normalize_images: must stay False
    :param n_critics: number of Q networks
    :param share_features_extractor: as in SB3
    :param graph_cache: graph cache shared with the other networks of the policy
    :param cgcnn_kwargs: see :data:`CGCNN_DEFAULTS`
    :param net_arch: ignored
    :param activation_fn: ignored
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Box,
        features_extractor: BaseFeaturesExtractor,
        features_dim: int = 1,
        normalize_images: bool = False,
        n_critics: int = 2,
        share_features_extractor: bool = False,
        graph_cache: GraphCache | None = None,
        cgcnn_kwargs: dict[str, Any] | None = None,
        net_arch: Any = None,
        activation_fn: Any = None,
    ) -> None:
        super().__init__(
            observation_space, action_space, features_extractor=features_extractor, normalize_images=normalize_images
        )
        self.n_max = check_crystal_spaces(observation_space, action_space)
        self.features_dim = features_dim
        self.n_critics = n_critics
        self.share_features_extractor = share_features_extractor
        self.cgcnn_kwargs = {**CGCNN_DEFAULTS, **(cgcnn_kwargs or {})}
        self.graph_cache = graph_cache if graph_cache is not None else GraphCache()
        hidden = self.cgcnn_kwargs["hidden_dim"]
        self.q_trunks = nn.ModuleList(self._trunk(extra_node_dim=3) for _ in range(n_critics))
        self.q_heads = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden, hidden), nn.LeakyReLU(), nn.Linear(hidden, 1)) for _ in range(n_critics)
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            features_dim=self.features_dim,
            features_extractor=self.features_extractor,
            n_critics=self.n_critics,
            share_features_extractor=self.share_features_extractor,
            cgcnn_kwargs=self.cgcnn_kwargs,
        )
        return data

    def _q_values(self, obs: PyTorchObs, actions: th.Tensor, n_q: int) -> tuple[th.Tensor, ...]:
        with th.set_grad_enabled(not self.share_features_extractor):
            features = self.extract_features(obs, self.features_extractor)
        graph = self._graph(features)
        mask = features["mask"]
        per_atom_actions = actions.reshape(mask.shape[0], -1, 3) * mask.unsqueeze(-1)
        q_values = []
        for k in range(n_q):
            nodes = self.q_trunks[k](features, graph, per_atom_actions).reshape(mask.shape[0], mask.shape[1], -1)
            q_values.append(self.q_heads[k](masked_mean(nodes, mask)))
        return tuple(q_values)

    def forward(self, obs: PyTorchObs, actions: th.Tensor) -> tuple[th.Tensor, ...]:
        return self._q_values(obs, actions, self.n_critics)

    def q1_forward(self, obs: PyTorchObs, actions: th.Tensor) -> th.Tensor:
        return self._q_values(obs, actions, 1)[0]


class CrystalCGCNNPolicy(TD3Policy):
    """TD3 policy with CGCNN actor/critics (non-equivariant baseline). Registered as ``"CrystalCGCNNPolicy"``.

    :param observation_space: crystal Dict observation space
    :param action_space: ``Box(-1, 1, (3 * N_max,))``
    :param lr_schedule: learning rate schedule
    :param net_arch: ignored
    :param activation_fn: ignored
    :param features_extractor_class: defaults to :class:`~sb3_crystal.policies.td3.PassThroughExtractor`
    :param features_extractor_kwargs: its kwargs
    :param normalize_images: must stay False
    :param optimizer_class: optimizer
    :param optimizer_kwargs: optimizer kwargs
    :param n_critics: number of critics
    :param share_features_extractor: as in SB3
    :param cgcnn_overrides: ``r_max``, ``gaussian_step``, ``hidden_dim``, ``n_conv``, ``species_dim``, ``force_basis``
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        features_extractor_class: type[BaseFeaturesExtractor] = PassThroughExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = False,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        n_critics: int = 2,
        share_features_extractor: bool = False,
        **cgcnn_overrides: Any,
    ) -> None:
        self.cgcnn_kwargs = _resolve_cgcnn_kwargs(cgcnn_overrides)
        self.graph_cache = GraphCache()
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=net_arch,
            activation_fn=activation_fn,
            features_extractor_class=features_extractor_class,
            features_extractor_kwargs=features_extractor_kwargs,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            n_critics=n_critics,
            share_features_extractor=share_features_extractor,
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(**self.cgcnn_kwargs)
        return data

    def make_actor(self, features_extractor: BaseFeaturesExtractor | None = None) -> CGCNNActor:
        actor_kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)
        return CGCNNActor(**actor_kwargs, graph_cache=self.graph_cache, cgcnn_kwargs=self.cgcnn_kwargs).to(self.device)

    def make_critic(self, features_extractor: BaseFeaturesExtractor | None = None) -> CGCNNCritic:
        critic_kwargs = self._update_features_extractor(self.critic_kwargs, features_extractor)
        return CGCNNCritic(**critic_kwargs, graph_cache=self.graph_cache, cgcnn_kwargs=self.cgcnn_kwargs).to(self.device)


def masked_log_prob(per_atom: th.Tensor, mask: th.Tensor) -> th.Tensor:
    """Sum of per-atom log-densities over real atoms, rescaled by ``N_max / n_real`` (see the module docstring).

    :param per_atom: (B, N) log-density of each atom's action
    :param mask: (B, N) 1 real / 0 padding
    :return: (B,)
    """
    per_atom = per_atom * mask
    return per_atom.sum(dim=1) * (per_atom.shape[1] / mask.sum(dim=1).clamp_min(1.0))


def tanh_log_det(u: th.Tensor) -> th.Tensor:
    """``log(1 - tanh(u)^2)``, elementwise, stable for large ``|u|``."""
    return 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))


class CGCNNSACActor(_CGCNNMixin, BasePolicy):
    """Stochastic CGCNN actor: per atom, a diagonal Gaussian over the 3 Cartesian components, ``tanh``-squashed.

    The per-atom head outputs the mean and ``log_std`` of each component (plus a learned ``log_std`` offset);
    actions and log-probabilities are zero / ignored on padded atoms.

    :param observation_space: crystal Dict observation space
    :param action_space: ``Box(-1, 1, (3 * N_max,))``
    :param features_extractor: a :class:`~sb3_crystal.policies.td3.PassThroughExtractor`
    :param features_dim: ignored
    :param normalize_images: must stay False
    :param log_std_init: initial value of the learned ``log_std`` offset
    :param graph_cache: graph cache shared with the other networks of the policy
    :param cgcnn_kwargs: see :data:`CGCNN_DEFAULTS`
    :param use_sde: must be False
    :param kwargs: other ``SACPolicy.actor_kwargs`` (``net_arch``, ``activation_fn``, ``use_expln``, ``clip_mean``),
        ignored
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Box,
        features_extractor: BaseFeaturesExtractor,
        features_dim: int = 1,
        normalize_images: bool = False,
        log_std_init: float = -1.0,
        graph_cache: GraphCache | None = None,
        cgcnn_kwargs: dict[str, Any] | None = None,
        use_sde: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
            squash_output=True,
        )
        if use_sde:
            raise ValueError("gSDE is not supported by the CGCNN SAC actor")
        self.n_max = check_crystal_spaces(observation_space, action_space)
        self.features_dim = features_dim
        self.log_std_init = log_std_init
        self.use_sde = False
        self.cgcnn_kwargs = {**CGCNN_DEFAULTS, **(cgcnn_kwargs or {})}
        self.graph_cache = graph_cache if graph_cache is not None else GraphCache()
        self.trunk = self._trunk()
        hidden = self.cgcnn_kwargs["hidden_dim"]
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.LeakyReLU(), nn.Linear(hidden, 6))
        self.log_std_offset = nn.Parameter(th.tensor(float(log_std_init)))

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            features_dim=self.features_dim,
            features_extractor=self.features_extractor,
            log_std_init=self.log_std_init,
            cgcnn_kwargs=self.cgcnn_kwargs,
        )
        return data

    def get_action_dist_params(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """:return: mean (B, N, 3), log_std (B, N, 3), mask (B, N)"""
        features = self.extract_features(obs, self.features_extractor)
        graph = self._graph(features)
        out = self.head(self.trunk(features, graph)).reshape(graph.n_structures, graph.n_max, 6)
        log_std = (out[..., 3:] + self.log_std_offset).clamp(LOG_STD_MIN, LOG_STD_MAX)
        return out[..., :3], log_std, features["mask"]

    def _sample(self, obs: PyTorchObs, deterministic: bool) -> tuple[th.Tensor, th.Tensor, th.Tensor, th.Tensor, th.Tensor]:
        mean, log_std, mask = self.get_action_dist_params(obs)
        noise = th.zeros_like(mean) if deterministic else th.randn_like(mean)
        pre_squash = mean + log_std.exp() * noise
        actions = th.tanh(pre_squash) * mask.unsqueeze(-1)
        return actions.reshape(actions.shape[0], -1), pre_squash, noise, log_std, mask

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self._sample(obs, deterministic)[0]

    def action_log_prob(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:
        """Sample actions and their log-probability (masked, rescaled to ``N_max`` atoms).

        :return: actions (B, 3 * N_max), log_prob (B,)
        """
        actions, pre_squash, noise, log_std, mask = self._sample(obs, deterministic=False)
        gaussian = -0.5 * noise**2 - log_std - 0.5 * math.log(2 * math.pi)
        per_atom = (gaussian - tanh_log_det(pre_squash)).sum(dim=-1)
        return actions, masked_log_prob(per_atom, mask)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self(observation, deterministic)


class CrystalCGCNNSACPolicy(SACPolicy):
    """SAC policy with a stochastic CGCNN actor and twin CGCNN critics (non-equivariant baseline).

    Registered as ``"CrystalCGCNNPolicy"`` for SAC.

    :param observation_space: crystal Dict observation space
    :param action_space: ``Box(-1, 1, (3 * N_max,))``
    :param lr_schedule: learning rate schedule
    :param net_arch: ignored
    :param activation_fn: ignored
    :param use_sde: must be False
    :param log_std_init: initial ``log_std`` offset
    :param use_expln: ignored
    :param clip_mean: ignored
    :param features_extractor_class: defaults to :class:`~sb3_crystal.policies.td3.PassThroughExtractor`
    :param features_extractor_kwargs: its kwargs
    :param normalize_images: must stay False
    :param optimizer_class: optimizer
    :param optimizer_kwargs: optimizer kwargs
    :param n_critics: number of critics
    :param share_features_extractor: as in SB3
    :param cgcnn_overrides: ``r_max``, ``gaussian_step``, ``hidden_dim``, ``n_conv``, ``species_dim``, ``force_basis``
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        use_sde: bool = False,
        log_std_init: float = -1.0,
        use_expln: bool = False,
        clip_mean: float = 2.0,
        features_extractor_class: type[BaseFeaturesExtractor] = PassThroughExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = False,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        n_critics: int = 2,
        share_features_extractor: bool = False,
        **cgcnn_overrides: Any,
    ) -> None:
        self.cgcnn_kwargs = _resolve_cgcnn_kwargs(cgcnn_overrides)
        self.graph_cache = GraphCache()
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=net_arch,
            activation_fn=activation_fn,
            use_sde=use_sde,
            log_std_init=log_std_init,
            use_expln=use_expln,
            clip_mean=clip_mean,
            features_extractor_class=features_extractor_class,
            features_extractor_kwargs=features_extractor_kwargs,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            n_critics=n_critics,
            share_features_extractor=share_features_extractor,
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(**self.cgcnn_kwargs)
        return data

    def make_actor(self, features_extractor: BaseFeaturesExtractor | None = None) -> CGCNNSACActor:
        actor_kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)
        return CGCNNSACActor(**actor_kwargs, graph_cache=self.graph_cache, cgcnn_kwargs=self.cgcnn_kwargs).to(self.device)

    def make_critic(self, features_extractor: BaseFeaturesExtractor | None = None) -> CGCNNCritic:
        critic_kwargs = self._update_features_extractor(self.critic_kwargs, features_extractor)
        return CGCNNCritic(**critic_kwargs, graph_cache=self.graph_cache, cgcnn_kwargs=self.cgcnn_kwargs).to(self.device)
