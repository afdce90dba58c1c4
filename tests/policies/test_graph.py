import numpy as np
import pytest
import torch as th
from ase import Atoms
from matscipy.neighbours import neighbour_list

from sb3_crystal.policies.graph import cosine_cutoff, image_range, periodic_radius_graph


def b2_alfe(a: float = 2.85) -> Atoms:
    return Atoms("AlFe", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=np.eye(3) * a, pbc=True)


def triclinic(seed: int = 0, n: int = 5) -> Atoms:
    rng = np.random.default_rng(seed)
    cell = np.array([[3.1, 0.0, 0.0], [1.3, 2.9, 0.0], [-0.8, 0.9, 3.4]]) + 0.3 * rng.standard_normal((3, 3))
    return Atoms(numbers=rng.choice([13, 26], n), scaled_positions=rng.random((n, 3)), cell=cell, pbc=True)


def reference_pairs(atoms: Atoms, r_max: float) -> list[tuple[int, int, float]]:
    i, j, d = neighbour_list("ijd", atoms, r_max)
    return sorted(zip(i.tolist(), j.tolist(), d.tolist(), strict=True))


def pad_batch(structures: list[Atoms], n_max: int, shift_out: bool = False):
    rng = np.random.default_rng(1)
    pos = np.zeros((len(structures), n_max, 3))
    cell = np.zeros((len(structures), 3, 3))
    mask = np.zeros((len(structures), n_max))
    for b, atoms in enumerate(structures):
        p = atoms.positions.copy()
        if shift_out:  # unwrap atoms by random lattice vectors: the graph must not care
            p += rng.integers(-3, 4, (len(atoms), 3)) @ atoms.cell.array
        pos[b, : len(atoms)] = p
        cell[b] = atoms.cell.array
        mask[b, : len(atoms)] = 1
    return (th.tensor(pos, dtype=th.float32), th.tensor(cell, dtype=th.float32), th.tensor(mask, dtype=th.float32))


def graph_pairs(graph, b: int, n_max: int) -> list[tuple[int, int, float]]:
    sel = (graph.edge_dst // n_max) == b
    dst = (graph.edge_dst[sel] % n_max).tolist()
    src = (graph.edge_src[sel] % n_max).tolist()
    return sorted(zip(dst, src, graph.edge_len[sel].double().tolist(), strict=True))


def assert_same_pairs(got, ref, atol=1e-5):
    assert len(got) == len(ref)
    for (i, j, d), (ri, rj, rd) in zip(got, ref, strict=True):
        assert (i, j) == (ri, rj)
        assert abs(d - rd) < atol


def test_image_range_b2():
    cell = th.eye(3)[None] * 2.85
    assert image_range(cell, 5.0) == [2, 2, 2]


@pytest.mark.parametrize("shift_out", [False, True])
def test_against_matscipy_padded_batch(shift_out):
    structures = [b2_alfe(), triclinic(0, 5), triclinic(1, 3), b2_alfe(2.9)]
    n_max = 7
    pos, cell, mask = pad_batch(structures, n_max, shift_out=shift_out)
    graph = periodic_radius_graph(pos, cell, mask, r_max=5.0)
    for b, atoms in enumerate(structures):
        assert_same_pairs(graph_pairs(graph, b, n_max), reference_pairs(atoms, 5.0))
    # padded slots get no edges, vectors match lengths
    assert graph.node_mask[graph.edge_src].all() and graph.node_mask[graph.edge_dst].all()
    assert th.allclose(graph.edge_vec.norm(dim=-1), graph.edge_len)
    assert (graph.edge_len > 0).all()


def test_b2_shells():
    pos, cell, mask = pad_batch([b2_alfe()], 4)
    graph = periodic_radius_graph(pos, cell, mask, r_max=5.0)
    counts = th.bincount(graph.edge_dst, minlength=4)
    assert counts[:2].tolist() == [58, 58] and counts[2:].tolist() == [0, 0]  # 8 + 6 + 12 + 24 + 8


def test_neighbor_cap_cuts_between_shells():
    pos, cell, mask = pad_batch([b2_alfe()], 2)
    # 10 requested: the 2nd shell (6 at a) is completed to 8 + 6 = 14, never cut through
    graph = periodic_radius_graph(pos, cell, mask, r_max=5.0, max_neighbors=10)
    assert th.bincount(graph.edge_dst).tolist() == [14, 14]
    graph = periodic_radius_graph(pos, cell, mask, r_max=5.0, max_neighbors=8)
    assert th.bincount(graph.edge_dst).tolist() == [8, 8]


def test_cutoff_smooth():
    r = th.linspace(0, 6, 601)
    c = cosine_cutoff(r, 5.0)
    assert c[r <= 2.5].eq(1).all() and c[r >= 5.0].eq(0).all()
    assert (c[1:] <= c[:-1]).all()
