import numpy as np
import pytest
import torch as th
from ase import Atoms
from matscipy.neighbours import neighbour_list

from sb3_crystal.policies import graph as graph_module
from sb3_crystal.policies.graph import DENSE_MAX_CANDIDATES, cosine_cutoff, image_range, periodic_radius_graph


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


def edge_set(graph, decimals: int = 4) -> list[tuple]:
    """Edges as a sorted list of (dst, src, rounded edge vector): the order differs between the methods."""
    vec = th.round(graph.edge_vec.double(), decimals=decimals).tolist()
    return sorted(zip(graph.edge_dst.tolist(), graph.edge_src.tolist(), map(tuple, vec), strict=True))


def assert_same_graph(dense, library):
    assert edge_set(dense) == edge_set(library)
    assert dense.edge_vec.dtype == library.edge_vec.dtype and dense.edge_src.dtype == library.edge_src.dtype
    for g in (dense, library):
        th.testing.assert_close(g.edge_len, g.edge_vec.norm(dim=-1))
        th.testing.assert_close(g.edge_cutoff, cosine_cutoff(g.edge_len, 5.0))
    assert th.equal(dense.node_mask, library.node_mask) and th.equal(dense.batch, library.batch)
    assert (dense.n_structures, dense.n_max) == (library.n_structures, library.n_max)


@pytest.mark.parametrize("max_neighbors", [None, 8, 10, 20, 1000])
@pytest.mark.parametrize("shift_out", [False, True])
def test_dense_and_library_agree(shift_out, max_neighbors):
    # B2 at a = 2.85 Å needs +-2 image shells at 5 Å; triclinic cells; padding interleaved with real atoms
    structures = [b2_alfe(), triclinic(0, 5), triclinic(1, 3), b2_alfe(2.9), triclinic(2, 1)]
    n_max = 7
    pos, cell, mask = pad_batch(structures, n_max, shift_out=shift_out)
    perm = th.randperm(n_max, generator=th.Generator().manual_seed(0))
    pos, mask = pos[:, perm], mask[:, perm]
    pos[mask == 0] = 100 * th.randn(int((mask == 0).sum()), 3, generator=th.Generator().manual_seed(1))
    kw = dict(r_max=5.0, max_neighbors=max_neighbors)
    dense = periodic_radius_graph(pos, cell, mask, method="dense", **kw)
    library = periodic_radius_graph(pos, cell, mask, method="library", **kw)
    assert_same_graph(dense, library)
    assert library.node_mask[library.edge_src].all() and library.node_mask[library.edge_dst].all()
    if max_neighbors is None:
        for b, atoms in enumerate(structures):  # slot s holds atom perm[s]
            slot_to_atom = {slot: k for slot, k in enumerate(perm.tolist()) if k < len(atoms)}
            sel = (library.edge_dst // n_max) == b
            got = sorted(
                zip(
                    [slot_to_atom[s] for s in (library.edge_dst[sel] % n_max).tolist()],
                    [slot_to_atom[s] for s in (library.edge_src[sel] % n_max).tolist()],
                    library.edge_len[sel].double().tolist(),
                    strict=True,
                )
            )
            assert_same_pairs(got, reference_pairs(atoms, 5.0))


def test_library_float64_and_empty_structure():
    structures = [b2_alfe(), triclinic(0, 4)]
    pos, cell, mask = (t.double() for t in pad_batch(structures, 5, shift_out=True))
    mask[1] = 0  # a structure without atoms has no edges
    dense = periodic_radius_graph(pos, cell, mask, method="dense")
    library = periodic_radius_graph(pos, cell, mask, method="library")
    assert library.edge_vec.dtype == th.float64
    assert_same_graph(dense, library)
    assert (library.edge_dst < 5).all()
    with pytest.raises(ValueError, match="method"):
        periodic_radius_graph(pos, cell, mask, method="cell-list")


def bcc_fe_supercell(n: int = 6, a: float = 2.87) -> Atoms:
    """bcc Fe, n x n x n conventional cells (2 n^3 atoms)."""
    return Atoms("Fe2", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=np.eye(3) * a, pbc=True).repeat(n)


def test_large_supercell_uses_library(monkeypatch):
    atoms = bcc_fe_supercell(6)  # 432 atoms
    n_atoms = len(atoms)
    pos, cell, mask = pad_batch([atoms], n_atoms + 3)

    def no_dense(*args, **kwargs):
        raise AssertionError("auto must not build the dense candidate tensor for a supercell")

    monkeypatch.setattr(graph_module, "_dense_candidates", no_dense)
    # r_max 2.9 Å: first shell (8 at a sqrt(3)/2 = 2.49 Å) and second shell (6 at a = 2.87 Å)
    graph = periodic_radius_graph(pos, cell, mask, r_max=2.9)
    counts = th.bincount(graph.edge_dst, minlength=n_atoms + 3)
    assert counts[:n_atoms].eq(14).all() and counts[n_atoms:].eq(0).all()
    th.testing.assert_close(graph.edge_vec.norm(dim=-1), graph.edge_len)
    capped = periodic_radius_graph(pos, cell, mask, r_max=2.9, max_neighbors=8)
    assert th.bincount(capped.edge_dst, minlength=n_atoms)[:n_atoms].eq(8).all()
    assert capped.edge_len.max() < 2.5

    # perturbed and unwrapped: the same pairs and distances as matscipy/ASE
    rng = np.random.default_rng(0)
    atoms.positions += 0.02 * rng.standard_normal((n_atoms, 3))
    pos, cell, mask = pad_batch([atoms], n_atoms, shift_out=True)
    graph = periodic_radius_graph(pos, cell, mask, r_max=4.2)
    assert_same_pairs(graph_pairs(graph, 0, n_atoms), reference_pairs(atoms, 4.2), atol=2e-5)


def test_auto_picks_dense_for_training_cells(monkeypatch):
    def no_library(*args, **kwargs):
        raise AssertionError("auto must use the dense search for small cells")

    monkeypatch.setattr(graph_module, "_library_candidates", no_library)
    structures = [b2_alfe(), triclinic(0, 5), triclinic(1, 8)]
    pos, cell, mask = pad_batch(structures, 8)
    n_images = np.prod([2 * n + 1 for n in image_range(cell, 5.0)])
    assert 8 * 8 * n_images <= DENSE_MAX_CANDIDATES
    graph = periodic_radius_graph(pos, cell, mask, r_max=5.0)
    assert_same_pairs(graph_pairs(graph, 2, 8), reference_pairs(structures[2], 5.0))
