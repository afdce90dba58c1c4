"""``sb3-crystal relax-batch``: many inputs into an output folder, resumable; user errors in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sb3_crystal.cli import build_parser, main
from sb3_crystal.relax.agent_io import NoDefaultAgentError, load_shipped_agent
from sb3_crystal.structures.geometry import distort
from sb3_crystal.structures.io import write_structure
from sb3_crystal.structures.prototypes import build_prototype


@pytest.fixture(scope="module")
def shipped():
    try:
        load_shipped_agent("alfe")
    except NoDefaultAgentError:
        pytest.skip("the shipped agent is not installed")


def test_options_parse():
    parser = build_parser()
    args = parser.parse_args(["relax-batch", "a.cif", "b/", "--out-dir", "out", "--ray"])
    assert args.inputs == ["a.cif", "b/"] and args.ray == "local" and args.workers == 1
    args = parser.parse_args(["relax-batch", "a.cif", "--out-dir", "out", "--ray", "auto", "--workers", "4"])
    assert args.ray == "auto" and args.workers == 4
    assert parser.parse_args(["relax-batch", "a.cif", "--out-dir", "out"]).ray is None


def test_relax_batch_writes_the_folder_and_resumes(shipped, tmp_path, capsys):
    b2 = build_prototype("AlFe-B2")
    frames = [distort(b2, 0.2, np.random.default_rng(k), min_distance=1.6) for k in range(3)]
    write_structure(frames, tmp_path / "frames.extxyz")
    out = tmp_path / "out"
    argv = ["relax-batch", str(tmp_path / "*.extxyz"), "--out-dir", str(out), "--steps", "30", "--no-progress"]
    status = main(argv)
    printed = capsys.readouterr().out
    rows = json.loads((out / "summary.json").read_text())
    assert len(rows) == 3 and all((out / row["output"]).is_file() for row in rows)
    converged = sum(row["converged"] for row in rows)
    assert status == (0 if converged == 3 else 1)
    assert f"3 structure(s): {converged} converged" in printed
    assert main(argv) == status  # the rerun finds everything done
    assert json.loads((out / "summary.json").read_text()) == rows


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["relax-batch", str(tmp_path / "missing.cif"), "--out-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "relax-batch: error:" in err and "missing.cif" in err and len(err.strip().splitlines()) == 1
    assert main(["relax-batch", "x.cif"]) == 2  # --out-dir is required
    assert "--out-dir" in capsys.readouterr().err


def test_relax_itself_takes_many_inputs_with_an_out_dir(shipped, tmp_path, capsys):
    b2 = build_prototype("AlFe-B2")
    for k in range(2):
        write_structure(distort(b2, 0.2, np.random.default_rng(10 + k), min_distance=1.6), tmp_path / f"s{k}.extxyz")
    inputs = [str(tmp_path / "s0.extxyz"), str(tmp_path / "s1.extxyz")]
    assert main(["relax", *inputs]) == 2  # many inputs need a folder for their results
    assert "--out-dir" in capsys.readouterr().err
    out = tmp_path / "out"
    status = main(["relax", *inputs, "--out-dir", str(out), "--steps", "30", "--no-progress"])
    rows = json.loads((out / "summary.json").read_text())
    assert len(rows) == 2 and status in (0, 1) and "2 structure(s)" in capsys.readouterr().out
    assert main(["relax", *inputs, "--out-dir", str(out), "--trajectory", str(tmp_path / "t.traj")]) == 2
