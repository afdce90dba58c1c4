"""Periodic neighbour graphs built in torch from padded, batched crystal observations.

The observation stores atoms only (see the env contract): ``positions`` (B, N, 3), ``cell`` (B, 3, 3) with lattice
vectors as rows, and ``mask`` (B, N). The policies flatten the batch to ``B * N`` nodes (node ``b * N + i``) and build
the periodic radius graph here, vectorised over the batch, without torch_scatter / torch_cluster.
"""

import math
from typing import NamedTuple

import numpy as np
import torch as th
from matscipy.neighbours import neighbour_list


class PeriodicGraph(NamedTuple):
    """Flat periodic radius graph of a padded batch.

    Messages flow from ``edge_src`` to ``edge_dst``; ``edge_vec = r_src + T - r_dst`` (Å), with ``T`` a lattice
    translation, i.e. the vector from the receiving atom to the (image of the) neighbour.

    :param edge_src: (E,) flat index ``b * N + j`` of the neighbour
    :param edge_dst: (E,) flat index ``b * N + i`` of the receiving atom
    :param edge_vec: (E, 3) edge vectors (Å), in the dtype of ``positions``
    :param edge_len: (E,) edge lengths (Å)
    :param edge_cutoff: (E,) smooth cutoff weight, 1 at short range, going smoothly to 0 at ``r_max``
    :param node_mask: (B * N,) 1.0 for real atoms, 0.0 for padding
    :param batch: (B * N,) structure index of every node
    :param n_structures: B
    :param n_max: N (padded slots per structure)
    """

    edge_src: th.Tensor
    edge_dst: th.Tensor
    edge_vec: th.Tensor
    edge_len: th.Tensor
    edge_cutoff: th.Tensor
    node_mask: th.Tensor
    batch: th.Tensor
    n_structures: int
    n_max: int

    @property
    def num_nodes(self) -> int:
        return self.n_structures * self.n_max


def cosine_cutoff(r: th.Tensor, r_max: float, r_on: float | None = None) -> th.Tensor:
    """Smooth (C1) cutoff: 1 for ``r <= r_on``, cosine taper to 0 at ``r_max``, 0 beyond.

    With the default ``r_on = r_max / 2`` this is the cutoff of the reference TFN (e3nn ``gate_points_2101``).

    :param r: distances
    :param r_max: cutoff radius
    :param r_on: start of the taper (default ``r_max / 2``)
    :return: cutoff weights, same shape as ``r``
    """
    r_on = 0.5 * r_max if r_on is None else r_on
    u = ((r - r_on) / (r_max - r_on)).clamp(0.0, 1.0)
    return 0.5 * (th.cos(math.pi * u) + 1.0)


def perpendicular_widths(cell: th.Tensor) -> th.Tensor:
    """Distances between opposite faces of each cell: ``|V| / |a_j x a_k|`` for every axis ``i``.

    :param cell: (B, 3, 3), lattice vectors as rows
    :return: (B, 3)
    """
    a, b, c = cell[:, 0], cell[:, 1], cell[:, 2]
    cross = th.stack([th.linalg.cross(b, c), th.linalg.cross(c, a), th.linalg.cross(a, b)], dim=1)  # (B, 3, 3)
    volume = (a * cross[:, 0]).sum(-1).abs()
    return volume[:, None] / cross.norm(dim=-1)


def image_range(cell: th.Tensor, r_max: float) -> list[int]:
    """Number of periodic images per axis needed so that no pair within ``r_max`` is missed.

    Positions are wrapped into the cell first, so fractional differences lie in (-1, 1) and an image ``n`` along axis
    ``k`` can only contribute if ``|n| <= ceil(r_max / width_k)``. The maximum over the batch is used so that the
    search stays one dense tensor operation.

    :param cell: (B, 3, 3)
    :param r_max: cutoff radius (Å)
    :return: ``[n_a, n_b, n_c]``
    """
    widths = perpendicular_widths(cell.detach().double())
    n = th.ceil(r_max / widths.clamp_min(1e-6)).amax(dim=0)
    return [int(v) for v in n.tolist()]


def _shell_cap(dist: th.Tensor, max_neighbors: int, shell_tol: float) -> th.Tensor:
    """Keep, for each receiving atom, all candidates up to and including the shell of its k-th nearest neighbour."""
    k = min(max_neighbors, dist.shape[-1])
    kth = th.topk(dist, k, dim=-1, largest=False).values[..., -1:]
    return dist <= kth + shell_tol


#: ``method="auto"`` switches to the neighbour-list library when one structure's dense candidate tensor would hold
#: more than this many (receiving atom, neighbour, image) triples, i.e. ``N_max**2 * images``. 2-atom B2 cells at
#: 5 Å have 500, 16-atom cells about 7e3, 128-atom cells 4e5 (see ``benchmarks/bench_graph.py``).
DENSE_MAX_CANDIDATES = 20_000

GRAPH_METHODS = ("auto", "dense", "library")


def _wrap(pos: th.Tensor, lat: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """Wrap float64 positions into the cell: ``(wrapped positions, integer cell offsets frac_floor)``."""
    frac = th.linalg.solve(lat.transpose(1, 2), pos.transpose(1, 2)).transpose(1, 2)  # pos = frac @ cell
    frac_floor = th.floor(frac)
    return th.bmm(frac - frac_floor, lat), frac_floor


def _dense_candidates(
    pos_wrapped: th.Tensor, lat: th.Tensor, real: th.Tensor, r_max: float, max_neighbors: int | None, shell_tol: float
) -> tuple[th.Tensor, ...]:
    """All-pairs search over every image shift at once: ``(b, i, j, image shift, distance)`` of the kept edges."""
    n_structures, n_max, _ = pos_wrapped.shape
    device = pos_wrapped.device
    n_img = image_range(lat, r_max)
    axes = [th.arange(-n, n + 1, device=device, dtype=th.float64) for n in n_img]
    shifts = th.cartesian_prod(*axes)  # (S, 3) integer image offsets
    n_shifts = shifts.shape[0]
    zero_shift = int(th.nonzero((shifts == 0).all(dim=1))[0])
    shift_vecs = th.einsum("sk,bkx->bsx", shifts, lat)  # (B, S, 3)

    # candidate vectors [b, dst i, src j, image s] = r_j + T_s - r_i
    diff = pos_wrapped[:, None, :, :] - pos_wrapped[:, :, None, :]  # (B, N, N, 3)
    cand = diff[:, :, :, None, :] + shift_vecs[:, None, None, :, :]  # (B, N, N, S, 3)
    dist = cand.norm(dim=-1)

    pair_ok = real[:, :, None] & real[:, None, :]
    keep = pair_ok[..., None] & (dist < r_max)
    eye = th.eye(n_max, dtype=th.bool, device=device)
    keep[:, eye, zero_shift] = False  # no zero self-vector
    if max_neighbors is not None:
        flat_dist = th.where(keep, dist, th.full_like(dist, math.inf)).reshape(n_structures, n_max, n_max * n_shifts)
        keep &= _shell_cap(flat_dist, max_neighbors, shell_tol).reshape(keep.shape)
    b_idx, i_idx, j_idx, s_idx = th.nonzero(keep, as_tuple=True)
    return b_idx, i_idx, j_idx, shifts[s_idx], dist[b_idx, i_idx, j_idx, s_idx]


def _library_candidates(pos_wrapped: th.Tensor, lat: th.Tensor, real: th.Tensor, r_max: float) -> tuple[th.Tensor, ...]:
    """matscipy's linked-cell neighbour list, one structure at a time, on CPU in float64 (``O(N)`` per structure).

    :return: ``(b, i, j, image shift, distance)`` of every pair within ``r_max``, as CPU tensors
    """
    pos_np, lat_np, real_np = pos_wrapped.cpu().numpy(), lat.cpu().numpy(), real.cpu().numpy()
    empty = np.zeros(0, dtype=np.int64)
    parts: list[tuple[np.ndarray, ...]] = [(empty, empty, empty, np.zeros((0, 3)), np.zeros(0))]
    for b in range(pos_np.shape[0]):
        atoms = np.flatnonzero(real_np[b])
        if atoms.size == 0:
            continue
        i, j, d, shift = neighbour_list("ijdS", positions=pos_np[b, atoms], cell=lat_np[b], pbc=[True] * 3, cutoff=r_max)
        parts.append((np.full(i.shape, b), atoms[i], atoms[j], shift, d))
    b_idx, i_idx, j_idx, shift, dist = (np.concatenate(column) for column in zip(*parts, strict=True))
    return (
        th.from_numpy(b_idx.astype(np.int64)),
        th.from_numpy(i_idx.astype(np.int64)),
        th.from_numpy(j_idx.astype(np.int64)),
        th.from_numpy(shift.astype(np.float64)),
        th.from_numpy(dist.astype(np.float64)),
    )


def _shell_cap_edges(
    receiver: th.Tensor, dist: th.Tensor, n_receivers: int, max_neighbors: int, shell_tol: float
) -> th.Tensor:
    """:func:`_shell_cap` on an edge list: mask of the edges within the shell of their receiver's k-th neighbour."""
    if receiver.numel() == 0:
        return th.ones(0, dtype=th.bool, device=receiver.device)
    order = th.argsort(dist, stable=True)
    order = order[th.argsort(receiver[order], stable=True)]  # by receiver, then by distance
    counts = th.bincount(receiver, minlength=n_receivers)
    starts = th.cumsum(counts, 0) - counts
    kth_pos = (starts + max_neighbors - 1).clamp_max(receiver.numel() - 1)
    kth = th.where(counts >= max_neighbors, dist[order][kth_pos], th.full_like(starts, math.inf, dtype=dist.dtype))
    return dist <= kth[receiver] + shell_tol


def periodic_radius_graph(
    positions: th.Tensor,
    cell: th.Tensor,
    mask: th.Tensor,
    r_max: float = 5.0,
    max_neighbors: int | None = None,
    shell_tol: float = 1e-3,
    method: str = "auto",
) -> PeriodicGraph:
    """All pairs (i, j, T) of real atoms with ``0 < |r_j + T - r_i| < r_max`` over periodic images.

    An atom is paired with its own images (``i == j, T != 0``); the zero self-vector is excluded. Positions need not
    be wrapped into the cell. The candidate search is done in float64 (exact shell boundaries), the edge vectors are
    recomputed from the unwrapped input positions in their dtype (so translating the input is exact).

    Two searches give the same edges (in a different order): ``"dense"`` tries every pair and image shift at once in
    torch, on the input's device (``O(N_max^2 * images)`` memory, fastest for the small cells of training);
    ``"library"`` runs matscipy's linked-cell neighbour list per structure on the CPU (``O(N)``, for supercells).
    ``"auto"`` picks ``"library"`` when ``N_max^2 * images`` exceeds :data:`DENSE_MAX_CANDIDATES`.

    :param positions: (B, N, 3) Cartesian positions (Å), padded rows arbitrary
    :param cell: (B, 3, 3) lattice vectors as rows
    :param mask: (B, N) 1 for real atoms, 0 for padding
    :param r_max: cutoff radius (Å)
    :param max_neighbors: optional cap on neighbours per atom. It never cuts through a distance shell: all neighbours
        within ``shell_tol`` of the k-th nearest one are kept, so the graph keeps the crystal's symmetry.
    :param shell_tol: distance tolerance (Å) defining a shell for ``max_neighbors``
    :param method: ``"auto"``, ``"dense"`` or ``"library"``
    :return: the flat graph
    """
    if method not in GRAPH_METHODS:
        raise ValueError(f"method must be one of {GRAPH_METHODS}, got {method!r}")
    n_structures, n_max, _ = positions.shape
    device, dtype = positions.device, positions.dtype
    real = mask > 0.5
    pos = positions.detach().double()
    lat = cell.detach().double()
    # wrap into the cell: edge vectors are unchanged (only the image index changes) and the image range is bounded
    pos_wrapped, frac_floor = _wrap(pos, lat)

    if method == "auto":
        n_images = math.prod(2 * n + 1 for n in image_range(lat, r_max))
        method = "library" if n_max * n_max * n_images > DENSE_MAX_CANDIDATES else "dense"
    if method == "dense":
        b_idx, i_idx, j_idx, shift, dist = _dense_candidates(pos_wrapped, lat, real, r_max, max_neighbors, shell_tol)
    else:
        b_idx, i_idx, j_idx, shift, dist = (t.to(device) for t in _library_candidates(pos_wrapped, lat, real, r_max))
        if max_neighbors is not None:
            keep = _shell_cap_edges(b_idx * n_max + i_idx, dist, n_structures * n_max, max_neighbors, shell_tol)
            b_idx, i_idx, j_idx, shift = b_idx[keep], i_idx[keep], j_idx[keep], shift[keep]

    # recompute vectors from the unwrapped positions (exact translation of the input, no wrap round-off)
    image = shift + frac_floor[b_idx, i_idx] - frac_floor[b_idx, j_idx]
    edge_vec = positions[b_idx, j_idx] - positions[b_idx, i_idx] + th.einsum("ek,ekx->ex", image.to(dtype), cell[b_idx])
    edge_vec = edge_vec.detach()
    edge_len = edge_vec.norm(dim=-1)
    return PeriodicGraph(
        edge_src=b_idx * n_max + j_idx,
        edge_dst=b_idx * n_max + i_idx,
        edge_vec=edge_vec,
        edge_len=edge_len,
        edge_cutoff=cosine_cutoff(edge_len, r_max),
        node_mask=real.reshape(-1).to(dtype),
        batch=th.arange(n_structures, device=device).repeat_interleave(n_max),
        n_structures=n_structures,
        n_max=n_max,
    )


def scatter_sum(src: th.Tensor, index: th.Tensor, dim_size: int) -> th.Tensor:
    """Sum rows of ``src`` into ``dim_size`` bins given by ``index`` (``torch_scatter.scatter(..., reduce="sum")``)."""
    out = src.new_zeros((dim_size, *src.shape[1:]))
    return out.index_add_(0, index, src)


def masked_mean(x: th.Tensor, mask: th.Tensor) -> th.Tensor:
    """Mean over real atoms.

    :param x: (B, N, C) per-atom values
    :param mask: (B, N) 1 real / 0 padding
    :return: (B, C)
    """
    mask = mask.to(x.dtype).unsqueeze(-1)
    return (x * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
