"""ASE's preconditioned LBFGS with the ``Exp`` preconditioner always on."""

from __future__ import annotations

from typing import Any

from ase import Atoms
from ase.optimize.precon import Exp, PreconLBFGS
from ase.optimize.precon.precon import Precon

__all__ = ["ExpPreconLBFGS"]


class ExpPreconLBFGS(PreconLBFGS):
    """:class:`ase.optimize.precon.PreconLBFGS` preconditioned by :class:`ase.optimize.precon.Exp` on every cell.

    ASE's ``PreconLBFGS(precon="auto")`` switches preconditioning off below 100 atoms, which turns it into a plain
    LBFGS with an Armijo line search. This class always passes a fresh ``Exp`` preconditioner instead, with ASE's
    ``Exp`` defaults except the linear solver:

    - ``A = 3``: off-diagonal coefficients ``−μ·exp(−A·(r/r_NN − 1))`` for pairs closer than ``r_cut``;
    - ``r_NN``, the nearest-neighbour distance, and ``r_cut = 2·r_NN`` are read off the start structure
      (periodic images included, so a 2-atom cell works);
    - ``μ``, the energy scale, is estimated at the start from one extra energy+forces evaluation at a sine-shaped
      displacement of the start (ASE's ``estimate_mu``). That evaluation goes through the structure's calculator
      like every other, so a force-call counter counts it.
    - ``solver="direct"`` (SciPy's sparse solver): ASE's ``"auto"`` takes PyAMG when installed, whose solve starts
      from an unseeded random guess, so results would change from run to run.

    The preconditioner is built per optimizer, so ``μ`` belongs to one relaxation. ``maxstep`` is 0.2 Å, the
    default of ASE's BFGS and LBFGS, instead of PreconLBFGS's 0.04 Å; the Armijo line search (ASE's default) is
    kept. The path does not depend on ``fmax``, which only decides when to stop.

    :param atoms: the structure (fixed cell).
    :param precon: the preconditioner; ``None`` builds the ``Exp`` described above. (To switch preconditioning off,
        use ASE's ``PreconLBFGS(atoms, precon=None)`` or LBFGS.)
    :param maxstep: largest displacement of one atom in one step, Å.
    :param kwargs: further :class:`~ase.optimize.precon.PreconLBFGS` arguments (``logfile``, ``memory``, ...).
    """

    def __init__(self, atoms: Atoms, precon: Precon | None = None, maxstep: float = 0.2, **kwargs: Any) -> None:
        if precon is None:
            precon = Exp(solver="direct")
        if not isinstance(precon, Precon):
            raise TypeError(f"precon must be an ase.optimize.precon Precon object, got {type(precon).__name__}")
        super().__init__(atoms, precon=precon, maxstep=maxstep, **kwargs)
