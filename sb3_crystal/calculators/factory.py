"""Building calculators from *specs*: registered names (:mod:`~sb3_crystal.calculators.registry`),
``name:argument``, ``module:Class``, objects and factories; the built-in calculators' registrations."""

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
from sb3_crystal.calculators.registry import calculator_factory, calculator_names, register_calculator

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


register_calculator("lammps", LammpsEAMCalculator)
register_calculator("matscipy", matscipy_eam)
register_calculator("emt", _emt)
register_calculator("chgnet", chgnet_calculator)


def make_calculator(spec: CalculatorSpec = "lammps") -> BaseCalculator:
    """Build a fresh ASE calculator from a spec (see the module docstring).

    :param spec: a registered name (:func:`~sb3_crystal.calculators.register_calculator`), ``name:argument``,
        ``module:Class``, calculator object or factory; ``None`` means ``"lammps"``.
    :return: an ASE calculator. Objects are returned as they are (not copied).
    """
    if spec is None:
        spec = "lammps"
    if isinstance(spec, BaseCalculator):
        return spec
    if callable(spec):
        return _checked(spec(), spec)
    if not isinstance(spec, str):
        raise TypeError(f"calculator must be a name, an ASE calculator or a factory, not {type(spec).__name__}")
    name, _, argument = spec.partition(":")
    factory = calculator_factory(name)
    if factory is not None:
        return _checked(factory(argument) if argument else factory(), spec)
    if argument and "." in name:
        try:
            cls = getattr(importlib.import_module(name), argument)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"calculator '{spec}': cannot import {argument} from {name} ({err})") from err
        return make_calculator(cls)
    raise ValueError(f"Unknown calculator '{spec}': use one of {calculator_names()}, 'name:argument' or 'module:Class'")


def _checked(calc: object, source: object) -> BaseCalculator:
    if not isinstance(calc, BaseCalculator):
        raise TypeError(f"Calculator factory {source!r} returned {type(calc).__name__}, not an ASE calculator")
    return calc


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
