"""The one table of classical optimizers: names, lookup, and no torch behind it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from ase.optimize import BFGS, FIRE, LBFGS, BFGSLineSearch, GPMin
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
    ExpPreconLBFGS,
    GPMinFitted,
    UnknownOptimizerError,
    get_optimizer,
    optimizer_name,
)

PACKAGE = Path(__file__).resolve().parents[2] / "sb3_crystal"


def test_table_holds_the_issue_baselines_as_ase_optimizer_classes():
    assert CLASSICAL_OPTIMIZERS == {
        "BFGS": BFGS,
        "LBFGS": LBFGS,
        "BFGSLineSearch": BFGSLineSearch,
        "FIRE": FIRE,
        "GPMin": GPMin,
        "PreconLBFGS": ExpPreconLBFGS,
        "CG": SciPyFminCG,
        "GPMinFitted": GPMinFitted,
    }
    assert all(issubclass(cls, Optimizer) for cls in CLASSICAL_OPTIMIZERS.values())
    assert issubclass(ExpPreconLBFGS, PreconLBFGS)
    assert DEFAULT_OPTIMIZERS == ("BFGS", "LBFGS", "BFGSLineSearch", "FIRE", "GPMin", "PreconLBFGS", "CG")
    assert set(FMAX_INDEPENDENT_OPTIMIZERS) <= set(CLASSICAL_OPTIMIZERS.values())
    assert GPMin not in FMAX_INDEPENDENT_OPTIMIZERS and SciPyFminCG not in FMAX_INDEPENDENT_OPTIMIZERS
    assert set(OPTIMIZER_ALIASES.values()) <= set(CLASSICAL_OPTIMIZERS)
    assert all(alias == alias.lower() for alias in OPTIMIZER_ALIASES)


def test_stepwise_optimizers_are_all_but_scipy():
    assert "CG" not in STEPWISE_OPTIMIZERS
    assert set(STEPWISE_OPTIMIZERS) == set(CLASSICAL_OPTIMIZERS) - {"CG"}


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
