"""What an agent's force calls can teach a classical optimizer that takes over: BFGS secant updates and warm starts.

The numerics (:func:`secant_pairs`, :func:`bfgs_hessian`, :func:`bfgs_inverse_hessian`) are plain functions of
arrays; :func:`warm_start` and :func:`with_preset_inverse_hessian` are the plumbing that puts them into ASE's
optimizers.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
from ase.optimize import BFGS, BFGSLineSearch, GPMin
from ase.optimize.optimize import Optimizer

__all__ = [
    "MIN_CURVATURE",
    "bfgs_hessian",
    "bfgs_inverse_hessian",
    "secant_pairs",
    "warm_start",
    "with_preset_inverse_hessian",
]

#: A secant pair (s, y) of the agent's path informs the finisher's Hessian only when the curvature along s,
#: s·y / s·s, is at least this, eV/Å² (the BFGS condition s·y > 0, with a margin: a rigid translation changes the
#: gradient only by noise, whose tiny s·y would give the inverse Hessian a huge entry). EAM curvatures of the cells
#: here are 2–200 eV/Å².
MIN_CURVATURE = 0.1


def secant_pairs(path: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The secant pairs ``(s, y)`` = (Δx, Δgradient) between consecutive points of a path that have positive
    curvature along ``s``: ``s·y ≥`` :data:`MIN_CURVATURE` ``· s·s`` (``s·y > 0`` keeps a BFGS Hessian positive
    definite).

    :param path: ``(x, gradient)`` of each evaluated point, flat arrays, in the order visited.
    """
    pairs = []
    for (x0, g0), (x1, g1) in itertools.pairwise(path):
        s, y = x1 - x0, g1 - g0
        if np.abs(s).max() < 1e-7:  # the same geometry (a blocked move)
            continue
        if s @ y >= MIN_CURVATURE * (s @ s):
            pairs.append((s, y))
    return pairs


def bfgs_hessian(pairs: Sequence[tuple[np.ndarray, np.ndarray]], initial: np.ndarray) -> np.ndarray:
    """The Hessian after BFGS updates with ``pairs`` (each satisfying ``s·y > 0``), starting from ``initial``."""
    hessian = np.array(initial, dtype=np.float64)
    for s, y in pairs:
        hs = hessian @ s
        hessian += np.outer(y, y) / (s @ y) - np.outer(hs, hs) / (s @ hs)
    return hessian


def bfgs_inverse_hessian(pairs: Sequence[tuple[np.ndarray, np.ndarray]], initial: np.ndarray) -> np.ndarray:
    """The inverse Hessian after BFGS updates with ``pairs`` (each satisfying ``s·y > 0``), from ``initial``."""
    inverse = np.array(initial, dtype=np.float64)
    eye = np.eye(len(inverse))
    for s, y in pairs:
        rho = 1.0 / (s @ y)
        left = eye - rho * np.outer(s, y)
        inverse = left @ inverse @ left.T + rho * np.outer(s, s)
    return inverse


class _PresetInverseHessian:
    """Mixin for :class:`~ase.optimize.BFGSLineSearch`: an inverse Hessian set before the first step is kept
    (ASE's first update would replace it by the identity, or fail on the missing previous point)."""

    H: np.ndarray | None
    optimizable: Any

    def update(self, r: np.ndarray, g: np.ndarray, r0: np.ndarray | None, g0: np.ndarray | None, p0: Any) -> None:
        if r0 is None and self.H is not None:
            self.I = np.eye(self.optimizable.ndofs(), dtype=int)
            return
        super().update(r, g, r0, g0, p0)  # type: ignore[misc]


@functools.cache
def with_preset_inverse_hessian(cls: type[Optimizer]) -> type[Optimizer]:
    return type(cls.__name__, (_PresetInverseHessian, cls), {"__doc__": cls.__doc__})


def warm_start(optimizer: Optimizer, path: Sequence[tuple[np.ndarray, float, np.ndarray]]) -> int:
    """Give a freshly made quasi-Newton or Gaussian-process optimizer what earlier force calls taught.

    - :class:`~ase.optimize.BFGS`: its initial Hessian becomes the BFGS update of ``alpha·I`` by the secant pairs of
      ``path`` (:func:`secant_pairs`);
    - :class:`~ase.optimize.BFGSLineSearch`: likewise for its initial inverse Hessian (in its scaled units); it must
      be made by :meth:`:func:`with_preset_inverse_hessian`` (which keeps a preset inverse Hessian);
    - :class:`~ase.optimize.GPMin`: the points of ``path`` (but the current geometry, which its first step adds)
      join its training set;
    - any other optimizer is left alone.

    The optimizer's own updates then go on from there, exactly as after its own steps.

    :param optimizer: the optimizer, before its first step.
    :param path: ``(x, energy, gradient)`` of each evaluated geometry, flat arrays, in the order visited.
    :return: the number of secant pairs (BFGS) or points (GPMin) used.
    """
    if isinstance(optimizer, GPMin):
        # Only points within the kernel's length scale inform the model where it steps next; farther (higher) ones
        # would mostly raise its prior, the largest energy seen, and with it the model's curvature.
        here = optimizer.optimizable.get_x()
        reach = float(optimizer.kernel.l)
        points = [(x, e, g) for x, e, g in path if 0 < np.linalg.norm(x - here) <= reach]
        for x, energy, gradient in points:
            optimizer.x_list.append(np.array(x, dtype=np.float64))
            optimizer.y_list.append(np.append(energy, gradient))
        return len(points)
    pairs = secant_pairs([(x, g) for x, _, g in path])
    if not pairs:
        return 0
    if isinstance(optimizer, BFGS):
        optimizer.H0 = bfgs_hessian(pairs, optimizer.H0)
    elif isinstance(optimizer, BFGSLineSearch):
        if not isinstance(optimizer, _PresetInverseHessian):
            raise TypeError(f"{type(optimizer).__name__} needs :func:`with_preset_inverse_hessian` to keep a preset Hessian")
        scale = 1.0 / optimizer.alpha  # BFGSLineSearch works with gradients divided by alpha
        start = optimizer.H if optimizer.H is not None else np.eye(optimizer.optimizable.ndofs())
        optimizer.H = bfgs_inverse_hessian([(s, y * scale) for s, y in pairs], start)
    else:
        return 0
    return len(pairs)
