"""Shared fixtures: a per-session minima cache, so tests never touch the user's cache."""

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
