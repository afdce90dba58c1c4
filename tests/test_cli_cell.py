"""``sb3-crystal relax --cell``: variable-cell relaxation from the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk
from ase.io import read, write

from sb3_crystal.cli import build_parser, main


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


@pytest.fixture(scope="module")
def strained_pair(tmp_path_factory):
    """Two strained Al–Fe cells: a 4-atom B2 row cell (3 % strain, rattled) and the 2-atom B2 cell strained 4 %."""
    from sb3_crystal.structures.prototypes import build_prototype

    folder = tmp_path_factory.mktemp("pair")
    rng = np.random.default_rng(1)
    row = bulk("Fe", "bcc", a=2.88, cubic=True) * (2, 1, 1)
    row.symbols[[1, 3]] = "Al"
    row.set_cell(row.cell @ (np.eye(3) + 0.03 * rng.uniform(-1, 1, (3, 3))), scale_atoms=True)
    row.positions += rng.uniform(-0.03, 0.03, row.positions.shape)
    b2 = build_prototype("AlFe-B2")
    b2.set_cell(b2.cell @ (np.eye(3) + 0.04 * rng.uniform(-1, 1, (3, 3))), scale_atoms=True)
    for name, atoms in (("row", row), ("b2", b2)):
        write(folder / f"{name}.cif", atoms)
    return [folder / "row.cif", folder / "b2.cif"]


def test_relax_cell_with_several_inputs_relaxes_each_as_alone(strained_pair, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["relax", *map(str, strained_pair), "--cell", "--out-dir", str(out), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "2 structure(s): 2 converged" in printed and "cell (frechet filter): largest stress component" in printed
    rows = json.loads((out / "summary.json").read_text())
    for path, row in zip(strained_pair, rows, strict=True):
        assert row["cell_filter"] == "frechet" and row["cell_fmax"] <= 0.05 and row["fmax"] <= 0.05
        relaxed = read(out / row["output"])
        assert not np.allclose(relaxed.cell.cellpar(), read(path).cell.cellpar(), atol=1e-3)  # the cell moved
        # The same structure relaxed alone by `relax --cell` (the hybrid, its own calculator).
        single = tmp_path / f"{path.stem}.extxyz"
        assert main(["relax", str(path), "--cell", "--quiet", "--out", str(single)]) == 0
        assert f"force calls: {row['force_calls']}," in capsys.readouterr().out
        alone = read(single)
        np.testing.assert_allclose(relaxed.cell.cellpar(), alone.cell.cellpar(), atol=1e-3)
        assert relaxed.get_potential_energy() == pytest.approx(alone.get_potential_energy(), abs=1e-4)


def test_relax_batch_takes_cell_too():
    parser = build_parser()
    assert parser.parse_args(["relax-batch", "a.cif", "--out-dir", "o", "--cell"]).cell == "frechet"
    assert parser.parse_args(["relax-batch", "a.cif", "--out-dir", "o", "--cell", "strain"]).cell == "strain"
    assert parser.parse_args(["relax-batch", "a.cif", "--out-dir", "o"]).cell is None
    assert parser.parse_args(["relax", "a.cif", "b.cif", "--out-dir", "o", "--cell", "unit"]).cell == "unit"


def test_relax_cell_batch_with_a_calculator_without_stress_is_one_line(strained_pair, tmp_path, capsys, monkeypatch):
    from ase.calculators.calculator import Calculator

    from sb3_crystal.calculators import CALCULATORS, LammpsEAMCalculator

    class NoStress(Calculator):
        implemented_properties = ("energy", "free_energy", "forces")

        def calculate(self, atoms=None, properties=("energy",), system_changes=()):
            super().calculate(atoms, properties, system_changes)
            lammps = LammpsEAMCalculator()
            energy, forces = lammps.compute(self.atoms.numbers, np.asarray(self.atoms.cell), self.atoms.positions)
            self.results = {"energy": energy, "free_energy": energy, "forces": forces}

    monkeypatch.setitem(CALCULATORS, "nostress", NoStress)
    out = tmp_path / "out"
    for argv in (
        ["relax", *map(str, strained_pair), "--cell", "--out-dir", str(out), "--calculator", "nostress"],
        ["relax", str(strained_pair[0]), "--cell", "--out", str(tmp_path / "r.extxyz"), "--calculator", "nostress"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "needs the stress, and calculator 'nostress' gives none" in err and len(err.strip().splitlines()) == 1
        assert "row.cif" in err
    assert not out.exists() and not (tmp_path / "r.extxyz").exists()
    assert main(["relax", *map(str, strained_pair), "--cell", "--out-dir", str(out), "--trajectory", "t.traj"]) == 2
    assert "--trajectory is for one structure" in capsys.readouterr().err


def test_relax_cell_with_an_unknown_filter_is_an_argument_error(strained, capsys):
    assert main(["relax", str(strained), "--cell", "bogus"]) == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err


@pytest.mark.parametrize("cell", [[], ["--cell"]])
def test_relax_with_the_learned_curvature_alone(strained, cell, tmp_path, capsys):
    """``--model learned-curvature``: LearnedCurvature relaxes the structure (and with --cell its cell) alone."""
    from ase.filters import FrechetCellFilter

    from sb3_crystal.calculators import make_calculator
    from sb3_crystal.relax import LearnedCurvature

    out = tmp_path / "relaxed.extxyz"
    argv = ["relax", str(strained), "--model", "learned-curvature", *cell, "--quiet", "--fmax", "0.02", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "converged: yes" in printed and "handover" not in printed
    calls = int(printed.split("force calls: ")[1].split(",")[0])
    atoms = read(strained)  # the same relaxation through the Python API: the same force calls, the same minimum
    atoms.calc = make_calculator("lammps")
    optimizer = LearnedCurvature(FrechetCellFilter(atoms) if cell else atoms, logfile=None)
    assert optimizer.run(fmax=0.02, steps=200)
    assert optimizer.force_calls == calls
    relaxed = read(out)
    assert relaxed.get_potential_energy() == pytest.approx(atoms.get_potential_energy(), abs=1e-3)
    np.testing.assert_allclose(relaxed.cell.cellpar(), atoms.cell.cellpar(), atol=1e-6)


def test_learned_curvature_refuses_what_does_not_apply(strained, tmp_path, capsys):
    out = str(tmp_path / "x.extxyz")
    assert main(["relax", str(strained), "--model", "learned-curvature", "--finisher", "FIRE", "--out", out]) == 2
    assert "relaxes alone" in capsys.readouterr().err
    assert main(["relax", str(strained), str(strained), "--model", "learned-curvature", "--out-dir", str(tmp_path / "o")]) == 2
    assert "one structure per call" in capsys.readouterr().err
    copper = bulk("Cu", "fcc", a=3.6, cubic=True)
    write(tmp_path / "cu.cif", copper)
    assert main(["relax", str(tmp_path / "cu.cif"), "--model", "learned-curvature", "--calculator", "emt", "--out", out]) == 2
    assert "Al–Fe only" in capsys.readouterr().err
    assert not (tmp_path / "x.extxyz").exists()
