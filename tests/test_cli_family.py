"""``sb3-crystal benchmark --family``: a test family's fixed starts beside the distorted structures."""

from __future__ import annotations

import csv

from sb3_crystal.cli import main


def test_benchmark_runs_a_family_beside_the_structures(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["benchmark", "--out", str(out), "--n-starts", "1", "--fmax", "0.1", "--optimizers", "BFGS", "--model", "none"]
    assert main([*argv, "--family", "random_4-8_beta0.3", "--family-cells", "1", "--no-progress"]) == 0
    rows = list(csv.DictReader((out / "runs.csv").open()))
    family = [row for row in rows if row["structure"] == "random_4-8_beta0.3 (unseen)" and row["optimizer"] == "BFGS"]
    assert len(family) == 2  # one cell, its two fixed starts
    curvature = [row for row in rows if row["optimizer"] == "LearnedCurvature"]
    assert len(curvature) == 3 and all(row["converged"] == "True" for row in curvature)  # B2's start and the family's
    assert {row["start_seed"] for row in family} == {str(7_000_001), str(7_000_002)}  # the family's validation seeds
    assert len([row for row in rows if row["structure"] == "AlFe-B2" and row["optimizer"] == "BFGS"]) == 1
    assert "families random_4-8_beta0.3 (validation split" in capsys.readouterr().out


def test_benchmark_without_family(tmp_path):
    out = tmp_path / "bench"
    argv = ["benchmark", "--out", str(out), "--n-starts", "1", "--fmax", "0.1", "--optimizers", "BFGS", "--model", "none"]
    assert main([*argv, "--family", "--no-progress"]) == 0
    assert {row["structure"] for row in csv.DictReader((out / "runs.csv").open())} == {"AlFe-B2"}


def test_benchmark_unknown_family_is_one_line_before_work(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["benchmark", "--out", str(out), "--family", "nonsense", "--model", "none"]) == 2
    err = capsys.readouterr().err
    assert "unknown family 'nonsense'" in err and "Traceback" not in err
    assert not out.exists()


def test_learned_curvature_is_left_out_where_its_model_does_not_reach(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["benchmark", "--out", str(out), "--n-starts", "1", "--fmax", "0.1", "--optimizers", "BFGS", "--model", "none"]
    assert main([*argv, "--structures", "Al-fcc", "--calculator", "emt", "--no-progress"]) == 0
    assert "LearnedCurvature: its Hessian model is the Al–Fe EAM's" in capsys.readouterr().out
    assert {row["optimizer"] for row in csv.DictReader((out / "runs.csv").open())} == {"BFGS"}
