"""Building calculators from *specs*: names, ``name:potential``, ``module:Class``, objects and factories."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from ase.calculators.calculator import BaseCalculator
from ase.data import chemical_symbols

from sb3_crystal.calculators.lammps_eam import LammpsEAMCalculator
from sb3_crystal.calculators.potentials import (
    DEFAULT_POTENTIAL,
    PotentialNotFoundError,
    potential_elements,
    resolve_potential,
)

CalculatorSpec = str | BaseCalculator | Callable[[], BaseCalculator] | None


def matscipy_eam(potential: str = DEFAULT_POTENTIAL) -> BaseCalculator:
    """matscipy's EAM calculator on an EAM file (pure Python/NumPy; slower, an independent check of LAMMPS)."""
    from matscipy.calculators.eam import EAM

    path = resolve_potential(potential)
    calc = EAM(str(path), kind="eam/fs" if path.name.endswith(".fs") else "eam/alloy")
    calc.potential = str(potential)
    return calc


def _emt() -> BaseCalculator:
    from ase.calculators.emt import EMT

    return EMT()


def chgnet_calculator(model: str = "0.3.0") -> BaseCalculator:
    """CHGNet's ASE calculator with a pretrained model shipped in its wheel (nothing is downloaded).

    CHGNet is an optional extra: ``pip install "sb3-crystal[chgnet]"``. The device is CHGNet's choice (a GPU when
    torch sees one, else the CPU).

    :param model: a pretrained model of the installed ``chgnet`` package: ``"0.3.0"`` (its default), ``"0.2.0"``
        or ``"r2scan"``.
    """
    try:
        from chgnet.model import CHGNet
        from chgnet.model.dynamics import CHGNetCalculator
    except ImportError as err:
        raise ImportError(
            f"calculator 'chgnet' needs the optional CHGNet extra: pip install \"sb3-crystal[chgnet]\" ({err})"
        ) from err
    with contextlib.redirect_stdout(io.StringIO()):  # CHGNet prints its device on construction
        return CHGNetCalculator(model=CHGNet.load(model_name=model, verbose=False))


_NAMED: dict[str, Callable[..., BaseCalculator]] = {
    "lammps": LammpsEAMCalculator,
    "matscipy": matscipy_eam,
    "emt": _emt,
    "chgnet": chgnet_calculator,
}


def make_calculator(spec: CalculatorSpec = "lammps") -> BaseCalculator:
    """Build a fresh ASE calculator from a spec (see the module docstring).

    :param spec: name, ``name:potential``, ``module:Class``, calculator object or factory; ``None`` means ``"lammps"``.
    :return: an ASE calculator. Objects are returned as they are (not copied).
    """
    if spec is None:
        spec = "lammps"
    if isinstance(spec, BaseCalculator):
        return spec
    if callable(spec):
        calc = spec()
        if not isinstance(calc, BaseCalculator):
            raise TypeError(f"Calculator factory {spec!r} returned {type(calc).__name__}, not an ASE calculator")
        return calc
    if not isinstance(spec, str):
        raise TypeError(f"calculator must be a name, an ASE calculator or a factory, not {type(spec).__name__}")
    name, _, argument = spec.partition(":")
    key = name.strip().lower()
    if key in _NAMED:
        return _NAMED[key](argument) if argument else _NAMED[key]()
    if argument and "." in name:
        try:
            cls = getattr(importlib.import_module(name), argument)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"calculator '{spec}': cannot import {argument} from {name} ({err})") from err
        return make_calculator(cls)
    raise ValueError(f"Unknown calculator '{spec}': use one of {sorted(_NAMED)}, 'name:potential' or 'module:Class'")


def calculator_elements(calc: BaseCalculator) -> tuple[str, ...] | None:
    """Elements a calculator covers, when known (EAM files, ASE's EMT, CHGNet); ``None`` when unknown."""
    from ase.calculators.emt import EMT
    from ase.calculators.emt import parameters as emt_parameters

    if isinstance(calc, EMT):
        return tuple(sorted(emt_parameters))
    if type(calc).__name__ == "CHGNetCalculator" and type(calc).__module__.startswith("chgnet."):
        return tuple(chemical_symbols[1:95])  # CHGNet's element embedding covers H to Pu
    potential = getattr(calc, "potential", None)
    if potential is None:
        return getattr(calc, "elements", None)
    try:
        return potential_elements(potential)
    except (PotentialNotFoundError, ValueError):
        return None


@lru_cache(maxsize=32)
def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def calculator_fingerprint(calc: BaseCalculator) -> str:
    """A string that identifies the energy surface of a calculator, for cache keys.

    EAM calculators (LAMMPS or matscipy) on the same file share one fingerprint, the file's hash: they agree
    to about 1e-6 eV/Å, far inside the relaxation tolerance.
    """
    potential = getattr(calc, "potential", None)
    if potential is not None:
        try:
            return f"eam-{_file_digest(resolve_potential(potential))}"
        except PotentialNotFoundError:
            pass
    params = getattr(calc, "parameters", {}) or {}
    text = f"{type(calc).__module__}.{type(calc).__name__}:{sorted(params.items())!r}"
    return f"{type(calc).__name__.lower()}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"
