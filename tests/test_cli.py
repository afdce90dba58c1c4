"""The ``sb3-crystal`` command line."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sb3_crystal.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_small_benchmark_run_writes_results(tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["benchmark", "--n-starts", "3", "--optimizers", "BFGS", "fire", "--fmax", "0.1", "0.02", "--out", str(out)]
    assert main([*args, "--model", "none", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "AlFe-B2: AlFe, 2 atoms" in captured.out and "→ minimum" in captured.out
    assert "| AlFe-B2   | 2 | FIRE" in captured.out  # the summary table, optimizer names canonical
    for name in ("runs.csv", "summary.csv", "summary.md", "force_calls.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    with open(out / "runs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 * 2 * 2
    assert {r["optimizer"] for r in rows} == {"BFGS", "FIRE"} and {r["start_seed"] for r in rows} == {"0", "1", "2"}
    assert all(r["converged"] == "True" for r in rows)


def test_one_atom_cells_are_doubled(tmp_path, capsys):
    assert (
        main(["benchmark", "--structures", "al-fcc", "--n-starts", "1", "--optimizers", "LBFGS", "--out", str(tmp_path)]) == 0
    )
    assert "Al-fcc (2x1x1): Al2, 2 atoms" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--structures", "NoSuchPrototype"], "unknown structure 'NoSuchPrototype'"),
        (["--structures", "/no/such/file.cif"], "unknown structure '/no/such/file.cif'"),
        (["--beta", "-1"], "argument --beta: -1 is not ≥ 0"),
        (["--beta", "abc"], "argument --beta: invalid float value: 'abc'"),
        (["--fmax", "0.1", "0"], "argument --fmax: 0 is not > 0"),
        (["--n-starts", "0"], "argument --n-starts: 0 is not a positive integer"),
        (["--n-starts", "2.5"], "invalid int value"),
        (["--optimizers", "BFGS", "Newton"], "Unknown optimizer 'Newton'"),
        (["--calculator", "nosuch"], "calculator 'nosuch'"),
        (["--calculator", "lammps:missing.eam.fs"], "missing.eam.fs"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    ],
)
def test_user_errors_are_one_line_with_status_2(args, message, tmp_path, capsys):
    argv = ["benchmark", *args, "--out", str(tmp_path)]
    if "--n-starts" not in args:
        argv += ["--n-starts", "1"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert message in lines[0] and "error" in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("argv", [[], ["train"]])
def test_missing_or_unknown_command_is_a_user_error(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("argv", [["--help"], ["benchmark", "--help"], ["--version"]])
def test_help_exits_0(argv, capsys):
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "sb3-crystal" in out
    if "benchmark" in argv:
        for option in ("--structures", "--beta", "--fmax", "--n-starts", "--seed", "--optimizers", "--calculator", "--out"):
            assert option in out


def test_python_dash_m_runs_the_cli():
    result = subprocess.run(
        [sys.executable, "-m", "sb3_crystal", "benchmark", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "--n-starts" in result.stdout


@pytest.fixture
def fake_reader(monkeypatch):
    """Stand-in for ``sb3_crystal.structures.io`` (the CLI imports it lazily, only for files)."""
    import types

    from ase.build import bulk

    module = types.ModuleType("sb3_crystal.structures.io")

    def read_structures(path):
        text = Path(path).read_text()
        if "garbage" in text:
            raise ValueError(f"{path}: not a structure file")
        return [bulk("Cu" if "Cu" in text else "Fe", "bcc", a=2.8553, cubic=True)]

    module.read_structures = read_structures
    monkeypatch.setitem(sys.modules, "sb3_crystal.structures.io", module)
    return module


def test_structure_files_go_through_read_structures(fake_reader, tmp_path, capsys):
    path = tmp_path / "fe.vasp"
    path.write_text("Fe")
    out = tmp_path / "out"
    assert main(["benchmark", "--structures", str(path), "--n-starts", "1", "--optimizers", "BFGS", "--out", str(out)]) == 0
    assert f"{path}: Fe2, 2 atoms" in capsys.readouterr().out
    assert (out / "runs.csv").is_file()


@pytest.mark.parametrize(("content", "message"), [("garbage", "cannot read structures from"), ("Cu", "element(s) Cu")])
def test_bad_structure_files_are_user_errors(content, message, fake_reader, tmp_path, capsys):
    path = tmp_path / "bad.cif"
    path.write_text(content)
    assert main(["benchmark", "--structures", str(path), "--n-starts", "1", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err


def test_a_real_poscar_file(tmp_path, capsys):
    pytest.importorskip("sb3_crystal.structures.io")
    from ase.build import bulk
    from ase.io import write

    path = tmp_path / "Fe.vasp"
    write(path, bulk("Fe", "bcc", a=2.8553, cubic=True), format="vasp")
    argv = ["benchmark", "--structures", str(path), "--n-starts", "2", "--optimizers", "LBFGS", "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    assert "Fe2, 2 atoms" in capsys.readouterr().out


def test_blas_threads_sets_and_restores_thread_counts():
    import ctypes

    from sb3_crystal.cli import blas_threads

    with blas_threads(1) as adjusted:
        pass
    assert adjusted >= 0
    maps = Path("/proc/self/maps").read_text().splitlines()
    numpy_blas = [line.split()[-1] for line in maps if "numpy.libs" in line and "openblas" in line]
    if not numpy_blas:
        pytest.skip("NumPy without a bundled OpenBLAS")
    get = getattr(ctypes.CDLL(numpy_blas[0]), "scipy_openblas_get_num_threads64_", None)
    if get is None:
        pytest.skip("unknown OpenBLAS build")
    before = get()
    with blas_threads(1):
        assert get() == 1
    assert get() == before


# -- relax ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def relax_inputs(tmp_path_factory):
    """A distorted B2 start (extxyz), a Cu structure, an SB3 zip and an agent folder of a tiny untrained agent."""
    pytest.importorskip("sb3_crystal.structures.io")
    from ase.build import bulk
    from ase.io import write

    from sb3_crystal.algorithms import CrystalTD3
    from sb3_crystal.envs.crystal_relax import CrystalRelaxEnv
    from sb3_crystal.relax import save_agent
    from sb3_crystal.structures.geometry import distort

    folder = tmp_path_factory.mktemp("relax_inputs")
    env = CrystalRelaxEnv(max_steps=10)
    model = CrystalTD3("MultiInputPolicy", env, policy_kwargs={"net_arch": [8]}, seed=0)
    start = distort(env.dataset[0], 0.3, np.random.default_rng(0), min_distance=1.6)
    start.info.clear()
    write(folder / "start.extxyz", start)
    write(folder / "cu.extxyz", bulk("Cu", "fcc", a=3.6, cubic=True))
    model.save(folder / "model.zip")
    save_agent(model, folder / "agent")
    env.close()
    return folder


def test_relax_hybrid_writes_structure_and_trajectory(relax_inputs, tmp_path, capsys):
    from ase.io import read

    out, traj = tmp_path / "relaxed.extxyz", tmp_path / "relax.traj"
    argv = ["relax", str(relax_inputs / "start.extxyz"), "--model", str(relax_inputs / "model.zip"), "--hybrid"]
    assert main([*argv, "--fmax", "0.02", "--optimizer", "fire", "--out", str(out), "--trajectory", str(traj)]) == 0
    printed = capsys.readouterr().out
    assert "converged: yes" in printed and "force calls: " in printed and "handover to FIRE: after" in printed
    relaxed = read(out)
    assert np.sqrt((relaxed.get_forces() ** 2).sum(axis=1)).max() < 0.02
    steps = int(printed.split("steps: ")[1].split(",")[0])
    assert len(read(traj, index=":")) == steps + 1


def test_relax_agent_folder_alone(relax_inputs, tmp_path, capsys):
    argv = ["relax", str(relax_inputs / "start.extxyz"), "--model", str(relax_inputs / "agent"), "--steps", "5", "--quiet"]
    status = main([*argv, "--fmax", "1e-6", "--out", str(tmp_path / "r.extxyz")])
    assert status == 1  # not converged in 5 steps
    printed = capsys.readouterr().out
    assert "converged: no" in printed and "steps: 5" in printed and "RLOptimizer:" not in printed
    assert (tmp_path / "r.extxyz").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{inputs}/start.extxyz", "--model", "{inputs}/missing.zip"], "No model at"),
        (["{inputs}/nofile.extxyz", "--model", "{inputs}/model.zip"], "no structure file"),
        (["{inputs}/cu.extxyz", "--model", "{inputs}/agent"], "Cu not seen in training"),
        (["{inputs}/start.extxyz", "--model", "{inputs}/agent", "--optimizer", "Newton"], "unknown optimizer 'Newton'"),
        (["{inputs}/start.extxyz", "--model", "{inputs}/agent", "--fmax", "0"], "argument --fmax: 0 is not > 0"),
        (["{inputs}/start.extxyz", "--model", "nonsense"], "No model at nonsense"),
    ],
)
def test_relax_user_errors_are_one_line(relax_inputs, args, message, tmp_path, capsys):
    argv = ["relax", *(a.format(inputs=relax_inputs) for a in args), "--out", str(tmp_path / "r.extxyz")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_relax_uses_the_shipped_agents_by_name(relax_inputs, tmp_path, capsys):
    start = str(relax_inputs / "start.extxyz")
    assert main(["relax", start, "--hybrid", "--quiet", "--out", str(tmp_path / "a.extxyz")]) == 0  # no --model
    printed = capsys.readouterr().out
    assert "converged: yes" in printed and "handover" in printed
    assert main(["relax", start, "--model", "B2", "--quiet", "--out", str(tmp_path / "b.extxyz")]) == 0
    assert "converged: yes" in capsys.readouterr().out


def test_relax_help(capsys):
    assert main(["relax", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("STRUCTURE_FILE", "--model", "--fmax", "--steps", "--hybrid", "--switch-fmax", "--optimizer", "--out"):
        assert option in out


# -- dataset and train subcommands -------------------------------------------------------------------------------
def test_dataset_random_relax_and_inspect(tmp_path, capsys):
    out = tmp_path / "random.extxyz"
    assert main(["dataset", "random", "--count", "3", "--atoms", "2-3", "--seed", "4", "--out", str(out)]) == 0
    from ase.io import read

    frames = read(out, ":")
    assert len(frames) == 3 and all(2 <= len(a) <= 3 for a in frames)
    relaxed = tmp_path / "relaxed.extxyz"
    assert main(["dataset", "relax", str(out), "--out", str(relaxed), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert text.count("lowest Hessian eigenvalue") == 3
    assert all("is_minimum" in atoms.info for atoms in read(relaxed, ":"))
    assert main(["dataset", "inspect", "AlFe-hex"]) == 0
    assert "SADDLE POINT" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dataset", "random", "--atoms", "x"], "--atoms must be N or LO-HI"),
        (["dataset", "inspect", "NoSuchPrototype"], "unknown structure 'NoSuchPrototype'"),
        (["train", "--algo", "td3", "--env", "Nope-v0"], "Nope-v0 not found in gym registry"),
    ],
)
def test_dataset_and_train_user_errors(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_train_help_is_rl_zoo_help(capsys):
    assert main(["train", "--help"]) == 0
    assert "--trained-agent" in capsys.readouterr().out


def test_benchmark_with_a_trained_model_adds_the_agent_and_the_hybrid(tmp_path, capsys):
    from sb3_crystal import CrystalRelaxEnv
    from sb3_crystal.algorithms import CrystalTD3

    model = CrystalTD3("MultiInputPolicy", CrystalRelaxEnv(n_max=2), policy_kwargs={"net_arch": [8]}, seed=0)
    model.save(tmp_path / "agent.zip")
    argv = ["benchmark", "--n-starts", "2", "--optimizers", "BFGS", "--fmax", "0.05", "--out", str(tmp_path / "out")]
    assert main([*argv, "--model", str(tmp_path / "agent.zip"), "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "| RL " in table and "RL+auto@0.1" in table
    assert main([*argv, "--model", "none", "--no-progress"]) == 0
    assert "RL" not in capsys.readouterr().out.split("Force calls to reach")[-1]
    assert main([*argv, "--model", str(tmp_path / "missing.zip")]) == 2
    assert "cannot load the agent" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("models", "structures", "expected"),
    [
        (["auto"], ["AlFe-B2"], ["default", "b2"]),
        (["auto"], ["Al-fcc"], ["default"]),
        (["auto", "b2", "x.zip"], ["Al-fcc"], ["default", "b2", "x.zip"]),
        (["default", "none"], ["AlFe-B2"], []),
    ],
)
def test_benchmark_model_names(models, structures, expected):
    import argparse

    from sb3_crystal.cli import _model_names

    assert _model_names(argparse.Namespace(model=models, structures=structures)) == expected


def test_shipped_agent_names(tmp_path, monkeypatch):
    from sb3_crystal.relax import agent_io

    with pytest.raises(ValueError, match="unknown shipped agent 'c3'"):
        agent_io.load_shipped_agent("c3")
    monkeypatch.setitem(agent_io.SHIPPED_AGENTS, "b2", tmp_path / "nothing")
    with pytest.raises(agent_io.NoDefaultAgentError, match="No agent is installed"):
        agent_io.load_shipped_agent("b2")


def test_cli_hybrid_optimizer_names_follow_the_relax_module():
    # the CLI spells the names out (importing sb3_crystal.relax loads torch and slows --help): keep them in step
    from sb3_crystal.cli import _HYBRID_OPTIMIZERS
    from sb3_crystal.relax.optimizer import CLASSICAL_OPTIMIZERS, DEFAULT_FINISHER

    assert _HYBRID_OPTIMIZERS[0] == DEFAULT_FINISHER
    assert sorted(_HYBRID_OPTIMIZERS) == sorted(["auto", *CLASSICAL_OPTIMIZERS])
