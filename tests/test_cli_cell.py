"""``sb3-crystal relax --cell``: variable-cell relaxation from the command line."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.io import read, write

from sb3_crystal.cli import main


@pytest.fixture(scope="module")
def strained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cell")
    atoms = bulk("Fe", "bcc", a=2.88, cubic=True) * (2, 1, 1)
    atoms.symbols[[1, 3]] = "Al"
    deformation = np.eye(3) + 0.03 * np.random.default_rng(0).uniform(-1, 1, (3, 3))
    atoms.set_cell(atoms.cell @ deformation, scale_atoms=True)
    write(folder / "strained.cif", atoms)
    return folder / "strained.cif"


@pytest.mark.parametrize("cell", [[], ["unit"]])
def test_relax_cell_converges_the_stress(strained, cell, tmp_path, capsys):
    out = tmp_path / "relaxed.extxyz"
    assert main(["relax", str(strained), "--cell", *cell, "--quiet", "--fmax", "0.02", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "converged: yes" in printed and "filter): largest stress component" in printed
    relaxed = read(out)
    before = read(strained)
    assert not np.allclose(relaxed.cell.cellpar(), before.cell.cellpar(), atol=1e-3)  # the cell moved
    # the filter's cell forces (virial per atom) are converged: |stress| * volume / atoms ≤ fmax (to rounding)
    from sb3_crystal.calculators import make_calculator

    relaxed.calc = make_calculator("lammps")
    assert np.abs(relaxed.get_stress()).max() * relaxed.get_volume() / len(relaxed) < 0.02 * 1.5


def test_relax_without_cell_keeps_the_cell(strained, tmp_path, capsys):
    out = tmp_path / "relaxed.extxyz"
    assert main(["relax", str(strained), "--quiet", "--out", str(out)]) == 0
    np.testing.assert_allclose(read(out).cell.cellpar(), read(strained).cell.cellpar(), atol=1e-6)


def test_relax_cell_refuses_a_batch(strained, tmp_path, capsys):
    argv = ["relax", str(strained), str(strained), "--cell", "--out-dir", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "--cell relaxes one structure" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_relax_cell_with_an_unknown_filter_is_an_argument_error(strained, capsys):
    assert main(["relax", str(strained), "--cell", "bogus"]) == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err
