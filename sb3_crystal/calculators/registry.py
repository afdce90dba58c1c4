"""The calculator registry: names that :func:`~sb3_crystal.calculators.make_calculator` and the environment's
``calculator=`` accept.

A calculator is one factory under one name::

    from sb3_crystal.calculators import register_calculator

    @register_calculator("morse")
    def morse(argument: str = "") -> Calculator:  # "morse" calls morse(), "morse:1.5" calls morse("1.5")
        ...

The built-in calculators register themselves the same way (:mod:`sb3_crystal.calculators.factory`). A module
placed in the ``sb3_crystal/calculators`` folder is imported the first time a name is looked up and not found, so
a new built-in is that one file; a calculator defined elsewhere registers when its module is imported (import it
before naming it, also in subprocess workers: a ``spawn``-ed worker imports only what it unpickles).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["CALCULATORS", "calculator_factory", "calculator_names", "register_calculator"]

#: Calculator factories by name (lower case). ``"name"`` calls ``factory()``, ``"name:argument"`` calls
#: ``factory("argument")``; the factory returns an ASE calculator.
CALCULATORS: dict[str, Callable[..., Any]] = {}

_PACKAGE = __name__.rpartition(".")[0]
_discovered = False


def register_calculator(name: str, factory: Callable[..., Any] | None = None) -> Any:
    """Add a calculator factory to :data:`CALCULATORS` under ``name``.

    ``register_calculator("name", factory)`` registers and returns ``factory``; ``@register_calculator("name")``
    decorates it.

    :param name: the spec name (any case; no ``:`` or ``.``, which mark ``name:argument`` and ``module:Class``).
    :param factory: a callable taking no argument, or the text after ``name:``, and returning an ASE calculator.
    :return: ``factory``, or the decorator when it is not given.
    """
    if not isinstance(name, str) or not name.strip() or ":" in name or "." in name:
        raise ValueError(f"calculator name must be a non-empty string without ':' or '.', got {name!r}")
    key = name.strip().lower()

    def add(function: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(function):
            raise TypeError(f"calculator {key!r}: the factory must be callable, got {type(function).__name__}")
        if key in CALCULATORS and CALCULATORS[key] is not function:
            raise ValueError(f"a calculator named {key!r} exists already ({CALCULATORS[key]!r})")
        CALCULATORS[key] = function
        return function

    return add if factory is None else add(factory)


def _discover() -> None:
    """Import the modules of the calculators folder (once), so the calculators they register are known."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    package = sys.modules[_PACKAGE]
    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{_PACKAGE}.{module.name}")


def calculator_factory(name: str) -> Callable[..., Any] | None:
    """The factory registered under ``name`` (any case), or ``None``."""
    key = name.strip().lower()
    if key not in CALCULATORS:
        _discover()
    return CALCULATORS.get(key)


def calculator_names() -> list[str]:
    """The registered names, sorted."""
    _discover()
    return sorted(CALCULATORS)
