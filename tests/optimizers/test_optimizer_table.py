"""The one table of classical optimizers: names, lookup, and no torch behind it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ase.optimize
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.optimize import GPMin
from ase.optimize.optimize import Optimizer
from ase.optimize.precon import PreconLBFGS
from ase.optimize.sciopt import SciPyFminCG
from hypothesis import given
from hypothesis import strategies as st

from sb3_crystal.optimizers import (
    CLASSICAL_OPTIMIZERS,
    DEFAULT_OPTIMIZERS,
    FMAX_INDEPENDENT_OPTIMIZERS,
    OPTIMIZER_ALIASES,
    STEPWISE_OPTIMIZERS,
    UnknownOptimizerError,
    get_optimizer,
    optimizer_name,
)

PACKAGE = Path(__file__).resolve().parents[2] / "sb3_crystal"


def _rattled_copper():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)  # 4 atoms; EMT: milliseconds per force call
    atoms.rattle(0.1, seed=1)
    atoms.calc = EMT()
    return atoms


def _path(cls: type[Optimizer], fmax: float) -> tuple[list[np.ndarray], bool, float]:
    """Positions after every step of ``cls`` built the table's way, whether it converged, and the final fmax."""
    atoms = _rattled_copper()
    optimizer = cls(atoms, logfile=None)
    path: list[np.ndarray] = []
    optimizer.attach(lambda: path.append(atoms.positions.copy()))
    converged = optimizer.run(fmax=fmax, steps=200)
    return path, converged, float(np.linalg.norm(atoms.get_forces(), axis=1).max())


def test_the_issue_baselines_are_ases_own_optimizers_and_run_by_default():
    for name in ("BFGS", "FIRE", "GPMin"):
        assert get_optimizer(name) is getattr(ase.optimize, name)  # ASE's class with ASE's defaults
        assert name in DEFAULT_OPTIMIZERS
    assert issubclass(get_optimizer("PreconLBFGS"), PreconLBFGS)
    assert set(DEFAULT_OPTIMIZERS) <= set(CLASSICAL_OPTIMIZERS) and "GPMinFitted" not in DEFAULT_OPTIMIZERS
    assert set(OPTIMIZER_ALIASES.values()) <= set(CLASSICAL_OPTIMIZERS)
    assert all(alias == alias.lower() for alias in OPTIMIZER_ALIASES)


@pytest.mark.parametrize("name", sorted(CLASSICAL_OPTIMIZERS))
def test_every_optimizer_built_the_tables_way_relaxes(name):
    cls = get_optimizer(name)
    assert issubclass(cls, Optimizer)
    path, converged, fmax = _path(cls, 0.01)
    assert converged and fmax <= 0.01 and path


@pytest.mark.parametrize("cls", FMAX_INDEPENDENT_OPTIMIZERS, ids=lambda cls: cls.__name__)
def test_fmax_independent_optimizers_take_the_same_path_to_a_looser_threshold(cls):
    assert cls in CLASSICAL_OPTIMIZERS.values()
    tight, _, _ = _path(cls, 0.01)
    loose, converged, _ = _path(cls, 0.1)
    assert converged and len(loose) < len(tight)
    for step, (a, b) in enumerate(zip(loose, tight, strict=False)):
        np.testing.assert_array_equal(a, b, err_msg=f"step {step}")
    assert not {GPMin, SciPyFminCG} & set(FMAX_INDEPENDENT_OPTIMIZERS)  # their paths depend on fmax (see the table)


@pytest.mark.parametrize("name", sorted(CLASSICAL_OPTIMIZERS))
def test_stepwise_optimizers_take_one_step_per_call_and_the_others_cannot_be_stepped(name):
    atoms = _rattled_copper()
    optimizer = get_optimizer(name)(atoms, logfile=None)
    before = atoms.positions.copy()
    if name in STEPWISE_OPTIMIZERS:
        optimizer.step()
        assert not np.array_equal(atoms.positions, before)
    else:  # SciPy's optimizers run their own loop
        with pytest.raises((RuntimeError, NotImplementedError)):
            optimizer.step()
        np.testing.assert_array_equal(atoms.positions, before)


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("bfgs", "BFGS"),
        ("BFGSLINESEARCH", "BFGSLineSearch"),
        ("preconlbfgs", "PreconLBFGS"),
        ("ExpPreconLBFGS", "PreconLBFGS"),
        ("SciPyFminCG", "CG"),
        ("scipycg", "CG"),
        ("bfgsls", "BFGSLineSearch"),
        ("GPMINFITTED", "GPMinFitted"),
    ],
)
def test_lookup_ignores_case_and_knows_aliases(text, name):
    assert optimizer_name(text) == name
    assert get_optimizer(text) is CLASSICAL_OPTIMIZERS[name]


@given(st.sampled_from(sorted(CLASSICAL_OPTIMIZERS) + sorted(OPTIMIZER_ALIASES)), st.randoms())
def test_any_casing_of_a_name_or_alias_finds_the_same_optimizer(name, random):
    mixed = "".join(c.upper() if random.random() < 0.5 else c.lower() for c in name)
    assert get_optimizer(mixed) is get_optimizer(name)


@given(st.text(max_size=20))
def test_any_other_text_is_refused_with_the_same_error(text):
    known = {name.lower() for name in CLASSICAL_OPTIMIZERS} | set(OPTIMIZER_ALIASES)
    if text.lower() in known:
        assert get_optimizer(text) in CLASSICAL_OPTIMIZERS.values()
    else:
        with pytest.raises(UnknownOptimizerError, match="choose from BFGS, LBFGS"):
            get_optimizer(text)


@pytest.mark.parametrize("bad", ["Newton", "", " bfgs", "BFGS2", None, 3])
def test_unknown_names_get_one_clear_error_listing_the_names(bad):
    with pytest.raises(UnknownOptimizerError) as info:
        get_optimizer(bad)
    message = str(info.value)
    assert message.startswith(f"Unknown optimizer {bad!r}: choose from BFGS, LBFGS, ")
    assert all(name in message for name in CLASSICAL_OPTIMIZERS)
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)  # callers may catch either


def _imports_torch(statement: str) -> bool:
    stub = (
        "import types; parent = types.ModuleType('sb3_crystal'); "
        f"parent.__path__ = [{str(PACKAGE)!r}]; sys.modules['sb3_crystal'] = parent; "
    )
    code = f"import sys; {stub}{statement}; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent)
    return done.stdout.strip().splitlines()[-1] == "True"


@pytest.mark.parametrize("module", ["sb3_crystal.optimizers", "sb3_crystal.benchmark.classical", "sb3_crystal.benchmark"])
def test_the_table_and_the_classical_benchmark_import_no_torch(module):
    # The package's own __init__ is replaced by an empty package of the same path, so that this checks what the
    # module and everything it imports pull in: sb3_crystal/__init__.py itself imports the environments and the
    # policies (stable-baselines3, torch), so a plain `import sb3_crystal.optimizers` loads torch through it.
    assert not _imports_torch(f"import {module}")
