"""Variable-cell relaxation of many structures: relax_many(..., cell=NAME) and run_batch(..., cell=NAME), each structure
through its own ASE cell filter, as RLOptimizer relaxes one."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.filters import FrechetCellFilter
from ase.io import read

from sb3_crystal.calculators import ForceCallCounter, LammpsEAMCalculator
from sb3_crystal.envs.observation import ObservationLayout
from sb3_crystal.relax import RLOptimizer, batch, relax_many
from sb3_crystal.relax.agent_io import CrystalAgent, ZeroPolicy
from sb3_crystal.relax.batch_runner import run_batch
from sb3_crystal.relax.filters import check_gives_stress
from sb3_crystal.structures.io import write_structure
from sb3_crystal.structures.prototypes import build_prototype
from tests.relax.test_cell_filters import RESIDUAL, strained_b2, zero_agent

FMAX = 0.02


def strained_cells() -> list:
    """Three small strained Al–Fe cells: two 4-atom B2 rows (3 % strain, rattled) and the 2-atom B2 cell strained 4 %."""
    cells = [strained_b2(0), strained_b2(1)]
    b2 = build_prototype("AlFe-B2")
    deformation = np.eye(3) + 0.04 * np.random.default_rng(2).uniform(-1, 1, (3, 3))
    b2.set_cell(b2.cell @ deformation, scale_atoms=True)
    cells.append(b2)
    for atoms in cells:
        atoms.info.clear()
    return cells


def alone(atoms, agent):
    """One structure through RLOptimizer(FrechetCellFilter(...)) with its own calculator."""
    atoms = atoms.copy()
    atoms.calc = LammpsEAMCalculator()
    optimizer = RLOptimizer(FrechetCellFilter(atoms), agent, logfile=None)
    converged = optimizer.run(fmax=FMAX, steps=200)
    return atoms, optimizer, converged


def test_a_batch_through_frechet_reaches_zero_stress_as_each_alone():
    agent = zero_agent()
    cells = strained_cells()
    counters = [ForceCallCounter(LammpsEAMCalculator()) for _ in cells]
    inputs = []
    for atoms, counter in zip(cells, counters, strict=True):
        atoms = atoms.copy()
        atoms.calc = counter  # each input's own counting calculator: relax_many uses it as it is
        inputs.append(atoms)
    results = relax_many(inputs, agent, fmax=FMAX, steps=200, cell="frechet", batch_size=2)
    for start, result, counter in zip(cells, results, counters, strict=True):
        assert result.converged and result.stop_reason == "converged" and result.cell_filter == "frechet"
        assert result.fmax <= FMAX and result.cell_fmax <= FMAX
        assert result.force_calls == counter.force_calls > 2  # every call counted, the stress check not among them
        relaxed = result.structure
        assert not np.allclose(relaxed.cell.cellpar(), start.cell.cellpar(), atol=1e-3)  # the cell moved
        # The recorded stress is the calculator's at the relaxed cell, and it is converged: the filter's cell rows
        # are the virial per atom, so |stress| · volume / atoms ≤ fmax (to the filter's log-strain rounding).
        check = relaxed.copy()
        check.calc = LammpsEAMCalculator()
        np.testing.assert_allclose(result.stress, check.get_stress(), atol=1e-10)
        np.testing.assert_allclose(relaxed.get_stress(), result.stress)  # on the relaxed structure too
        assert np.abs(result.stress).max() * relaxed.get_volume() / len(relaxed) < FMAX * 1.5
        summary = result.summary()
        assert summary["max_stress"] == pytest.approx(np.abs(result.stress).max())
        assert summary["volume"] == pytest.approx(relaxed.get_volume())
        np.testing.assert_allclose(summary["cellpar"], relaxed.cell.cellpar())
        # What one RLOptimizer(FrechetCellFilter(atoms)) gives for this structure alone.
        atoms, optimizer, converged = alone(start, agent)
        assert converged and optimizer.force_calls == result.force_calls and optimizer.nsteps == result.steps
        np.testing.assert_allclose(relaxed.positions, atoms.positions, atol=1e-8)
        np.testing.assert_allclose(relaxed.cell.array, atoms.cell.array, atol=1e-8)
        assert result.energy == pytest.approx(atoms.get_potential_energy(), abs=1e-9)


@pytest.mark.parametrize("name", ["unit", "strain"])
def test_the_other_filters_relax_the_cell(name):
    start = strained_cells()[1]
    (result,) = relax_many([start], zero_agent(), fmax=FMAX, steps=200, cell=name, calculator="lammps")
    assert result.converged and result.cell_filter == name and result.cell_fmax <= FMAX
    assert not np.allclose(result.structure.cell.cellpar(), start.cell.cellpar(), atol=1e-3)
    if name == "strain":  # the cell alone: the atoms keep their fractional coordinates
        np.testing.assert_allclose(result.structure.get_scaled_positions(), start.get_scaled_positions(), atol=1e-9)
    else:
        assert result.fmax <= FMAX


class NoStress(Calculator):
    """The EAM's energy and forces, no stress; counts its evaluations."""

    implemented_properties = ("energy", "free_energy", "forces")

    def __init__(self) -> None:
        super().__init__()
        self.inner = LammpsEAMCalculator()
        self.calls = 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        energy, forces = self.inner.compute(self.atoms.numbers, np.asarray(self.atoms.cell), self.atoms.positions)
        self.results = {"energy": energy, "free_energy": energy, "forces": forces}


class BrokenStress(NoStress):
    """Says it gives the stress, then fails to."""

    implemented_properties = ("energy", "free_energy", "forces", "stress")

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        if "stress" in properties:
            raise PropertyNotImplementedError("no virial in this build")
        super().calculate(atoms, properties, system_changes)


def test_a_calculator_without_stress_is_refused_before_any_work(tmp_path):
    calc = NoStress()
    with pytest.raises(ValueError, match=r"structure 0 .*cell='frechet'.*needs the stress.*NoStress gives none"):
        relax_many(strained_cells(), zero_agent(), cell="frechet", calculator=calc, on_error="record")
    assert calc.calls == 0  # refused from what it declares: no relaxation, no evaluation
    with pytest.raises(ValueError, match=r"no virial in this build"):
        relax_many(strained_cells(), zero_agent(), cell="frechet", calculator=BrokenStress())
    (tmp_path / "in").mkdir()
    write_structure(strained_cells()[0], tmp_path / "in" / "a.cif")
    with pytest.raises(ValueError, match=r"a\.cif: a variable-cell relaxation needs the stress"):
        run_batch([tmp_path / "in"], tmp_path / "out", model=zero_agent(), cell="frechet", calculator=calc, progress=False)
    assert not (tmp_path / "out").exists()  # nothing written
    relax_many(strained_cells()[:1], zero_agent(), steps=2, calculator=NoStress())  # at fixed cell it is fine
    atoms = strained_cells()[0]
    atoms.calc = ForceCallCounter(LammpsEAMCalculator())
    check_gives_stress(atoms)  # a counter: its calculator is asked, nothing counted
    assert atoms.calc.force_calls == 0


def test_bad_cell_settings_are_refused():
    with pytest.raises(ValueError, match=r"cell must be one of frechet, unit, strain .* got 'exp'"):
        relax_many(strained_cells(), zero_agent(), cell="exp")
    layout = ObservationLayout(n_max=8, history=RESIDUAL["history"], proposal="lbfgs", cell=True)
    cell_agent = CrystalAgent(ZeroPolicy(), 8, dict(RESIDUAL), ("Al", "Fe"), observation=layout.to_dict())
    for cell in ("unit", None):
        with pytest.raises(ValueError, match="relaxes the cell through FrechetCellFilter"):
            relax_many(strained_cells(), cell_agent, cell=cell)


def test_run_batch_writes_the_relaxed_cells_and_resumes_only_the_same_setting(tmp_path, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    cells = strained_cells()
    write_structure(cells, folder / "frames.extxyz")
    agent = zero_agent()
    settings = dict(model=agent, fmax=FMAX, progress=False, calculator="lammps")
    out = tmp_path / "out"
    rows = run_batch([folder], out, cell="frechet", **settings)
    frames = read(folder / "frames.extxyz", index=":")
    expected = relax_many(frames, agent, fmax=FMAX, cell="frechet", calculator="lammps")
    assert [row["error"] for row in rows] == [None] * 3
    for row, result in zip(rows, expected, strict=True):
        assert row["converged"] and row["cell_filter"] == "frechet" and row["cell_fmax"] <= FMAX
        assert row["force_calls"] == result.force_calls
        relaxed = read(out / row["output"])  # the relaxed cell and its stress, in the structure file
        np.testing.assert_allclose(relaxed.cell.array, result.structure.cell.array, atol=1e-9)
        np.testing.assert_allclose(relaxed.get_stress(), result.stress, atol=1e-12)
        assert row["max_stress"] == pytest.approx(np.abs(result.stress).max())
        np.testing.assert_allclose(row["cellpar"], relaxed.cell.cellpar(), atol=1e-9)
    with open(out / "summary.csv") as file:
        table = list(csv.DictReader(file))
    np.testing.assert_allclose([float(v) for v in table[0]["cellpar"].split()], rows[0]["cellpar"])
    assert json.loads((out / "run.json").read_text())["cell"] == "frechet"

    relaxed_again: list = []
    original = batch.relax_many

    def spy(structures, *args, **kwargs):
        structures = list(structures)
        relaxed_again.extend(structures)
        return original(structures, *args, **kwargs)

    monkeypatch.setattr(batch, "relax_many", spy)
    assert run_batch([folder], out, cell="frechet", **settings) == rows  # the same setting: resumed, nothing to do
    assert relaxed_again == []
    with pytest.raises(ValueError, match=r"cell: 'frechet' there, 'unit' now"):
        run_batch([folder], out, cell="unit", **settings)
    with pytest.raises(ValueError, match=r"cell: 'frechet' there, None now"):
        run_batch([folder], out, **settings)
    fixed = tmp_path / "fixed"
    run_batch([folder], fixed, steps=3, **settings)  # a fixed-cell folder records no cell setting ...
    assert "cell" not in json.loads((fixed / "run.json").read_text())
    with pytest.raises(ValueError, match=r"cell: None there, 'frechet' now"):  # ... and refuses a cell batch
        run_batch([folder], fixed, steps=3, cell="frechet", **settings)
    assert relaxed_again and all(row["cell_filter"] is None for row in json.loads((fixed / "summary.json").read_text()))


def test_a_cell_aware_agent_predicts_per_structure_as_alone():
    """An agent trained with CrystalRelaxEnv(cell=True) (here untrained, tiny) moves atoms and cell itself: the batch
    leaves its prediction to each structure's optimizer, and each result is what RLOptimizer gives alone."""
    from sb3_crystal.algorithms import CrystalTD3
    from sb3_crystal.envs import CrystalRelaxEnv

    tiny = dict(n_layers=1, mul=4, lmax=1, num_basis=4, radial_neurons=8, species_dim=4, force_basis=4, action_basis=4)
    env = CrystalRelaxEnv(cell=True, history=2, proposal="lbfgs", action_mode="residual", max_displacement=0.05)
    model = CrystalTD3("CrystalTFNPolicy", env, policy_kwargs=tiny, seed=0)
    env.close()
    cells = strained_cells()
    results = relax_many(cells, model, fmax=FMAX, steps=4, cell="frechet", calculator="lammps")
    for start, result in zip(cells, results, strict=True):
        atoms = start.copy()
        atoms.calc = LammpsEAMCalculator()
        optimizer = RLOptimizer(FrechetCellFilter(atoms), model, logfile=None)
        optimizer.run(fmax=FMAX, steps=4)
        assert result.force_calls == optimizer.force_calls and result.steps == optimizer.nsteps
        np.testing.assert_allclose(result.structure.cell.array, atoms.cell.array, atol=1e-10)
        np.testing.assert_allclose(result.structure.positions, atoms.positions, atol=1e-10)
        assert not np.allclose(result.structure.cell.array, start.cell.array)  # it moved the cell


def test_a_pymatgen_structure_relaxes_its_cell_too():
    from pymatgen.io.ase import AseAtomsAdaptor

    from sb3_crystal.relax import relax_structure

    start = strained_cells()[1]
    relaxed = relax_structure(AseAtomsAdaptor.get_structure(start), zero_agent(), fmax=FMAX, cell="frechet")
    (expected,) = relax_many([start], zero_agent(), fmax=FMAX, cell="frechet", calculator="lammps")
    assert relaxed.properties["cell_filter"] == "frechet" and relaxed.properties["converged"]
    assert relaxed.properties["force_calls"] == expected.force_calls
    np.testing.assert_allclose(relaxed.lattice.matrix, expected.cell, atol=1e-8)
    assert relaxed.properties["volume"] == pytest.approx(relaxed.volume)
