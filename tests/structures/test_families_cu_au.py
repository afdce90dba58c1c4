"""The Cu–Au validation families on ASE's EMT: their own seed blocks, EMT minima, compositions as specified."""

from __future__ import annotations

import numpy as np
from ase.calculators.emt import EMT

from sb3_crystal.structures import families
from sb3_crystal.structures.families import EVALUATION_SEEDS, FAMILIES, family_seed, training_matches
from sb3_crystal.structures.minima import max_force

CU_AU = ["cuau_random_4-8_beta0.3", "cuau_fcc_solid_solution_32"]


def test_cu_au_families_come_after_the_al_fe_ones_and_use_emt() -> None:
    names = list(FAMILIES)
    assert names[-2:] == CU_AU  # appended: the Al–Fe families keep their seed blocks
    assert family_seed("random_4-8_beta0.3", "validation") == 7_000_000
    for name in CU_AU:
        assert FAMILIES[name].calculator == "emt"
        assert family_seed(name, "validation") in EVALUATION_SEEDS["validation"]
    assert all(FAMILIES[name].calculator == "lammps" for name in names[:-2])


def test_cu_au_random_family_cells_are_emt_minima_and_starts_within_beta(tmp_path) -> None:
    family = families.test_family("cuau_random_4-8_beta0.3", n_cells=2, cache_dir=tmp_path)
    again = families.test_family("cuau_random_4-8_beta0.3", n_cells=2, cache_dir=False)
    for first, second in zip(family.starts, again.starts, strict=True):
        np.testing.assert_allclose(first.positions, second.positions, atol=1e-8)
    for cell in family.cells:
        assert set(cell.get_chemical_symbols()) <= {"Cu", "Au"} and 4 <= len(cell) <= 8
        probe = cell.copy()
        probe.calc = EMT()  # ASE's own EMT: the cells are minima of the energy surface the family names
        assert max_force(probe.get_forces()) <= families.MINIMUM_FMAX + 1e-9
    for start in family.starts:
        assert np.abs(start.positions - family.cells[start.info["cell"]].positions).max() <= 0.3
        assert start.info["start_seed"] in EVALUATION_SEEDS["validation"]


def test_cu_au_solid_solution_family_composition_and_training_check(tmp_path) -> None:
    family = families.test_family("cuau_fcc_solid_solution_32", n_cells=2, cache_dir=tmp_path)
    assert not family.relaxed and len(family.starts) == 4
    for cell in family.cells:
        symbols = np.array(cell.get_chemical_symbols())
        assert len(cell) == 32 and 0.25 <= np.mean(symbols == "Cu") <= 0.75
    # a strained copy of a family cell among the training structures is found and its cell left out
    strained = family.cells[1].copy()
    strained.set_cell(strained.cell * 1.02, scale_atoms=True)
    assert (1, 0) in training_matches(family.cells, [strained])
    kept = families.test_family("cuau_fcc_solid_solution_32", n_cells=2, cache_dir=tmp_path, training=[strained])
    assert len(kept.cells) == 1 and any("matches training structure 0" in note for note in kept.dropped)
