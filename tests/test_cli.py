"""The ``sb3-crystal`` command line."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sb3_crystal.cli import main
from tests.helpers import mlp_td3, planted_zip

ROOT = Path(__file__).resolve().parents[1]


def test_small_benchmark_run_writes_results(tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["benchmark", "--n-starts", "3", "--optimizers", "BFGS", "fire", "--fmax", "0.1", "0.02", "--out", str(out)]
    assert main([*args, "--model", "none", "--family", "--no-learned-curvature", "--no-progress"]) == 0  # B2, two optimizers
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
        (["--beta", "-1"], "argument --beta: -1 is not in [0, 2] Å"),
        (["--beta", "abc"], "argument --beta: invalid float value: 'abc'"),
        (["--beta", "1e6"], "argument --beta: 1e6 is not in [0, 2] Å"),
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

    from sb3_crystal.structures import io as real_io

    module = types.ModuleType("sb3_crystal.structures.io")
    module._format_from_name = real_io._format_from_name
    module.StructureFileError = real_io.StructureFileError
    module.write_structure = real_io.write_structure

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

    from sb3_crystal.threads import blas_threads

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
    before = get()  # the test session runs with one thread (conftest)
    with blas_threads(before + 1):
        assert get() == before + 1
    assert get() == before


# -- relax ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def relax_inputs(tmp_path_factory):
    """A distorted B2 start (extxyz), a Cu structure, an SB3 zip and an agent folder of a tiny untrained agent."""
    pytest.importorskip("sb3_crystal.structures.io")
    from ase.build import bulk
    from ase.io import write

    from sb3_crystal.envs.crystal_relax import CrystalRelaxEnv
    from sb3_crystal.relax import save_agent
    from sb3_crystal.structures.geometry import distort

    folder = tmp_path_factory.mktemp("relax_inputs")
    env = CrystalRelaxEnv(max_steps=10)
    model = mlp_td3(env)
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
    argv = ["relax", str(relax_inputs / "start.extxyz"), "--model", str(relax_inputs / "model.zip"), "--allow-pickle"]
    assert main([*argv, "--fmax", "0.02", "--finisher", "fire", "--out", str(out), "--trajectory", str(traj)]) == 0
    printed = capsys.readouterr().out
    assert "converged: yes" in printed and "force calls: " in printed and "handover to FIRE: after" in printed
    relaxed = read(out)
    assert np.sqrt((relaxed.get_forces() ** 2).sum(axis=1)).max() < 0.02
    steps = int(printed.split("steps: ")[1].split(",")[0])
    assert len(read(traj, index=":")) == steps + 1


def test_relax_agent_folder_alone(relax_inputs, tmp_path, capsys):
    argv = ["relax", str(relax_inputs / "start.extxyz"), "--model", str(relax_inputs / "agent"), "--agent-only"]
    argv += ["--steps", "5", "--quiet"]
    status = main([*argv, "--fmax", "1e-6", "--out", str(tmp_path / "r.extxyz")])
    assert status == 1  # not converged in 5 steps
    printed = capsys.readouterr().out
    assert "converged: no" in printed and "steps: 5" in printed and "RLOptimizer:" not in printed and "handover" not in printed
    assert (tmp_path / "r.extxyz").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{inputs}/start.extxyz", "--model", "{inputs}/missing.zip"], "No model at"),
        (["{inputs}/nofile.extxyz", "--model", "{inputs}/model.zip"], "no structure file"),
        (["{inputs}/start.extxyz", "--model", "{inputs}/model.zip"], "add --allow-pickle, or convert it once"),
        (["{inputs}/cu.extxyz", "--model", "{inputs}/agent"], "Cu not seen in training"),
        (["{inputs}/start.extxyz", "--model", "{inputs}/agent", "--finisher", "Newton"], "unknown finisher 'Newton'"),
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
    assert main(["relax", start, "--quiet", "--out", str(tmp_path / "a.extxyz")]) == 0  # no --model, the hybrid
    printed = capsys.readouterr().out
    assert "converged: yes" in printed and "handover" in printed
    assert main(["relax", start, "--hybrid", "--quiet", "--out", str(tmp_path / "h.extxyz")]) == 0  # kept as a no-op
    assert "handover" in capsys.readouterr().out
    assert main(["relax", start, "--model", "B2", "--quiet", "--out", str(tmp_path / "b.extxyz")]) == 0
    assert "converged: yes" in capsys.readouterr().out


def test_relax_help(capsys):
    assert main(["relax", "--help"]) == 0
    out = capsys.readouterr().out
    for option in (
        "STRUCTURE",
        "--out-dir",
        "--workers",
        "--model",
        "--fmax",
        "--steps",
        "--agent-only",
        "--switch-fmax",
        "--finisher",
        "--out",
    ):
        assert option in out
    assert "--optimizer" not in out  # the deprecated spelling of --finisher is not advertised


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

    model = mlp_td3(CrystalRelaxEnv(n_max=2))
    model.save(tmp_path / "agent.zip")
    argv = ["benchmark", "--n-starts", "2", "--optimizers", "BFGS", "--fmax", "0.05", "--out", str(tmp_path / "out")]
    assert main([*argv, "--model", str(tmp_path / "agent.zip")]) == 2
    assert "add --allow-pickle" in capsys.readouterr().err
    assert main([*argv, "--model", str(tmp_path / "agent.zip"), "--allow-pickle", "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "| RL " in table and "RL+auto@0.1" in table
    assert main([*argv, "--model", "none", "--no-progress"]) == 0
    assert "RL" not in capsys.readouterr().out.split("Force calls to reach")[-1]
    assert main([*argv, "--model", str(tmp_path / "missing.zip")]) == 2
    assert "No model at" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("models", "structures", "expected"),
    [
        (["auto"], ["AlFe-B2"], ["default", "b2", "curvature"]),
        (["auto"], ["Al-fcc"], ["default"]),
        (["auto", "b2", "x.zip"], ["Al-fcc"], ["default", "b2", "x.zip"]),
        (["ALFE", "default", "B2", "Auto"], ["AlFe-B2"], ["default", "b2", "curvature"]),
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


def test_cli_finisher_names_are_the_hybrids_finishers():
    from sb3_crystal.cli import _FINISHERS
    from sb3_crystal.relax.hybrid_optimizer import DEFAULT_FINISHER, FINISHERS

    assert _FINISHERS[0] == DEFAULT_FINISHER
    assert sorted(_FINISHERS[1:]) == sorted(FINISHERS)


def test_cli_old_finisher_options_still_work_and_warn(capsys):
    from sb3_crystal.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["relax", "x.cif", "--optimizer", "fire"])
    assert args.finisher == "FIRE" and "--optimizer is deprecated, use --finisher" in capsys.readouterr().err
    assert parser.parse_args(["relax", "x.cif"]).finisher == "auto" and not capsys.readouterr().err
    args = parser.parse_args(["benchmark", "--hybrid-optimizers", "bfgs", "GPMin"])
    assert args.finishers == ["BFGS", "GPMin"] and "use --finishers" in capsys.readouterr().err
    assert parser.parse_args(["benchmark"]).finishers == ["auto"]


# -- relax: the default mode, inputs and outputs checked before any step ----------------------------------------------
@pytest.fixture
def no_relaxation(monkeypatch):
    """Make any relaxer the CLI builds fail the test: the errors below must come before the first step."""
    import sb3_crystal.relax

    def refuse(*args, **kwargs):
        raise AssertionError("a relaxer was built")

    monkeypatch.setattr(sb3_crystal.relax, "HybridOptimizer", refuse)
    monkeypatch.setattr(sb3_crystal.relax, "RLOptimizer", refuse)


def one_error_line(capsys, *parts):
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err + captured.out and "error" in lines[0]
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def test_relax_refuses_atoms_too_close_before_any_step(tmp_path, capsys, no_relaxation):
    from ase.build import bulk
    from ase.io import write

    atoms = bulk("Fe", "bcc", a=2.8553, cubic=True)
    atoms[0].symbol = "Al"
    atoms.positions[1] = atoms.positions[0] + [0.17, 0.0, 0.0]
    write(tmp_path / "close.extxyz", atoms)
    out = tmp_path / "out"
    out.mkdir()
    assert (
        main(["relax", str(tmp_path / "close.extxyz"), "--out", str(out / "r.extxyz"), "--trajectory", str(out / "t.traj")])
        == 2
    )
    one_error_line(capsys, "close.extxyz: atoms 0 and 1 are 0.17 Å apart", "--input-min-distance")
    assert not list(out.iterdir())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--out", "{tmp}/x.foo"], "--out {tmp}/x.foo: cannot write the structure(s) in the format of this name"),
        (["--out", "{tmp}/x.csv"], "--out {tmp}/x.csv: cannot write"),
        (["--out", "{tmp}"], "is a folder"),
        (["--out", "{tmp}/missing/r.extxyz"], "the folder {tmp}/missing does not exist"),
        (["--trajectory", "/missing/dir/t.traj"], "--trajectory /missing/dir/t.traj: the folder /missing/dir does not exist"),
        (["--trajectory", "{tmp}/t.xyz"], "written in ASE's binary format: give a name ending in .traj"),
    ],
)
def test_relax_refuses_bad_outputs_before_any_step(relax_inputs, options, message, tmp_path, capsys, no_relaxation):
    argv = ["relax", str(relax_inputs / "start.extxyz"), "--model", str(relax_inputs / "agent")]
    if "--out" not in options:
        argv += ["--out", str(tmp_path / "r.extxyz")]
    assert main([*argv, *(o.format(tmp=tmp_path) for o in options)]) == 2
    one_error_line(capsys, message.format(tmp=tmp_path))
    assert not list(tmp_path.iterdir())  # not even the check's own temporary files


def test_relax_with_a_calculator_lacking_an_element_is_one_line(relax_inputs, tmp_path, capsys, no_relaxation):
    assert main(["relax", str(relax_inputs / "start.extxyz"), "--calculator", "emt", "--out", str(tmp_path / "r.extxyz")]) == 2
    one_error_line(capsys, "element(s) Fe not covered by the calculator")
    assert not list(tmp_path.iterdir())


def test_relax_warns_when_the_agent_was_trained_with_another_calculator(tmp_path, capsys):
    from ase.build import bulk
    from ase.io import write

    atoms = bulk("Al", "fcc", a=4.05).repeat((2, 1, 1))
    atoms.positions[1] += [0.1, -0.05, 0.08]
    write(tmp_path / "al.extxyz", atoms)
    argv = ["relax", str(tmp_path / "al.extxyz"), "--quiet", "--out", str(tmp_path / "r.extxyz")]
    assert main([*argv, "--calculator", "emt"]) == 0  # the shipped agent was trained on LAMMPS; the hybrid converges
    captured = capsys.readouterr()
    assert "warning: the agent was trained with calculator 'lammps' but relaxes with 'emt'" in captured.err
    assert len(captured.err.strip().splitlines()) == 1 and "converged: yes" in captured.out
    assert main([*argv, "--calculator", "lammps:AlFe_mm.eam.fs"]) == 0  # the same potential: no warning
    assert "warning" not in capsys.readouterr().err


def test_shipped_names_never_load_a_file_of_that_name(relax_inputs, tmp_path, monkeypatch, capsys):
    marker = tmp_path / "code_ran"
    for name in ("default", "b2", "alfe", "B2", "curvature"):
        planted_zip(tmp_path / name, marker)
    monkeypatch.chdir(tmp_path)
    start = str(relax_inputs / "start.extxyz")
    for model in ([], ["--model", "b2"], ["--model", "DEFAULT"], ["--model", "curvature"]):
        assert main(["relax", start, *model, "--quiet", "--out", "r.extxyz"]) == 0, model
        assert "converged: yes" in capsys.readouterr().out
    argv = ["benchmark", "--n-starts", "1", "--optimizers", "BFGS", "--fmax", "0.05", "--no-progress", "--out", "bench"]
    assert main([*argv, "--model", "default", "b2"]) == 0
    table = capsys.readouterr().out.split("Force calls to reach")[-1]
    assert "| RL " in table and "| RL-B2 " in table
    assert main(["relax", start, "--model", "./b2", "--out", "r.extxyz"]) == 2  # the file, asked for by its path
    one_error_line(capsys, "model './b2' is an SB3 zip", "--allow-pickle")
    assert main([*argv, "--model", "./default"]) == 2
    one_error_line(capsys, "--allow-pickle")
    assert not marker.exists()


def test_a_foreign_sb3_zip_is_one_line(tmp_path, relax_inputs, capsys):
    from stable_baselines3 import TD3

    TD3("MlpPolicy", "Pendulum-v1", policy_kwargs={"net_arch": [4]}).save(tmp_path / "pendulum.zip")
    argv = ["relax", str(relax_inputs / "start.extxyz"), "--model", str(tmp_path / "pendulum.zip"), "--allow-pickle"]
    assert main([*argv, "--out", str(tmp_path / "r.extxyz")]) == 2
    one_error_line(capsys, "pendulum.zip: cannot load as CrystalTD3", "Not a crystal agent")
    assert not (tmp_path / "r.extxyz").exists()


def test_convert_writes_a_weights_only_folder(relax_inputs, tmp_path, capsys):
    from sb3_crystal.relax import load_agent
    from sb3_crystal.relax.agent_io import load_model

    folder = tmp_path / "agent"
    assert main(["convert", str(relax_inputs / "model.zip"), str(folder)]) == 0
    assert "loads without --allow-pickle" in capsys.readouterr().out
    assert sorted(p.name for p in folder.iterdir()) == ["settings.json", "weights.pt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left
    converted, original = load_agent(folder), load_model(relax_inputs / "model.zip", allow_pickle=True)
    for key, value in original.policy.state_dict().items():
        assert np.array_equal(converted.policy.state_dict()[key].numpy(), value.numpy()), key
    assert converted.calculator == "lammps" and converted.species == ("Al", "Fe")
    start = str(relax_inputs / "start.extxyz")
    assert main(["relax", start, "--model", str(folder), "--quiet", "--out", str(tmp_path / "r.extxyz")]) == 0
    capsys.readouterr()
    assert main(["convert", str(relax_inputs / "model.zip"), str(folder)]) == 2  # never over an agent
    one_error_line(capsys, "already exists")
    assert main(["convert", str(relax_inputs / "model.zip"), str(tmp_path / "no" / "agent")]) == 2
    one_error_line(capsys, "does not exist")


def test_read_structure_file_falls_back_to_ase_and_pymatgen(tmp_path):
    from ase.build import bulk
    from ase.io import write
    from pymatgen.io.ase import AseAtomsAdaptor

    from sb3_crystal.cli import UserError, read_structure_file

    atoms = bulk("Fe", "bcc", a=2.8553, cubic=True)
    atoms[0].symbol = "Al"
    write(tmp_path / "AlFe-POSCAR", atoms, format="vasp")  # a name only ASE's content sniffing knows
    AseAtomsAdaptor.get_structure(atoms).to(filename=str(tmp_path / "alfe.json"))  # pymatgen's own format
    for name in ("AlFe-POSCAR", "alfe.json"):
        (found,) = read_structure_file(tmp_path / name)
        assert found.get_chemical_formula() == "AlFe" and found.pbc.all(), name
        assert np.allclose(found.cell.array, atoms.cell.array) and found.info["source"] == str(tmp_path / name)
        assert found.calc is None and type(found).__name__ == "Atoms"
    (tmp_path / "junk.dat").write_text("not a structure\n")
    with pytest.raises(UserError, match=r"cannot read structures from .*junk\.dat.*ASE: .*pymatgen: "):
        read_structure_file(tmp_path / "junk.dat")


@pytest.mark.parametrize("name", ["start.cif", "POSCAR", "start.json"])
def test_relax_reads_cif_poscar_and_pymatgen_files(name, tmp_path, capsys):
    from ase.build import bulk
    from ase.io import write
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = bulk("Fe", "bcc", a=2.8553, cubic=True)
    atoms[0].symbol = "Al"
    atoms.positions[1] += [0.12, -0.05, 0.08]
    if name.endswith(".json"):
        AseAtomsAdaptor.get_structure(atoms).to(filename=str(tmp_path / name))
    else:
        write(tmp_path / name, atoms, format="cif" if name.endswith(".cif") else "vasp")
    assert main(["relax", str(tmp_path / name), "--quiet", "--out", str(tmp_path / "r.extxyz")]) == 0
    assert "converged: yes" in capsys.readouterr().out


# -- benchmark and dataset: errors before work --------------------------------------------------------------------
@pytest.mark.parametrize("out", ["/proc/sb3-crystal-x", "{tmp}/a_file/sub"])
def test_benchmark_refuses_an_unwritable_out_before_work(out, tmp_path, capsys, monkeypatch):
    import sb3_crystal.benchmark.harness as harness

    monkeypatch.setattr(harness, "run_benchmark", lambda *a, **k: pytest.fail("the benchmark ran"))
    (tmp_path / "a_file").write_text("")
    out = out.format(tmp=tmp_path)
    assert main(["benchmark", "--n-starts", "1", "--model", "none", "--out", out]) == 2
    one_error_line(capsys, f"--out {out}: cannot write there")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_benchmark_out_check_leaves_nothing(tmp_path, capsys):
    from sb3_crystal.cli import check_output_folder

    check_output_folder(tmp_path / "a" / "b", "--out")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("action", ["inspect", "build", "relax"])
def test_dataset_without_structures_is_an_error(action, capsys):
    assert main(["dataset", action]) == 2
    one_error_line(capsys, f"dataset {action} needs structures")


def test_dataset_out_is_checked_before_work(tmp_path, capsys):
    assert main(["dataset", "relax", "AlFe-B2", "Fe-bcc", "--out", str(tmp_path / "two.vasp")]) == 2
    one_error_line(capsys, "can only store 1 Atoms")
    assert not list(tmp_path.iterdir())


def test_the_relaxers_are_exported_at_the_top():
    import sb3_crystal
    import sb3_crystal.relax
    from sb3_crystal import HybridOptimizer, RLOptimizer

    assert RLOptimizer is sb3_crystal.relax.RLOptimizer and HybridOptimizer is sb3_crystal.relax.HybridOptimizer
    assert {"RLOptimizer", "HybridOptimizer"} <= set(sb3_crystal.__all__)


@settings(max_examples=40, deadline=None)
@given(
    distance=st.floats(0.01, 1.5),
    shift=st.lists(st.floats(-20, 20), min_size=3, max_size=3),
    direction=st.lists(st.floats(-1, 1), min_size=3, max_size=3).filter(lambda v: np.linalg.norm(v) > 0.1),
)
def test_the_close_atoms_check_sees_the_pair_wherever_it_is(distance, shift, direction):
    from ase import Atoms

    from sb3_crystal.cli import UserError, check_relax_input

    unit = np.asarray(direction) / np.linalg.norm(direction)
    atoms = Atoms("AlFe", positions=[[1.0, 1.0, 1.0], [1.0, 1.0, 1.0] + distance * unit], cell=[4.0, 4.2, 4.4], pbc=True)
    atoms.translate(shift)  # anywhere in or out of the cell: periodic images count
    if distance < 0.5 - 1e-9:
        with pytest.raises(UserError, match=rf"atoms 0 and 1 are {distance:.3g} Å apart, closer than 0.5 Å"):
            check_relax_input(atoms, "s.cif", 0.5)
    elif distance > 0.5 + 1e-9:
        check_relax_input(atoms, "s.cif", 0.5)
    check_relax_input(atoms, "s.cif", 0.0)  # 0: no check


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.set_pbc([True, True, False]), "not periodic in all three directions"),
        (lambda a: a.set_cell([[1, 0, 0], [2, 0, 0], [0, 0, 1]]), "zero volume"),
        (lambda a: a.positions.__setitem__((0, 0), np.nan), "not all finite"),
        (lambda a: a.__delitem__(slice(None)), "has no atoms"),
    ],
)
def test_check_relax_input_names_the_fault(change, message):
    from ase.build import bulk

    from sb3_crystal.cli import UserError, check_relax_input

    atoms = bulk("Fe", "bcc", a=2.8553, cubic=True)
    change(atoms)
    with pytest.raises(UserError, match=rf"^s\.cif: .*{message}"):
        check_relax_input(atoms, "s.cif", 0.5)
