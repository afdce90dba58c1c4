"""run_batch: many inputs, results streamed atomically to a folder, resume after an interruption, bad inputs reported."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
from ase.io import read

from sb3_crystal.relax import batch, batch_runner, load_shipped_agent, relax_many
from sb3_crystal.relax.agent_io import NoDefaultAgentError
from sb3_crystal.relax.batch_runner import collect_jobs, run_batch
from sb3_crystal.structures.geometry import distort
from sb3_crystal.structures.io import write_structure
from sb3_crystal.structures.prototypes import build_prototype

STEPS = 30


@pytest.fixture(scope="module")
def agent():
    try:
        return load_shipped_agent("alfe")
    except NoDefaultAgentError:
        pytest.skip("the shipped agent is not installed")


def b2_starts(count: int, seed: int = 0):
    b2 = build_prototype("AlFe-B2")
    frames = [distort(b2, 0.2, np.random.default_rng(seed + k), min_distance=1.6) for k in range(count)]
    for atoms in frames:
        atoms.info.clear()
    return frames


def dataset_csv(path, structures) -> None:
    """A dataset CSV as pandas writes it: an unnamed index column, CIF text, nsites."""
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.io.cif import CifWriter

    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["", "structure", "nsites"])
        for k, atoms in enumerate(structures):
            writer.writerow([10 + k, str(CifWriter(AseAtomsAdaptor.get_structure(atoms))), len(atoms)])


@pytest.fixture
def inputs(tmp_path):
    """A folder with a 3-frame extxyz, a CIF and a file that is no structure; a second folder with a CIF of the same
    name; a dataset CSV of two cells."""
    folder, other = tmp_path / "in", tmp_path / "other"
    folder.mkdir(), other.mkdir()
    frames = b2_starts(6)
    write_structure(frames[:3], folder / "frames.extxyz")
    write_structure(frames[3], folder / "cell.cif")
    (folder / "broken.cif").write_text("data_x\n_cell_length_a nonsense\n")
    write_structure(frames[4], other / "cell.cif")
    dataset_csv(tmp_path / "set.csv", frames[4:6])
    return tmp_path


def test_jobs_from_folders_globs_frames_and_the_dataset_csv(inputs):
    jobs = collect_jobs([inputs / "in", str(inputs / "other" / "*.cif"), inputs / "set.csv", inputs / "in" / "cell.cif"])
    names = [job.name for job in jobs]
    assert len(names) == len(set(names)) == 8  # in/cell.cif given twice counts once
    assert names[:5] == ["broken", names[1], "frames_0", "frames_1", "frames_2"]
    assert names[1].startswith("cell-") and names[5].startswith("cell-") and names[1] != names[5]  # same stem: hashed
    assert names[6:] == ["set_10", "set_11"]  # the CSV's index column
    assert jobs[0].atoms is None and "broken.cif" in jobs[0].error
    assert [len(job.atoms) for job in jobs[1:]] == [2] * 7
    assert collect_jobs([inputs / "in"])[1].name == "cell"  # names are stable: no clash, no hash
    with pytest.raises(FileNotFoundError, match=r"nowhere\.cif"):
        collect_jobs([inputs / "in", inputs / "nowhere.cif"])
    with pytest.raises(FileNotFoundError, match="no file matches"):
        collect_jobs([str(inputs / "*.poscar")])


def test_results_stream_to_the_folder_and_a_bad_input_does_not_stop_the_others(inputs, agent, tmp_path):
    out = tmp_path / "out"
    rows = run_batch([inputs / "in", inputs / "set.csv"], out, model=agent, steps=STEPS, progress=False)
    assert [row["name"] for row in rows] == ["broken", "cell", "frames_0", "frames_1", "frames_2", "set_10", "set_11"]
    assert rows[0]["stop_reason"] == "error" and "broken.cif" in rows[0]["error"] and rows[0]["output"] is None
    summary = json.loads((out / "summary.json").read_text())
    assert summary == rows
    with open(out / "summary.csv") as file:
        table = list(csv.DictReader(file))
    assert [row["name"] for row in table] == [row["name"] for row in rows]
    assert table[2]["force_calls"] == str(rows[2]["force_calls"])
    # Each relaxed structure is what relax_many gives for it, with its energy and forces.
    frames = read(inputs / "in" / "frames.extxyz", index=":")
    expected = relax_many(frames, agent, steps=STEPS)
    for row, result in zip(rows[2:5], expected, strict=True):
        relaxed = read(out / row["output"])
        assert row["force_calls"] == result.force_calls and row["converged"] == result.converged
        np.testing.assert_allclose(relaxed.positions, result.structure.positions, atol=1e-6)
        assert relaxed.get_potential_energy() == pytest.approx(row["energy"])
        assert relaxed.info["source"].endswith(f"frames.extxyz:{row['name'][-1]}")
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]


def test_a_rerun_resumes_after_an_interruption(inputs, agent, tmp_path, monkeypatch):
    out = tmp_path / "out"
    original = batch_runner._Output.record
    calls = []

    def interrupted(self, job, summary, atoms):
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed after the third finished job
        calls.append(job.name)
        original(self, job, summary, atoms)

    monkeypatch.setattr(batch_runner._Output, "record", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_batch([inputs / "in"], out, model=agent, steps=STEPS, progress=False)
    first = json.loads((out / "summary.json").read_text())
    names = ["broken", "cell", "frames_0", "frames_1", "frames_2"]
    assert [row["name"] for row in first] == [name for name in names if name in calls]
    monkeypatch.setattr(batch_runner._Output, "record", original)

    relaxed = []
    counting = batch.relax_many  # what the runner calls for each chunk

    def spy(structures, *args, **kwargs):
        structures = list(structures)
        relaxed.extend(structures)
        return counting(structures, *args, **kwargs)

    monkeypatch.setattr(batch, "relax_many", spy)
    rows = run_batch([inputs / "in"], out, model=agent, steps=STEPS, progress=False)
    assert len(rows) == 5 and len(relaxed) == 5 - len(calls)  # only the jobs without a record ran again
    assert [row["name"] for row in rows] == names
    relaxed.clear()
    run_batch([inputs / "in"], out, model=agent, steps=STEPS, progress=False)
    assert relaxed == []  # everything done: nothing runs
    run_batch([inputs / "in"], out, model=agent, steps=STEPS, progress=False, retry_errors=True)
    assert relaxed == []  # the unreadable file fails again without a relaxation


def test_other_settings_in_the_same_folder_are_refused(inputs, agent, tmp_path):
    out = tmp_path / "out"
    run_batch([inputs / "other"], out, model=agent, steps=STEPS, progress=False)
    with pytest.raises(ValueError, match=r"fmax: 0\.05 there, 0\.01 now"):
        run_batch([inputs / "other"], out, model=agent, fmax=0.01, steps=STEPS, progress=False)


def test_unseen_species_are_an_error_in_the_summary(agent, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    copper = build_prototype("AlFe-B2")
    copper.numbers[:] = 29
    write_structure(copper, folder / "copper.cif")
    write_structure(b2_starts(1)[0], folder / "good.cif")
    rows = run_batch([folder], tmp_path / "out", model=agent, steps=STEPS, progress=False)
    assert rows[0]["stop_reason"] == "error" and "Cu" in rows[0]["error"]
    assert rows[1]["error"] is None and rows[1]["force_calls"] > 0


@pytest.mark.slow  # two spawned workers import torch and load the agent: about 55 s on a shared, loaded 2-core machine
def test_worker_processes_give_the_results_of_one_process(agent, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    write_structure(b2_starts(4, seed=20), folder / "frames.extxyz")
    alone = run_batch([folder], tmp_path / "one", model="alfe", steps=STEPS, progress=False)
    parallel = run_batch([folder], tmp_path / "two", model="alfe", steps=STEPS, progress=False, workers=2, batch_size=1)
    assert [r["error"] for r in parallel] == [None] * 4
    assert [r["force_calls"] for r in parallel] == [r["force_calls"] for r in alone]
    for row in parallel:
        np.testing.assert_allclose(
            read(tmp_path / "two" / row["output"]).positions, read(tmp_path / "one" / row["output"]).positions, atol=1e-6
        )


@pytest.mark.slow  # a local Ray cluster and two actors start: about 55 s on a shared, loaded 2-core machine
def test_ray_runs_the_batch_on_a_local_cluster(agent, tmp_path):
    ray = pytest.importorskip("ray")
    folder = tmp_path / "in"
    folder.mkdir()
    write_structure(b2_starts(3, seed=30), folder / "frames.extxyz")
    alone = run_batch([folder], tmp_path / "one", model="alfe", steps=STEPS, progress=False)
    on_ray = run_batch([folder], tmp_path / "ray", model="alfe", steps=STEPS, progress=False, ray_address="local")
    assert not ray.is_initialized()  # the cluster it started is shut down
    assert [r["force_calls"] for r in on_ray] == [r["force_calls"] for r in alone]
    assert [r["converged"] for r in on_ray] == [r["converged"] for r in alone]
