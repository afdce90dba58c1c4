"""Test families: reserved seeds, deterministic builds, starts as specified, the training-overlap check."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from sb3_crystal.structures import families
from sb3_crystal.structures.families import (
    EVALUATION_SEEDS,
    FAMILIES,
    SEEDS_PER_FAMILY,
    SPLITS,
    ReservedSeedError,
    check_training_seed,
    family_seed,
    training_matches,
)
from sb3_crystal.structures.geometry import closest_pair


def assert_same(first: list[Atoms], second: list[Atoms]) -> None:
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert a.get_chemical_symbols() == b.get_chemical_symbols()
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.cell.array, b.cell.array)


def test_reserved_seeds_are_refused_for_training() -> None:
    for seed in (7_000_000, 7_999_999, 8_000_000, 8_123_456):
        with pytest.raises(ReservedSeedError, match="reserved seeds"):
            check_training_seed(seed, what="structure seed")
    for seed in (0, 6_999_999, 10_000_000, 2_000_000):
        check_training_seed(seed)


def test_second_test_split_is_reserved_and_new() -> None:
    assert SPLITS == tuple(EVALUATION_SEEDS) and "test2" in SPLITS
    for seed in (9_000_000, 9_500_000, 9_999_999):
        with pytest.raises(ReservedSeedError, match="test2 families' reserved seeds"):
            check_training_seed(seed)
    first = families.test_family("bcc_solid_solution_16", split="test", n_cells=2, cache_dir=False)
    second = families.test_family("bcc_solid_solution_16", split="test2", n_cells=2, cache_dir=False)
    assert family_seed("bcc_solid_solution_16", "test2") == family_seed("bcc_solid_solution_16", "test") + 1_000_000
    for start in second.starts:
        assert start.info["start_seed"] in EVALUATION_SEEDS["test2"]
    for a, b in zip(first.cells, second.cells, strict=True):  # other occupancies, not the test cells again
        assert a.get_chemical_symbols() != b.get_chemical_symbols()
    for a, b in zip(first.starts, second.starts, strict=True):
        assert not np.allclose(a.positions, b.positions)


def test_every_family_owns_a_block_inside_its_split() -> None:
    for split, seeds in EVALUATION_SEEDS.items():
        starts = [family_seed(name, split) for name in FAMILIES]
        assert len(set(starts)) == len(starts)
        assert all(seeds.start <= s and s + SEEDS_PER_FAMILY <= seeds.stop for s in starts)
        # start seeds of a family stay in its block
        for name, spec in FAMILIES.items():
            assert spec.n_cells * spec.starts_per_cell < SEEDS_PER_FAMILY, name
    with pytest.raises(ValueError, match="split must be one of"):
        family_seed("b2_defect_16", "train")
    with pytest.raises(KeyError, match="Unknown test family"):
        family_seed("b2_defect_17", "validation")


def test_b2_defect_family_is_deterministic_and_as_specified(tmp_path) -> None:
    family = families.test_family("b2_defect_16", n_cells=2, cache_dir=tmp_path)
    again = families.test_family("b2_defect_16", n_cells=2, cache_dir=False)
    assert_same(family.cells, again.cells)
    assert_same(family.starts, again.starts)
    vacancy, antisite = family.cells
    assert len(vacancy) == 15 and vacancy.info["vacancies"] == 1 and vacancy.info["antisites"] == 0
    assert len(antisite) == 16 and antisite.info["antisites"] == 1
    assert sorted(antisite.get_chemical_symbols()).count("Al") in (7, 9)
    assert len(family.starts) == 2 * FAMILIES["b2_defect_16"].starts_per_cell
    seeds = EVALUATION_SEEDS["validation"]
    for start in family.starts:
        cell = family.cells[start.info["cell"]]
        assert np.abs(start.positions - cell.positions).max() <= 0.05
        assert start.info["start_seed"] in seeds
        assert closest_pair(start, 3.0)[2] >= families.START_MIN_DISTANCE
    test_split = families.test_family("b2_defect_16", split="test", n_cells=2, cache_dir=False)
    assert test_split.starts[0].info["start_seed"] in EVALUATION_SEEDS["test"]
    assert not np.allclose(test_split.starts[0].positions, family.starts[0].positions)


def test_solid_solution_family_composition_and_prefix(tmp_path) -> None:
    two = families.test_family("bcc_solid_solution_16", n_cells=2, cache_dir=tmp_path)
    three = families.test_family("bcc_solid_solution_16", n_cells=3, cache_dir=tmp_path)
    assert_same(two.cells, three.cells[:2])
    assert_same(two.starts, three.starts[: len(two.starts)])
    for cell in three.cells:
        assert len(cell) == 16
        fraction = np.mean(np.array(cell.get_chemical_symbols()) == "Al")
        assert 0.1 <= fraction <= 0.5
    assert not two.relaxed
    with pytest.raises(ValueError, match="n_cells must be 1–12"):
        families.test_family("bcc_solid_solution_16", n_cells=13, cache_dir=False)


def test_random_family_cells_are_relaxed_minima_shared_by_both_betas(tmp_path) -> None:
    small = families.test_family("random_4-8_beta0.3", n_cells=1, cache_dir=tmp_path)
    wide = families.test_family("random_4-8_beta0.5", n_cells=1, cache_dir=tmp_path)
    assert_same(small.cells, wide.cells)
    report = small.cells[0].info["minimum"]
    assert report.is_minimum and report.fmax <= families.MINIMUM_FMAX
    assert 4 <= len(small.cells[0]) <= 8
    for family, beta in ((small, 0.3), (wide, 0.5)):
        for start in family.starts:
            assert np.abs(start.positions - family.cells[0].positions).max() <= beta
    assert {s.info["start_seed"] for s in small.starts}.isdisjoint({s.info["start_seed"] for s in wide.starts})


def test_training_matches_find_strained_supercells_and_exclude_them(tmp_path) -> None:
    family = families.test_family("b2_defect_16", n_cells=2, cache_dir=tmp_path)
    vacancy = family.cells[0]
    strained = vacancy.repeat((2, 1, 1))
    strained.set_cell(strained.cell * 1.03, scale_atoms=True)
    unrelated = Atoms("AlFe", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=np.eye(3) * 2.85, pbc=True)
    assert training_matches(family.cells, [unrelated, strained]) == [(0, 1)]
    kept = families.test_family("b2_defect_16", n_cells=2, cache_dir=tmp_path, training=[unrelated, strained])
    assert len(kept.cells) == 1 and len(kept.cells[0]) == 16
    assert all(start.info["cell"] == 0 and len(start) == 16 for start in kept.starts)
    assert len(kept.dropped) == 1 and "matches training structure 1" in kept.dropped[0]


def test_a_draw_the_generator_cannot_build_is_replaced_by_the_next(monkeypatch) -> None:
    monkeypatch.setattr(families, "_BUILT", {})
    plain = families._draw

    def failing(generator, seed, j, cache_dir):
        if j == 1:
            raise RuntimeError("No random crystal in 200 draws")
        return plain(generator, seed, j, cache_dir)

    monkeypatch.setattr(families, "_draw", failing)
    family = families.test_family("bcc_solid_solution_16", n_cells=2, cache_dir=False)
    seed = family_seed("bcc_solid_solution_16", "validation")
    assert [cell.info["cell_seed"] for cell in family.cells] == [f"{seed}/0", f"{seed}/2"]
    assert family.dropped == ["cell draw 1 (not built): No random crystal in 200 draws"]
    monkeypatch.setattr(families, "_BUILT", {})
    monkeypatch.setattr(families, "_draw", plain)
    three = families.test_family("bcc_solid_solution_16", n_cells=3, cache_dir=False)
    assert_same(family.cells, [three.cells[0], three.cells[2]])
