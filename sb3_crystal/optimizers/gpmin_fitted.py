"""GPMin with a fitted kernel, under a name of its own."""

from __future__ import annotations

from typing import Any

from ase import Atoms
from ase.optimize import GPMin

__all__ = ["GPMinFitted"]


class GPMinFitted(GPMin):
    """ASE's GPMin refitting its kernel (length scale and prior weight) by maximum likelihood every few steps.

    ``GPMin(update_hyperparams=True)`` under a name of its own, so that it can be named on the command line and in
    :data:`~sb3_crystal.optimizers.CLASSICAL_OPTIMIZERS`. The fit costs time that grows with the cube of
    steps × 3N, so it suits small cells; measured force calls against plain GPMin are in docs/.

    :param atoms: the structure.
    :param kwargs: further :class:`~ase.optimize.GPMin` arguments (``update_hyperparams`` may be overridden).
    """

    def __init__(self, atoms: Atoms, **kwargs: Any) -> None:
        kwargs.setdefault("update_hyperparams", True)
        super().__init__(atoms, **kwargs)
