"""Shared fixtures: a per-session minima cache (tests never touch the user's cache), one BLAS thread, and the relaxed
B2 AlFe cell with a LAMMPS force-call counter for the benchmark and optimizer tests."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_STRUCTURES = Path(__file__).resolve().parents[1].parent / "shared" / "paper_structures"


@pytest.fixture(autouse=True, scope="session")
def _isolated_minima_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    mp = pytest.MonkeyPatch()
    mp.setenv("SB3_CRYSTAL_CACHE", str(tmp_path_factory.mktemp("sb3_crystal_cache")))
    yield
    mp.undo()


@pytest.fixture(autouse=True, scope="session")
def _one_blas_thread() -> None:
    """Tiny matrices throughout (3×3 cell algebra, GPMin, BFGS of a few atoms): BLAS threads only spin."""
    from sb3_crystal.threads import blas_threads

    with blas_threads(1):
        yield


@pytest.fixture(scope="module")
def b2_minimum():
    """The B2 AlFe cell relaxed with the default EAM (checked to be a minimum), ``info["source"] = "AlFe-B2"``; one per
    test module, so a module may change it."""
    from sb3_crystal.structures.minima import relaxed_minimum
    from sb3_crystal.structures.prototypes import build_prototype

    minimum, report = relaxed_minimum(build_prototype("AlFe-B2"), cache_dir=False)
    assert report.is_minimum
    minimum.info["source"] = "AlFe-B2"
    return minimum


@pytest.fixture(scope="module")
def lammps_counter():
    """A :class:`~sb3_crystal.benchmark.classical.ForceCallCounter` around the default LAMMPS EAM, one per module."""
    from sb3_crystal.benchmark.classical import ForceCallCounter

    return ForceCallCounter("lammps")


@pytest.fixture(scope="module")
def relax_env():
    """The default :class:`~sb3_crystal.envs.crystal_relax.CrystalRelaxEnv` with 10-step episodes, one per module."""
    from sb3_crystal.envs.crystal_relax import CrystalRelaxEnv

    environment = CrystalRelaxEnv(max_steps=10)
    yield environment
    environment.close()


@pytest.fixture(scope="module")
def mlp_model(relax_env):
    """A tiny untrained MLP TD3 agent on :func:`relax_env` (:func:`tests.helpers.mlp_td3`)."""
    from tests.helpers import mlp_td3

    return mlp_td3(relax_env)
