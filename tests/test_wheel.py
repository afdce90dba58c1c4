"""The wheel works outside the checkout: built, installed into a temporary folder and run from a third one, it
finds the package's rl-zoo configs and trains with their hyperparameters."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

pytest.importorskip("rl_zoo3")
pytest.importorskip("setuptools")

REPO = Path(__file__).resolve().parents[1]
# what the wheel is built from: the package and the files pyproject.toml names
SOURCES = ["pyproject.toml", "README.md", "LICENSE", "sb3_crystal", "zoo_configs"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(install folder, run folder): the wheel built from a copy of the sources and installed with pip."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(path, source / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(path, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    wheels, target = root / "wheels", root / "site"
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", str(source), "-w", str(wheels)], check=True)
    (wheel,) = wheels.glob("sb3_crystal-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for name in ["sb3_crystal/zoo_configs/td3.yml", "sb3_crystal/zoo_configs/sac.yml", "sb3_crystal/zoo_configs/td3bc.yml"]:
        assert name in names, name
    for agent in ["default_agent", "b2_agent", "curvature_agent"]:
        assert f"sb3_crystal/relax/{agent}/MODEL_CARD.md" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names)
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True)
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    return target, elsewhere


def run_installed(installed, *args, timeout=240):
    target, cwd = installed
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


# the package's path, then ``sb3-crystal train`` (the console script's function)
TRAIN = "import sys, sb3_crystal; print('package:', sb3_crystal.__file__); from sb3_crystal.cli import main; sys.exit(main())"


@pytest.mark.slow  # about 35 s on a shared 2-core machine: a wheel build, an install and a fresh interpreter
def test_train_from_another_folder_uses_the_package_configs(installed):
    args = ["train", "--algo", "td3", "--env", "CrystalRelax-v0", "-n", "2", "--seed", "0"]
    result = run_installed(installed, "-c", TRAIN, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    target, cwd = installed
    target = target.resolve()
    lines = result.stdout.splitlines()
    package = next(line for line in lines if line.startswith("package:")).split(":", 1)[1].strip()
    assert Path(package).resolve().is_relative_to(target)  # the installed wheel, not the checkout
    config_line = next(line for line in lines if line.startswith("Loading hyperparameters from:"))
    assert Path(config_line.split(":", 1)[1].strip()).resolve() == target / "sb3_crystal/zoo_configs/td3.yml"
    saved = (cwd / "logs/td3/CrystalRelax-v0_1/CrystalRelax-v0/config.yml").read_text()
    used = dict(yaml.load(saved, Loader=yaml.UnsafeLoader))  # rl-zoo writes an OrderedDict
    ours = yaml.safe_load((REPO / "zoo_configs/td3.yml").read_text())["CrystalRelax-v0"]
    for key in ["policy", "learning_rate", "gamma", "batch_size", "state_noise", "env_kwargs", "target_policy_noise"]:
        assert used[key] == ours[key], key
    assert used["policy"] == "CrystalTFNPolicy"
