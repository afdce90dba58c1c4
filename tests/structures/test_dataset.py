import numpy as np
import pytest
from ase.build import bulk

from sb3_crystal.structures.dataset import EmptyDatasetError, StructureDataset, load_structures


def test_prototypes_and_atoms_are_loaded_and_single_atoms_doubled():
    dataset = StructureDataset(["AlFe-B2", "Fe-bcc", bulk("Al", "fcc", a=4.0333)])
    assert [len(a) for a in dataset] == [2, 2, 2]
    assert dataset.reports[1].source == "Fe-bcc (2x1x1)"
    assert dataset.max_atoms == 2 and dataset.atomic_numbers == (13, 26)
    assert all(report.fmax <= 1e-3 for report in dataset.reports)
    assert "AlFe-B2: AlFe, 2 atoms" in dataset.summary()


def test_saddle_points_are_reported_in_the_summary():
    dataset = StructureDataset(["AlFe-hex"])
    assert not dataset.reports[0].is_minimum
    assert "SADDLE" in dataset.summary()


def test_empty_and_bad_specs():
    with pytest.raises(EmptyDatasetError):
        StructureDataset([])
    with pytest.raises(TypeError):
        load_structures(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="random:count"):
        load_structures("random:atoms=2")


def test_nearest_neighbour_distances():
    dataset = StructureDataset(["AlFe-B2"])
    assert dataset.nearest_neighbour_distances() == pytest.approx([np.sqrt(3) / 2 * 2.8513], abs=1e-3)


def test_saddle_policies():
    specs = ["AlFe-B2", "AlFe-hex"]
    assert len(StructureDataset(specs, saddles="drop")) == 1
    escaped = StructureDataset(specs, saddles="escape")
    assert len(escaped) == 2 and all(r.is_minimum for r in escaped.reports)
    assert escaped.reports[1].source == "AlFe-hex (escaped saddle)"
    assert escaped.reports[1].energy < StructureDataset(["AlFe-hex"]).reports[0].energy
    again = StructureDataset(["AlFe-hex"], saddles="escape")  # reproducible: the same minimum
    np.testing.assert_allclose(again[0].positions, escaped[1].positions, atol=1e-8)
    with pytest.raises(EmptyDatasetError, match="saddle"):
        StructureDataset(["AlFe-hex"], saddles="drop")
    with pytest.raises(ValueError, match="saddles must be one of"):
        StructureDataset(specs, saddles="ignore")
