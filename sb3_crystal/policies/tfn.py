"""E(3)-equivariant tensor-field-network (TFN) building blocks on e3nn.

Irreps are written out in argument names (``irreps_node_hidden="16x0e+8x1o"``). Node features are flat
``(B * N, irreps.dim)`` tensors over the padded batch (see :mod:`sb3_crystal.policies.graph`); padded nodes have no
edges and are masked by the heads.

Two presets (see :data:`TFN_PRESETS`):

* ``"small"`` (default): depthwise ``"uvu"`` tensor products (as NequIP/MACE), ``lmax=1``, multiplicity 8, one gated
  layer + the output convolution (2 message passings), 8 radial functions, ``r_max=4`` Å (B2 AlFe: the first two
  shells, 14 neighbours instead of 58 at 5 Å). Cost scales with the number of edges; this is what makes it cheap.
* ``"paper"``: the reference TFN sizes (2 gated layers, multiplicity 20, ``lmax=2``, both parities, 10 gaussian
  radial functions, ``r_max=5``, radial MLP of 100 neurons) with fully connected (``"uvw"``) tensor products.
  ``tp_mode="uvu"`` with the same sizes is the reference's exact e3nn ``gate_points_2101`` message tensor product.
"""

import copy
import functools
import math
from typing import Any, ClassVar, NamedTuple

import torch as th
from e3nn import io, o3
from e3nn.math import soft_one_hot_linspace
from e3nn.nn import FullyConnectedNet, Gate
from torch import nn
from torch.nn import functional as F

from sb3_crystal.envs.cell import VOIGT
from sb3_crystal.policies.graph import PeriodicGraph, periodic_radius_graph, scatter_sum

#: Ready-made TFN hyperparameters (plain data, usable as ``policy_kwargs``).
TFN_PRESETS: dict[str, dict[str, Any]] = {
    "small": dict(n_layers=1, mul=8, lmax=1, full_parity=False, num_basis=8, r_max=4.0, radial_neurons=16, tp_mode="uvu"),
    "paper": dict(n_layers=2, mul=20, lmax=2, full_parity=True, num_basis=10, r_max=5.0, radial_neurons=100, tp_mode="uvw"),
}

#: Atomic numbers 0..MAX_Z are embeddable (0 is padding).
MAX_Z = 118

#: Per-structure symmetric tensor fields of a cell observation (``sb3_crystal.envs.observation.TENSOR_KEYS``), in the
#: encoders' order.
TENSOR_FIELDS: tuple[str, ...] = ("cell_forces", "cell_proposal")


@functools.lru_cache(maxsize=1)
def _symmetric_basis() -> th.Tensor:
    """(6, 3, 3): the orthonormal change of basis from a symmetric 3×3 tensor to its irreps ``1x0e+1x2e``."""
    return io.CartesianTensor("ij=ji").reduced_tensor_products().change_of_basis.to(th.float32)


def tensor_irreps(tensor: th.Tensor) -> th.Tensor:
    """Symmetric tensors (..., 3, 3) as their irreps ``1x0e+1x2e`` (..., 6): trace part first, then the 5 of 2e.

    The basis is orthonormal, so the norm of the result is the tensor's Frobenius norm.
    """
    basis = _symmetric_basis().to(tensor.device, tensor.dtype)
    return th.einsum("kij,...ij->...k", basis, 0.5 * (tensor + tensor.transpose(-1, -2)))


def tensor_from_irreps(irreps: th.Tensor) -> th.Tensor:
    """The inverse of :func:`tensor_irreps`: (..., 6) ``1x0e+1x2e`` to symmetric (..., 3, 3)."""
    basis = _symmetric_basis().to(irreps.device, irreps.dtype)
    return th.einsum("kij,...k->...ij", basis, irreps)


def voigt_from_tensor(tensor: th.Tensor) -> th.Tensor:
    """(..., 3, 3) symmetric to its 6 numbers in :data:`~sb3_crystal.envs.cell.VOIGT` order (off-diagonals not
    doubled), as the environment reads a cell action."""
    return th.stack([tensor[..., i, j] for i, j in VOIGT], dim=-1)


def tensor_from_voigt(voigt: th.Tensor) -> th.Tensor:
    """(..., 6) strain numbers to the symmetric (..., 3, 3) tensor."""
    rows = [[None] * 3 for _ in range(3)]
    for k, (i, j) in enumerate(VOIGT):
        rows[i][j] = rows[j][i] = voigt[..., k]
    return th.stack([th.stack(row, dim=-1) for row in rows], dim=-2)  # type: ignore[arg-type]


def hidden_irreps(mul: int, lmax: int, full_parity: bool) -> o3.Irreps:
    """``mul`` copies of every irrep up to ``lmax``.

    :param mul: multiplicity
    :param lmax: maximum rotation order
    :param full_parity: both parities of every ``l`` (reference TFN); otherwise only the "natural" ones
        (``0e, 1o, 2e, ...``) which is all a polar-vector in / polar-vector out network needs
    :return: e.g. ``"8x0e+8x1o"``
    """
    irreps = []
    for ell in range(lmax + 1):
        parities = (1, -1) if full_parity else ((-1) ** ell,)
        irreps += [(mul, (ell, p)) for p in parities]
    return o3.Irreps(irreps).sort().irreps.simplify()


def safe_norm(v: th.Tensor, eps: float = 1e-12) -> th.Tensor:
    """``|v|`` over the last axis (keepdim) with a finite gradient at ``v = 0``."""
    return th.sqrt((v * v).sum(dim=-1, keepdim=True).clamp_min(eps))


def log_norm_basis(norm: th.Tensor, num_basis: int, log10_min: float = -4.0, log10_max: float = 1.5) -> th.Tensor:
    """Gaussian basis on ``log10 |x|``: resolves small forces (1e-4 .. 30 eV/Å) as well as large ones.

    :param norm: (..., 1) non-negative norms
    :param num_basis: number of gaussians (``num_basis x 0e``)
    :return: (..., num_basis)
    """
    x = th.log10(norm.squeeze(-1) + 10.0**log10_min)
    return soft_one_hot_linspace(x, log10_min, log10_max, num_basis, basis="gaussian", cutoff=False)


class EdgeFeatures(NamedTuple):
    """Parameter-free edge features shared by every layer (and by actor/critic nets on the same graph).

    :param graph: the periodic graph
    :param edge_sh: (E, irreps_sh.dim) spherical harmonics of the unit edge vectors (``"component"`` normalisation)
    :param edge_radial: (E, num_basis) radial basis of the edge lengths
    """

    graph: PeriodicGraph
    edge_sh: th.Tensor
    edge_radial: th.Tensor


def edge_features(graph: PeriodicGraph, lmax: int, num_basis: int, r_max: float) -> EdgeFeatures:
    """Spherical harmonics ``Y^{0..lmax}`` and a gaussian radial basis (times ``sqrt(num_basis)``, as the reference).

    :param graph: the periodic graph
    :param lmax: maximum order of the spherical harmonics
    :param num_basis: number of radial basis functions
    :param r_max: cutoff radius (Å)
    :return: edge features
    """
    unit = graph.edge_vec / graph.edge_len.clamp_min(1e-9).unsqueeze(-1)
    sh = o3.spherical_harmonics(list(range(lmax + 1)), unit, normalize=False, normalization="component")
    radial = soft_one_hot_linspace(graph.edge_len, 0.0, r_max, num_basis, basis="gaussian", cutoff=False)
    return EdgeFeatures(graph, sh, radial * math.sqrt(num_basis))


class GraphCache:
    """Remembers the last few graphs so actor, critics and their targets build one graph per observation batch.

    In a TD3/SAC update the same observation tensors are fed to several networks (``actor_target`` and
    ``critic_target`` on ``next_obs``; ``critic``, ``actor`` and ``critic.q1_forward`` on ``obs``). A hit requires the
    *same* tensor objects at the same in-place version (the cache holds references, so ids cannot be recycled).
    Not a module: it holds no parameters and is never saved.

    :param size: number of remembered batches
    """

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._entries: list[tuple[tuple, tuple[th.Tensor, ...], EdgeFeatures]] = []

    def get(
        self,
        positions: th.Tensor,
        cell: th.Tensor,
        mask: th.Tensor,
        r_max: float,
        lmax: int,
        num_basis: int,
        max_neighbors: int | None = None,
    ) -> EdgeFeatures:
        """Edge features for this batch, from the cache if possible.

        :param positions: (B, N, 3)
        :param cell: (B, 3, 3)
        :param mask: (B, N)
        :param r_max: cutoff radius (Å)
        :param lmax: spherical harmonics order
        :param num_basis: radial basis size
        :param max_neighbors: optional shell-respecting neighbour cap
        :return: edge features
        """
        tensors = (positions, cell, mask)
        key = (r_max, lmax, num_basis, max_neighbors, *(t._version for t in tensors))
        for entry_key, entry_tensors, value in self._entries:
            if entry_key == key and all(a is b for a, b in zip(entry_tensors, tensors, strict=True)):
                return value
        with th.no_grad():
            graph = periodic_radius_graph(positions, cell, mask, r_max=r_max, max_neighbors=max_neighbors)
            value = edge_features(graph, lmax, num_basis, r_max)
        self._entries = [(key, tensors, value), *self._entries[: self.size - 1]]
        return value

    def __getstate__(self) -> dict[str, Any]:  # never pickle/deepcopy cached tensors
        return {"size": self.size, "_entries": []}


class CrystalNodeEncoder(nn.Module):
    """Per-atom input features ``irreps_node_input = "{S}x0e + {V}x1o"`` from the observation.

    * species: learned embedding of the atomic number (``species_dim x 0e``), random-normal init so that different
      elements (e.g. Al/Fe) start far apart,
    * force direction ``f/|f|`` (``1x1o``, 0 for zero force) and ``log10|f|`` gaussians (``force_basis x 0e``),
    * each further vector field of the observation's layout (past displacements and force changes, the classical
      proposal: ``vector_fields``), likewise as a direction (``1x1o``) and ``force_basis`` gaussians of its log-norm,
    * the layout's invariant per-structure ``signals`` (``n_signals x 0e``, the same on every atom),
    * optionally (critic) the per-atom action ``a`` (``1x1o``) and a gaussian embedding of ``|a|``
      (``action_basis x 0e``).

    :param species_dim: species embedding size
    :param force_basis: number of gaussians on ``log10 |f|`` (and on the log-norm of every further vector)
    :param action_basis: number of gaussians on ``|a|`` in [0, sqrt(3)] (0: no action input)
    :param vector_fields: ``(key, count)`` of the further vector fields: ``count`` 3-vectors per atom
        (see :func:`layout_fields`)
    :param n_signals: invariant per-structure signals (0: none)
    """

    def __init__(
        self,
        species_dim: int = 8,
        force_basis: int = 8,
        action_basis: int = 0,
        vector_fields: tuple[tuple[str, int], ...] = (),
        n_signals: int = 0,
        tensor_fields: tuple[str, ...] = (),
        strain_action: bool = False,
    ) -> None:
        super().__init__()
        self.species_dim = species_dim
        self.force_basis = force_basis
        self.action_basis = action_basis
        self.vector_fields = tuple((str(key), int(count)) for key, count in vector_fields)
        self.n_signals = int(n_signals)
        self.tensor_fields = tuple(str(key) for key in tensor_fields)
        self.strain_action = bool(strain_action)
        if self.strain_action and action_basis <= 0:
            raise ValueError("a strain action is encoded beside the per-atom actions: action_basis must be > 0")
        self.species_embedding = nn.Embedding(MAX_Z + 1, species_dim)
        n_extra = sum(count for _, count in self.vector_fields)
        n_tensors = len(self.tensor_fields) + (1 if self.strain_action else 0)
        n_scalars = species_dim + force_basis * (1 + n_extra) + action_basis + self.n_signals
        n_scalars += (force_basis + 1) * len(self.tensor_fields) + ((action_basis + 1) if self.strain_action else 0)
        n_vectors = 1 + n_extra + (1 if action_basis > 0 else 0)
        tensors = f"+{n_tensors}x2e" if n_tensors else ""
        self.irreps_node_input = o3.Irreps(f"{n_scalars}x0e+{n_vectors}x1o{tensors}")

    def forward(
        self, obs: dict[str, th.Tensor], actions: th.Tensor | None = None, strain: th.Tensor | None = None
    ) -> th.Tensor:
        """:param obs: padded observation dict
        :param actions: (B, N, 3) per-atom actions (critic only)
        :param strain: (B, 6) strain numbers of a cell action (critic of a cell layout only)
        :return: (B * N, irreps_node_input.dim)
        """
        forces = obs["forces"]
        n_structures, n_slots = forces.shape[0], forces.shape[1]
        species = obs["species"].round().long().clamp(0, MAX_Z)
        fields = observed_vectors(obs, self.vector_fields)
        scalars = [self.species_embedding(species)]
        vectors = []
        for field in fields:
            norm = safe_norm(field)
            scalars.append(log_norm_basis(norm, self.force_basis))
            vectors.append(field / norm.clamp_min(1e-8))
        if self.n_signals > 0:
            scalars.append(per_atom_signals(obs, self.n_signals))
        if self.action_basis > 0:
            assert actions is not None, "this encoder expects per-atom actions"
            a_norm = safe_norm(actions).squeeze(-1)
            scalars.append(soft_one_hot_linspace(a_norm, 0.0, math.sqrt(3.0), self.action_basis, "gaussian", False))
            vectors.append(actions)
        tensors = []
        for key in self.tensor_fields:  # per structure, the same on every atom: norm basis, trace part, 2e part
            irreps = tensor_irreps(obs[key].reshape(n_structures, 3, 3))
            norm = safe_norm(irreps)
            direction = irreps / norm.clamp_min(1e-8)
            scalars += [_per_atom(log_norm_basis(norm, self.force_basis), n_slots), _per_atom(direction[:, :1], n_slots)]
            tensors.append(_per_atom(direction[:, 1:], n_slots))
        if self.strain_action:
            assert strain is not None, "this encoder expects the strain of a cell action"
            irreps = tensor_irreps(tensor_from_voigt(strain))
            norm = safe_norm(irreps).squeeze(-1)
            basis = soft_one_hot_linspace(norm, 0.0, math.sqrt(6.0), self.action_basis, "gaussian", False)
            scalars += [_per_atom(basis, n_slots), _per_atom(irreps[:, :1], n_slots)]
            tensors.append(_per_atom(irreps[:, 1:], n_slots))
        # irreps order: all scalars, then the 1o vectors, then the 2e tensors
        x = th.cat([*scalars, *vectors, *tensors], dim=-1)
        return x.reshape(n_structures * n_slots, -1) * obs["mask"].reshape(n_structures * n_slots, 1)


def observed_vectors(obs: dict[str, th.Tensor], vector_fields: tuple[tuple[str, int], ...]) -> list[th.Tensor]:
    """The forces and every further vector field of the observation, each (B, N, 3), in the encoders' order.

    :param obs: padded observation dict
    :param vector_fields: ``(key, vectors per atom)`` (see :func:`layout_fields`)
    """
    forces = obs["forces"]
    n_structures, n_slots = forces.shape[0], forces.shape[1]
    fields = [forces]
    for key, count in vector_fields:
        fields += list(obs[key].reshape(n_structures, n_slots, count, 3).unbind(dim=2))
    return fields


def _per_atom(values: th.Tensor, n_slots: int) -> th.Tensor:
    """(B, k) per-structure values repeated on every atom slot, (B, N, k)."""
    return values.unsqueeze(1).expand(-1, n_slots, -1)


def layout_tensor_fields(observation_space: Any) -> tuple[str, ...]:
    """The per-structure symmetric tensor fields of a crystal observation space (a cell layout's), in order."""
    return tuple(key for key in TENSOR_FIELDS if key in observation_space.spaces)


def per_atom_signals(obs: dict[str, th.Tensor], n_signals: int) -> th.Tensor:
    """The per-structure ``signals`` repeated on every atom slot, (B, N, n_signals)."""
    n_structures, n_slots = obs["forces"].shape[0], obs["forces"].shape[1]
    return obs["signals"].reshape(n_structures, 1, n_signals).expand(-1, n_slots, -1)


def layout_fields(observation_space: Any) -> tuple[tuple[tuple[str, int], ...], int]:
    """The further vector fields (beyond the forces) and the number of signals of a crystal observation space.

    :param observation_space: the policy's ``Dict`` observation space
    :return: ``((key, vectors per atom), ...)`` and the signal count, the arguments of :class:`CrystalNodeEncoder`
    """
    fields = []
    for key in ("displacements", "force_changes", "proposal"):
        if key in observation_space.spaces:
            shape = observation_space[key].shape
            fields.append((key, int(shape[1]) if len(shape) == 3 else 1))
    n_signals = int(observation_space["signals"].shape[0]) if "signals" in observation_space.spaces else 0
    return tuple(fields), n_signals


class DepthwiseTensorProductL1:
    """Depthwise (``"uvu"``) tensor product of ``{mul}x0e + {mul}x1o`` node features with ``1x0e + 1x1o`` edge
    harmonics, computed with plain products and dot products instead of e3nn's Wigner-3j contractions.

    It reproduces an e3nn :class:`~e3nn.o3.TensorProduct` (same instructions, weight layout, output layout and path
    normalisation: the constants are read off the e3nn module by probing it once) and is cheaper on small graphs,
    where e3nn's broadcast contractions weigh on a TD3 update. Four path types exist at ``l ≤ 1``:
    ``0e x 0e -> 0e``, ``0e x 1o -> 1o``, ``1o x 0e -> 1o`` and ``1o x 1o -> 0e``. Not a module: it holds no
    parameters, so state dicts stay those of the e3nn module it mirrors.

    :param paths: per instruction, in e3nn's (weight) order: ``(kind, index in irreps_in1, index in irreps_in2,
        output slot, mul)``; every output slot is filled by exactly one path
    :param in1_dims: dimension of every irrep of ``irreps_in1``
    :param in2_dims: dimension of every irrep of ``irreps_in2``
    """

    KINDS: ClassVar[dict[tuple, str]] = {
        ((0, 1), (0, 1), (0, 1)): "ss",
        ((0, 1), (1, -1), (1, -1)): "sv",
        ((1, -1), (0, 1), (1, -1)): "vs",
        ((1, -1), (1, -1), (0, 1)): "vv",
    }

    def __init__(self, paths: list[tuple[str, int, int, int, int]], in1_dims: list[int], in2_dims: list[int]) -> None:
        self.paths = paths
        self.in1_dims = in1_dims
        self.in2_dims = in2_dims
        self.weight_sizes = [mul for *_, mul in paths]
        self.constants = [1.0] * len(paths)

    @classmethod
    def from_e3nn(cls, tp: o3.TensorProduct) -> "DepthwiseTensorProductL1 | None":
        """The fast equivalent of ``tp``, or ``None`` when ``tp`` has a path this class does not cover.

        :param tp: an e3nn tensor product with per-edge weights and ``uvu`` instructions of ``l ≤ 1``
        """
        if tp.internal_weights or tp.shared_weights:
            return None
        irreps_in1, irreps_in2, irreps_out = tp.irreps_in1, tp.irreps_in2, tp.irreps_out
        paths = []
        for ins in tp.instructions:
            (mul1, ir1), (mul2, ir2), (mul_out, ir_out) = irreps_in1[ins.i_in1], irreps_in2[ins.i_in2], irreps_out[ins.i_out]
            kind = cls.KINDS.get(((ir1.l, ir1.p), (ir2.l, ir2.p), (ir_out.l, ir_out.p)))
            if kind is None or ins.connection_mode != "uvu" or not ins.has_weight or mul2 != 1 or mul_out != mul1:
                return None
            paths.append((kind, ins.i_in1, ins.i_in2, ins.i_out, mul1))
        if sorted(path[3] for path in paths) != list(range(len(irreps_out))):
            return None
        fast = cls(paths, [mul_ir.dim for mul_ir in irreps_in1], [mul_ir.dim for mul_ir in irreps_in2])
        # path constants: run both once in float64 with unit weights and random inputs
        generator = th.Generator().manual_seed(0)
        x = th.randn(1, irreps_in1.dim, generator=generator, dtype=th.float64)
        y = th.randn(1, irreps_in2.dim, generator=generator, dtype=th.float64)
        weight = th.ones(1, tp.weight_numel, dtype=th.float64)
        reference = copy.deepcopy(tp).to(th.float64)(x, y, weight)  # a copy: ``tp`` keeps its dtype and device
        raw = fast(x, y, weight)
        for k, path in enumerate(paths):
            out = irreps_out.slices()[path[3]]
            fast.constants[k] = float((reference[0, out] / raw[0, out]).nanmean())
        if not th.allclose(fast(x, y, weight), reference, atol=1e-10):
            return None
        return fast

    def __call__(self, x: th.Tensor, y: th.Tensor, weight: th.Tensor) -> th.Tensor:
        """:param x: (E, irreps_in1.dim) node features of the senders
        :param y: (E, irreps_in2.dim) harmonics of the edge vectors
        :param weight: (E, weight_numel) per-edge path weights
        :return: (E, irreps_out.dim)
        """
        n_edges = x.shape[0]
        # split once (one backward op each) instead of slicing per path
        x_parts, y_parts = x.split(self.in1_dims, dim=-1), y.split(self.in2_dims, dim=-1)
        w_parts = weight.split(self.weight_sizes, dim=-1)
        out: list[th.Tensor] = [x] * len(self.paths)
        for (kind, i1, i2, slot, mul), w, constant in zip(self.paths, w_parts, self.constants, strict=True):
            w = w * constant  # (E, mul)
            x_part, y_part = x_parts[i1], y_parts[i2]
            if kind == "ss":
                value = w * x_part * y_part
            elif kind == "sv":
                value = ((w * x_part).unsqueeze(-1) * y_part.unsqueeze(1)).reshape(n_edges, 3 * mul)
            elif kind == "vs":
                value = (x_part.reshape(n_edges, mul, 3) * (w * y_part).unsqueeze(-1)).reshape(n_edges, 3 * mul)
            else:  # the 1o x 1o -> 0e path is a dot product
                value = w * (x_part.reshape(n_edges, mul, 3) * y_part.unsqueeze(1)).sum(-1)
            out[slot] = value
        return th.cat(out, dim=-1)


class EquivariantConvolution(nn.Module):
    """Point convolution ``x_i' = SC(x_i) + Lin2( sum_j c(r_ij) TP(Lin1(x_j), Y(r_ij); w(r_ij)) / sqrt(avg_neigh) )``.

    :param irreps_node_input: input node irreps
    :param irreps_sh: irreps of the edge spherical harmonics
    :param irreps_node_output: output node irreps
    :param num_basis: radial basis size (input of the radial MLP)
    :param radial_neurons: hidden width of the radial MLP
    :param tp_mode: ``"uvu"`` (depthwise: each input channel keeps its own channel) or ``"uvw"`` (fully connected)
    :param avg_num_neighbors: normalisation of the neighbour sum
    """

    def __init__(
        self,
        irreps_node_input: o3.Irreps | str,
        irreps_sh: o3.Irreps | str,
        irreps_node_output: o3.Irreps | str,
        num_basis: int,
        radial_neurons: int,
        tp_mode: str = "uvu",
        avg_num_neighbors: float = 30.0,
    ) -> None:
        super().__init__()
        self.irreps_node_input = o3.Irreps(irreps_node_input)
        self.irreps_sh = o3.Irreps(irreps_sh)
        self.irreps_node_output = o3.Irreps(irreps_node_output)
        self.avg_num_neighbors = avg_num_neighbors

        self.self_connection = o3.Linear(self.irreps_node_input, self.irreps_node_output)
        self.lin1 = o3.Linear(self.irreps_node_input, self.irreps_node_input)
        if tp_mode == "uvu":
            irreps_mid, instructions = [], []
            for i, (mul, ir_in) in enumerate(self.irreps_node_input):
                for j, (_, ir_edge) in enumerate(self.irreps_sh):
                    for ir_out in ir_in * ir_edge:
                        if ir_out in self.irreps_node_output:
                            instructions.append((i, j, len(irreps_mid), "uvu", True))
                            irreps_mid.append((mul, ir_out))
            irreps_mid = o3.Irreps(irreps_mid)
            irreps_mid, perm, _ = irreps_mid.sort()
            instructions = [(i1, i2, perm[k], mode, train) for i1, i2, k, mode, train in instructions]
            self.tp = o3.TensorProduct(
                self.irreps_node_input,
                self.irreps_sh,
                irreps_mid,
                instructions,
                internal_weights=False,
                shared_weights=False,
            )
        elif tp_mode == "uvw":
            self.tp = o3.FullyConnectedTensorProduct(
                self.irreps_node_input,
                self.irreps_sh,
                self.irreps_node_output,
                internal_weights=False,
                shared_weights=False,
            )
        else:
            raise ValueError(f"tp_mode must be 'uvu' or 'uvw', got {tp_mode!r}")
        self.irreps_mid = self.tp.irreps_out
        #: the same tensor product without e3nn's generic contractions, when every path has l ≤ 1 (the default preset)
        self.fast_tp = DepthwiseTensorProductL1.from_e3nn(self.tp) if tp_mode == "uvu" else None
        self.radial_mlp = FullyConnectedNet([num_basis, radial_neurons, self.tp.weight_numel], F.silu)
        self.lin2 = o3.Linear(self.irreps_mid, self.irreps_node_output)

    def forward(self, x: th.Tensor, edges: EdgeFeatures) -> th.Tensor:
        graph = edges.graph
        # the TP is linear in its weights: applying the smooth cutoff there is cheaper than on the messages
        weight = self.radial_mlp(edges.edge_radial) * graph.edge_cutoff.unsqueeze(-1)
        # index_select (backward = index_add_) is much faster on CPU than advanced indexing (backward = index_put_)
        x_src = th.index_select(self.lin1(x), 0, graph.edge_src)
        if self.fast_tp is not None:
            messages = self.fast_tp(x_src, edges.edge_sh, weight)
        else:
            messages = self.tp(x_src, edges.edge_sh, weight)
        aggregated = scatter_sum(messages, graph.edge_dst, x.shape[0]) / math.sqrt(self.avg_num_neighbors)
        return self.self_connection(x) + self.lin2(aggregated)


def _gate_for(irreps_hidden: o3.Irreps, irreps_reachable: o3.Irreps) -> Gate:
    """Gate nonlinearity whose outputs are the reachable part of ``irreps_hidden``.

    Scalars: SiLU (``0e``) / tanh (``0o``); every ``l > 0`` irrep is multiplied by its own sigmoid-activated ``0e`` gate.
    """
    reachable = {ir for _, ir in irreps_reachable}
    scalars = o3.Irreps([(mul, ir) for mul, ir in irreps_hidden if ir.l == 0 and ir in reachable])
    gated = o3.Irreps([(mul, ir) for mul, ir in irreps_hidden if ir.l > 0 and ir in reachable])
    gates = o3.Irreps(f"{gated.num_irreps}x0e") if gated.num_irreps > 0 else o3.Irreps("")
    return Gate(
        scalars,
        [F.silu if ir.p == 1 else th.tanh for _, ir in scalars],
        gates,
        [th.sigmoid] * len(gates),
        gated,
    )


def _reachable(irreps_in: o3.Irreps, irreps_sh: o3.Irreps) -> o3.Irreps:
    """Irreps a convolution can produce (tensor product paths and the self-connection)."""
    out = [(1, ir) for _, ir in irreps_in]
    out += [(1, ir) for _, ir1 in irreps_in for _, ir2 in irreps_sh for ir in ir1 * ir2]
    return o3.Irreps(out).sort().irreps.simplify()


class TensorFieldNetwork(nn.Module):
    """Stack of ``n_layers`` gated equivariant convolutions plus a final linear convolution.

    :param irreps_node_input: node input irreps (e.g. ``"16x0e+1x1o"``)
    :param irreps_node_output: per-node output irreps (``"1x1o"`` actor mean, ``"1x0e"`` Q, ...)
    :param n_layers: number of gated convolutions
    :param mul: multiplicity of the hidden irreps
    :param lmax: maximum rotation order of hidden irreps and spherical harmonics
    :param full_parity: hidden irreps of both parities (reference TFN)
    :param num_basis: radial basis size
    :param radial_neurons: hidden width of the radial MLPs
    :param tp_mode: ``"uvu"`` (depthwise, cheap) or ``"uvw"`` (fully connected, reference size)
    :param avg_num_neighbors: normalisation of neighbour sums
    :param irreps_node_hidden: explicit hidden irreps, overriding ``mul/lmax/full_parity``
    :param convolution_cls: the interaction block, called as
        ``convolution_cls(irreps_node_input, irreps_sh, irreps_node_output, num_basis=, radial_neurons=, tp_mode=,
        avg_num_neighbors=)`` and then ``block(x, edges)``: a new layer is one class (default
        :class:`EquivariantConvolution`)
    """

    def __init__(
        self,
        irreps_node_input: o3.Irreps | str,
        irreps_node_output: o3.Irreps | str,
        n_layers: int = 2,
        mul: int = 8,
        lmax: int = 1,
        full_parity: bool = False,
        num_basis: int = 8,
        radial_neurons: int = 16,
        tp_mode: str = "uvu",
        avg_num_neighbors: float = 30.0,
        irreps_node_hidden: str | None = None,
        convolution_cls: type[nn.Module] | None = None,
    ) -> None:
        super().__init__()
        convolution_cls = EquivariantConvolution if convolution_cls is None else convolution_cls
        self.irreps_node_input = o3.Irreps(irreps_node_input)
        self.irreps_node_output = o3.Irreps(irreps_node_output)
        self.irreps_sh = o3.Irreps.spherical_harmonics(lmax)
        self.irreps_node_hidden = (
            o3.Irreps(irreps_node_hidden) if irreps_node_hidden is not None else hidden_irreps(mul, lmax, full_parity)
        )
        conv_kwargs = dict(num_basis=num_basis, radial_neurons=radial_neurons, tp_mode=tp_mode)
        conv_kwargs["avg_num_neighbors"] = avg_num_neighbors

        self.convolutions = nn.ModuleList()
        self.gates = nn.ModuleList()
        irreps = self.irreps_node_input
        for _ in range(n_layers):
            gate = _gate_for(self.irreps_node_hidden, _reachable(irreps, self.irreps_sh))
            self.convolutions.append(convolution_cls(irreps, self.irreps_sh, gate.irreps_in, **conv_kwargs))
            self.gates.append(gate)
            irreps = gate.irreps_out
        self.output = convolution_cls(irreps, self.irreps_sh, self.irreps_node_output, **conv_kwargs)

    def forward(self, x: th.Tensor, edges: EdgeFeatures) -> th.Tensor:
        """:param x: (B * N, irreps_node_input.dim)
        :param edges: edge features of the batch graph
        :return: (B * N, irreps_node_output.dim)
        """
        for conv, gate in zip(self.convolutions, self.gates, strict=True):
            x = gate(conv(x, edges))
        return self.output(x, edges)


def tensor_squash(irreps: th.Tensor) -> th.Tensor:
    """``T * tanh(|T|) / |T|`` for (..., 6) ``1x0e+1x2e`` tensors (Frobenius norm): equivariant, into the unit ball,
    so each of the 6 strain numbers of the resulting symmetric tensor lies in (−1, 1)."""
    norm = safe_norm(irreps)
    return irreps * th.tanh(norm) / norm


def radial_squash(v: th.Tensor) -> th.Tensor:
    """``v * tanh(|v|) / |v|`` per 3-vector: keeps the direction (equivariant), maps into the open unit ball (so into
    the [-1, 1]^3 action box), and is smooth at ``v = 0`` (where it is the identity to first order).

    :param v: (..., 3)
    :return: (..., 3)
    """
    norm = safe_norm(v)
    return v * th.tanh(norm) / norm
