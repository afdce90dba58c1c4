"""What every crystal policy shares, TD3 and SAC, TFN and CGCNN: the space contract, the pass-through features
extractor, actor and critic bases, the graph mixin, the invariant TFN twin critic, and the policy mixins that build
actor, critics and targets on one graph cache.

The algorithm files (:mod:`sb3_crystal.policies.td3`, :mod:`sb3_crystal.policies.sac`) hold only their own actor and
policy classes; the network blocks live in :mod:`sb3_crystal.policies.tfn` and :mod:`sb3_crystal.policies.cgcnn`.
"""

import importlib
import inspect
from typing import Any, ClassVar

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BaseModel, BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from sb3_crystal.envs.observation import BASE_KEYS, CELL_ACTIONS
from sb3_crystal.policies.graph import masked_mean
from sb3_crystal.policies.tfn import (
    TFN_PRESETS,
    CrystalNodeEncoder,
    EdgeFeatures,
    GraphCache,
    TensorFieldNetwork,
    layout_fields,
    layout_tensor_fields,
)

#: Keys every crystal observation holds (the paper's; history layouts add more, see sb3_crystal.envs.observation).
OBS_KEYS = BASE_KEYS


def _defaults(function: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The keyword defaults of ``function``'s signature (``self`` and the names in ``skip`` left out)."""
    parameters = inspect.signature(function).parameters.values()
    return {p.name: p.default for p in parameters if p.name not in ("self", *skip) and p.default is not p.empty}


#: Where each TFN hyperparameter goes: the network (TensorFieldNetwork), the node encoder, the graph.
_TFN_NETWORK_KEYS = tuple(_defaults(TensorFieldNetwork.__init__, skip=("convolution_cls",)))
_ENCODER_KEYS = ("species_dim", "force_basis", "action_basis")
_GRAPH_KEYS = ("r_max", "max_neighbors")

#: Defaults of every TFN hyperparameter a crystal policy accepts, read off the signatures of the blocks they are
#: passed to (:class:`~sb3_crystal.policies.tfn.TensorFieldNetwork`, the node encoder, the graph), then the
#: ``"small"`` preset; ``convolution`` names the interaction block as ``"module:Class"`` (``None``: the default
#: :class:`~sb3_crystal.policies.tfn.EquivariantConvolution`), so agent files stay plain data.
TFN_DEFAULTS: dict[str, Any] = {
    **{key: value for key, value in _defaults(TensorFieldNetwork.__init__).items() if key in _TFN_NETWORK_KEYS},
    **{key: value for key, value in _defaults(CrystalNodeEncoder.__init__).items() if key in _ENCODER_KEYS},
    "action_basis": 8,  # the critics encode their action input
    **{key: _defaults(GraphCache.get).get(key) for key in _GRAPH_KEYS},
    "convolution": None,
    **TFN_PRESETS["small"],
}


def resolve_convolution(spec: str | None) -> type[nn.Module] | None:
    """The interaction block a ``convolution`` entry names: ``"module:Class"``, a subclass of ``torch.nn.Module``.

    Only a class is taken, never any other callable, so a name in an agent file cannot run an arbitrary function.

    :raises ValueError: not ``"module:Class"``, or the module or class is missing, or not an ``nn.Module`` class.
    """
    if spec is None:
        return None
    if not (isinstance(spec, str) and spec.count(":") == 1):
        raise ValueError(f"convolution must be 'module:Class' (an nn.Module subclass) or None, got {spec!r}")
    module_name, class_name = spec.split(":")
    try:
        block = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"convolution {spec!r}: {err}") from None
    if not (isinstance(block, type) and issubclass(block, nn.Module)):
        raise ValueError(f"convolution {spec!r} is not a torch.nn.Module subclass")
    return block


def resolve_tfn_kwargs(tfn_preset: str = "small", **overrides: Any) -> dict[str, Any]:
    """Full TFN hyperparameters: ``TFN_DEFAULTS``, updated by the preset, updated by explicit overrides.

    :param tfn_preset: a key of :data:`~sb3_crystal.policies.tfn.TFN_PRESETS` (``"small"`` or ``"paper"``)
    :param overrides: explicit hyperparameters (``mul=16``, ``lmax=2``, ``tp_mode="uvw"``,
        ``convolution="my_package.blocks:MyBlock"``, ...)
    :return: plain-data dict
    """
    if tfn_preset not in TFN_PRESETS:
        raise ValueError(f"Unknown tfn_preset {tfn_preset!r}, choose from {sorted(TFN_PRESETS)}")
    unknown = set(overrides) - set(TFN_DEFAULTS)
    if unknown:
        raise TypeError(f"Unknown TFN hyperparameters {sorted(unknown)}; known: {sorted(TFN_DEFAULTS)}")
    resolved = {**TFN_DEFAULTS, **TFN_PRESETS[tfn_preset], **overrides}
    resolve_convolution(resolved["convolution"])  # a bad name fails here, before any network is built
    return resolved


def fused_adam_kwargs(
    optimizer_class: type[th.optim.Optimizer], optimizer_kwargs: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Optimizer kwargs with ``fused=True`` for Adam/AdamW unless the user chose an implementation.

    The crystal networks have few, small parameter tensors, so one fused kernel replaces a per-tensor loop (its
    measured effect on the TD3 update: ``benchmarks/bench_td3_update_ab.py``, results in docs/benchmarks.md).

    :param optimizer_class: the policy's optimizer class
    :param optimizer_kwargs: the user's kwargs (``None``: none)
    :return: kwargs to pass on
    """
    kwargs = dict(optimizer_kwargs or {})
    if optimizer_class in (th.optim.Adam, th.optim.AdamW) and not {"fused", "foreach"} & set(kwargs):
        kwargs["fused"] = True
    return kwargs or optimizer_kwargs


def has_cell(observation_space: spaces.Space) -> bool:
    """Whether a crystal observation space is a cell layout's (the cell relaxes too; the action ends in a strain)."""
    return isinstance(observation_space, spaces.Dict) and "cell_forces" in observation_space.spaces


def check_crystal_spaces(observation_space: spaces.Space, action_space: spaces.Space) -> int:
    """Validate the env contract and return ``N_max``.

    :param observation_space: Dict with ``positions, cell, forces, species, mask``
    :param action_space: ``Box(-1, 1, (3 * N_max,))``, plus 6 strain numbers for a cell layout
    :return: N_max
    """
    assert isinstance(observation_space, spaces.Dict), "crystal policies need a Dict observation space"
    missing = [key for key in OBS_KEYS if key not in observation_space.spaces]
    assert not missing, f"observation space lacks keys {missing}"
    n_max = observation_space["positions"].shape[0]
    size = 3 * n_max + (CELL_ACTIONS if has_cell(observation_space) else 0)
    assert isinstance(action_space, spaces.Box) and action_space.shape == (size,), (
        f"action space must be Box(-1, 1, ({size},)), got {action_space}"
    )
    return n_max


def refuse_cell(observation_space: spaces.Space, network: str) -> None:
    """Raise ``ValueError`` for a cell layout: ``network`` has no strain head (only the TD3 TFN actor has one)."""
    if has_cell(observation_space):
        raise ValueError(
            f"{network} has no strain head for a cell relaxation (CrystalRelaxEnv(cell=True)): use TD3 with "
            "CrystalTFNPolicy, or relax the cell through an ASE filter with a fixed-cell agent"
        )


class PassThroughExtractor(BaseFeaturesExtractor):
    """Returns the (preprocessed) observation dict unchanged: the graph network lives in the actor/critic.

    It keeps SB3's ``features_extractor`` plumbing (``extract_features``, ``share_features_extractor``) working.

    :param observation_space: the Dict observation space
    """

    def __init__(self, observation_space: spaces.Dict) -> None:
        super().__init__(observation_space, features_dim=1)

    def forward(self, observations: dict[str, th.Tensor]) -> dict[str, th.Tensor]:  # type: ignore[override]
        return observations


class CrystalGraphMixin:
    """TFN graph/edge-feature construction for crystal networks (needs ``self.tfn_kwargs``, ``self.graph_cache``)."""

    tfn_kwargs: dict[str, Any]
    graph_cache: GraphCache

    def _edges(self, obs: dict[str, th.Tensor]) -> EdgeFeatures:
        kw = self.tfn_kwargs
        return self.graph_cache.get(
            obs["positions"], obs["cell"], obs["mask"], kw["r_max"], kw["lmax"], kw["num_basis"], kw["max_neighbors"]
        )

    def _make_encoder(self, action_basis: int = 0) -> CrystalNodeEncoder:
        """The node encoder for this network's observation space (and, for a critic, its action input)."""
        space = self.observation_space  # type: ignore[attr-defined]
        vector_fields, n_signals = layout_fields(space)
        kw = self.tfn_kwargs
        strain = action_basis > 0 and has_cell(space)
        return CrystalNodeEncoder(
            kw["species_dim"], kw["force_basis"], action_basis, vector_fields, n_signals, layout_tensor_fields(space), strain
        )

    def _make_tfn(self, irreps_node_input: Any, irreps_node_output: str) -> TensorFieldNetwork:
        kw = self.tfn_kwargs
        network = {key: kw[key] for key in _TFN_NETWORK_KEYS if key in kw}
        return TensorFieldNetwork(
            irreps_node_input, irreps_node_output, convolution_cls=resolve_convolution(kw["convolution"]), **network
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "tfn_kwargs": self.tfn_kwargs}  # type: ignore[misc]


class CrystalNetworkMixin:
    """What every crystal actor and critic does after SB3's constructor: check the spaces, keep ``features_dim`` and
    take the policy's graph cache; both also hand ``features_dim`` and the features extractor to their copies."""

    observation_space: spaces.Dict
    action_space: spaces.Box
    features_extractor: BaseFeaturesExtractor

    def _setup_crystal_network(self, features_dim: int, graph_cache: GraphCache | None) -> None:
        """:param features_dim: ignored (kept for SB3's ``_update_features_extractor``)
        :param graph_cache: graph cache shared with the other networks of the policy (``None``: a new one)"""
        self.n_max = check_crystal_spaces(self.observation_space, self.action_space)
        self.features_dim = features_dim
        self.graph_cache = graph_cache if graph_cache is not None else GraphCache()

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()  # type: ignore[misc]
        data.update(features_dim=self.features_dim, features_extractor=self.features_extractor)
        return data


class CrystalActorBase(CrystalNetworkMixin, BasePolicy):
    """What every crystal actor shares: space check, the policy's graph cache, output squashed into [-1, 1].

    Subclasses build their network after calling this constructor.

    :param observation_space: crystal Dict observation space
    :param action_space: ``Box(-1, 1, (3 * N_max,))``
    :param features_extractor: a :class:`PassThroughExtractor`
    :param features_dim: ignored (kept for SB3's ``_update_features_extractor``)
    :param normalize_images: must stay False
    :param graph_cache: graph cache shared with the other networks of the policy
    :param net_arch: ignored (passed by ``TD3Policy``)
    :param activation_fn: ignored (passed by ``TD3Policy``)
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Box,
        features_extractor: BaseFeaturesExtractor,
        features_dim: int = 1,
        normalize_images: bool = False,
        graph_cache: GraphCache | None = None,
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
        self._setup_crystal_network(features_dim, graph_cache)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self(observation)


class CrystalCriticBase(CrystalNetworkMixin, BaseModel):
    """What every crystal twin critic shares: space check, the policy's graph cache, padded action slots zeroed.

    Subclasses build their ``n_critics`` Q networks after calling this constructor and implement :meth:`_q_values`.

    :param observation_space: crystal Dict observation space
    :param action_space: ``Box(-1, 1, (3 * N_max,))``
    :param features_extractor: a :class:`PassThroughExtractor`
    :param features_dim: ignored
    :param normalize_images: must stay False
    :param n_critics: number of Q networks
    :param share_features_extractor: as in SB3 (irrelevant for the parameter-free pass-through)
    :param graph_cache: graph cache shared with the other networks of the policy
    :param net_arch: ignored (passed by ``TD3Policy``)
    :param activation_fn: ignored (passed by ``TD3Policy``)
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
        net_arch: Any = None,
        activation_fn: Any = None,
    ) -> None:
        super().__init__(
            observation_space, action_space, features_extractor=features_extractor, normalize_images=normalize_images
        )
        self._setup_crystal_network(features_dim, graph_cache)
        self.share_features_extractor = share_features_extractor
        self.n_critics = n_critics

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(n_critics=self.n_critics, share_features_extractor=self.share_features_extractor)
        return data

    def _q_values(
        self, features: dict[str, th.Tensor], per_atom_actions: th.Tensor, n_q: int, strain: th.Tensor | None = None
    ) -> tuple[th.Tensor, ...]:
        """:return: the first ``n_q`` Q values, each (B, 1), from the features, the (B, N_max, 3) actions and, for a
        cell layout, the (B, 6) strain numbers"""
        raise NotImplementedError

    def _q_forward(self, obs: PyTorchObs, actions: th.Tensor, n_q: int) -> tuple[th.Tensor, ...]:
        # same idiom as ContinuousCritic: no gradient into a features extractor shared with the actor
        with th.set_grad_enabled(not self.share_features_extractor):
            features = self.extract_features(obs, self.features_extractor)
        mask = features["mask"]
        n_structures, n_slots = mask.shape
        strain = actions[:, 3 * n_slots :] if "cell_forces" in features else None
        per_atom = actions[:, : 3 * n_slots].reshape(n_structures, n_slots, 3) * mask.unsqueeze(-1)
        return self._q_values(features, per_atom, n_q, strain)

    def forward(self, obs: PyTorchObs, actions: th.Tensor) -> tuple[th.Tensor, ...]:
        """:return: ``n_critics`` tensors of shape (B, 1)"""
        return self._q_forward(obs, actions, self.n_critics)

    def q1_forward(self, obs: PyTorchObs, actions: th.Tensor) -> th.Tensor:
        """Only the first Q network (TD3 actor loss)."""
        return self._q_forward(obs, actions, 1)[0]


class TFNCritic(CrystalGraphMixin, CrystalCriticBase):
    """Twin (``n_critics``) invariant Q networks: per-atom action as ``1x1o`` + norm embedding, masked-mean pooling.

    The graph and its edge features are built once and shared by all Q networks. Padded action slots (random during
    warm-up, noisy in TD3 target smoothing) are zeroed before use, so they cannot affect Q.

    :param args: see :class:`CrystalCriticBase`
    :param tfn_kwargs: TFN hyperparameters (see :func:`resolve_tfn_kwargs`)
    :param kwargs: see :class:`CrystalCriticBase`
    """

    def __init__(self, *args: Any, tfn_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tfn_kwargs = kw = resolve_tfn_kwargs(**(tfn_kwargs or {}))
        self.q_encoders = nn.ModuleList(self._make_encoder(kw["action_basis"]) for _ in range(self.n_critics))
        self.q_networks = nn.ModuleList(self._make_tfn(enc.irreps_node_input, "1x0e") for enc in self.q_encoders)
        # invariant offset per critic: returns are far from 0 and the per-atom outputs have no bias
        self.q_biases = nn.Parameter(th.zeros(self.n_critics))

    def _q_values(
        self, features: dict[str, th.Tensor], per_atom_actions: th.Tensor, n_q: int, strain: th.Tensor | None = None
    ) -> tuple[th.Tensor, ...]:
        edges = self._edges(features)
        mask = features["mask"]
        q_values = []
        for k in range(n_q):
            x = self.q_encoders[k](features, per_atom_actions, strain)
            q_atoms = self.q_networks[k](x, edges).reshape(mask.shape[0], -1, 1)
            q_values.append(masked_mean(q_atoms, mask) + self.q_biases[k])
        return tuple(q_values)


class CrystalPolicyMixin:
    """The constructor and ``make_actor``/``make_critic`` of the crystal policies (TD3 and SAC): actor, critics and
    targets share ``graph_cache``.

    The SB3 policy after this mixin (``TD3Policy``, ``SACPolicy``) takes the keyword arguments its signature names,
    with :attr:`sb3_defaults` in place of its own defaults; every other keyword argument is a network
    hyperparameter. A subclass names its ``actor_class`` and ``critic_class``, keeps those hyperparameters in
    :meth:`_set_network_kwargs` (called before SB3 builds the networks) and hands them on in :meth:`_network_kwargs`.
    ``fuse_adam``: run Adam/AdamW fused (see :func:`fused_adam_kwargs`).

    :param observation_space: crystal Dict observation space
    :param action_space: ``Box(-1, 1, (3 * N_max,))``
    :param lr_schedule: learning rate schedule
    :param kwargs: the SB3 policy's keyword arguments and the network hyperparameters
    """

    actor_class: type[BasePolicy]
    critic_class: type[BaseModel]
    fuse_adam: bool
    graph_cache: GraphCache
    #: The SB3 defaults a crystal policy changes: the observation passes through, unscaled, to the graph networks.
    sb3_defaults: ClassVar[dict[str, Any]] = {"features_extractor_class": PassThroughExtractor, "normalize_images": False}

    def __init__(self, observation_space: spaces.Dict, action_space: spaces.Box, lr_schedule: Schedule, **kwargs: Any) -> None:
        sb3_parameters = inspect.signature(super().__init__).parameters
        sb3_kwargs = {**self.sb3_defaults, **{key: value for key, value in kwargs.items() if key in sb3_parameters}}
        # needed by make_actor/make_critic, which the SB3 constructor calls through _build
        self._set_network_kwargs(**{key: value for key, value in kwargs.items() if key not in sb3_parameters})
        self.graph_cache = GraphCache()
        optimizer_class = sb3_kwargs.get("optimizer_class", sb3_parameters["optimizer_class"].default)
        sb3_kwargs["optimizer_kwargs"] = self._optimizer_kwargs(optimizer_class, sb3_kwargs.get("optimizer_kwargs"))
        super().__init__(observation_space, action_space, lr_schedule, **sb3_kwargs)  # type: ignore[call-arg]

    def _set_network_kwargs(self, **overrides: Any) -> None:
        raise NotImplementedError

    def _network_kwargs(self) -> dict[str, Any]:
        raise NotImplementedError

    def _optimizer_kwargs(
        self, optimizer_class: type[th.optim.Optimizer], optimizer_kwargs: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        return fused_adam_kwargs(optimizer_class, optimizer_kwargs) if self.fuse_adam else optimizer_kwargs

    def make_actor(self, features_extractor: BaseFeaturesExtractor | None = None) -> BasePolicy:
        actor_kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)  # type: ignore[attr-defined]
        actor = self.actor_class(**actor_kwargs, graph_cache=self.graph_cache, **self._network_kwargs())
        return actor.to(self.device)  # type: ignore[attr-defined]

    def make_critic(self, features_extractor: BaseFeaturesExtractor | None = None) -> BaseModel:
        critic_kwargs = self._update_features_extractor(self.critic_kwargs, features_extractor)  # type: ignore[attr-defined]
        critic = self.critic_class(**critic_kwargs, graph_cache=self.graph_cache, **self._network_kwargs())
        return critic.to(self.device)  # type: ignore[attr-defined]


class TFNPolicyMixin:
    """TFN networks for a crystal policy (TD3 or SAC): hyperparameters from a preset and overrides, fused Adam."""

    critic_class = TFNCritic
    fuse_adam = True

    def _set_network_kwargs(self, tfn_preset: str = "small", **tfn_overrides: Any) -> None:
        self.tfn_preset = tfn_preset
        self.tfn_kwargs = resolve_tfn_kwargs(tfn_preset, **tfn_overrides)

    def _network_kwargs(self) -> dict[str, Any]:
        return {"tfn_kwargs": self.tfn_kwargs}

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "tfn_preset": self.tfn_preset, **self.tfn_kwargs}  # type: ignore[misc]
