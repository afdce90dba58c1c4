"""The classical optimizers by name: one table for the benchmark, the relaxers and the command line.

Every entry is an ASE :class:`~ase.optimize.optimize.Optimizer` class, built as ``cls(atoms, logfile=..., **kwargs)``
with the defaults of its own module. This package imports ASE and SciPy only (never torch), so that listing or
checking a name is cheap. The optimizers:

- ``BFGS``, ``LBFGS``, ``BFGSLineSearch``, ``FIRE``, ``GPMin``: ASE's, with ASE's defaults;
- ``PreconLBFGS``: ASE's preconditioned LBFGS with the ``Exp`` preconditioner on every cell
  (:class:`~sb3_crystal.optimizers.precon_lbfgs.ExpPreconLBFGS`);
- ``CG``: SciPy's nonlinear conjugate gradients through ASE (:class:`ase.optimize.sciopt.SciPyFminCG`), which runs
  its own loop (it cannot be stepped one step at a time);
- ``GPMinFitted``: GPMin refitting its kernel (:class:`~sb3_crystal.optimizers.gpmin_fitted.GPMinFitted`), not
  among the default baselines.
"""

from __future__ import annotations

from ase.optimize import BFGS, FIRE, LBFGS, BFGSLineSearch, GPMin
from ase.optimize.optimize import Optimizer
from ase.optimize.sciopt import SciPyFminCG, SciPyOptimizer

from sb3_crystal.optimizers.gpmin_fitted import GPMinFitted
from sb3_crystal.optimizers.precon_lbfgs import ExpPreconLBFGS

__all__ = [
    "CLASSICAL_OPTIMIZERS",
    "DEFAULT_OPTIMIZERS",
    "FMAX_INDEPENDENT_OPTIMIZERS",
    "OPTIMIZER_ALIASES",
    "STEPWISE_OPTIMIZERS",
    "ExpPreconLBFGS",
    "GPMinFitted",
    "UnknownOptimizerError",
    "get_optimizer",
    "optimizer_name",
]

#: Classical optimizers by name.
CLASSICAL_OPTIMIZERS: dict[str, type[Optimizer]] = {
    "BFGS": BFGS,
    "LBFGS": LBFGS,
    "BFGSLineSearch": BFGSLineSearch,
    "FIRE": FIRE,
    "GPMin": GPMin,
    "PreconLBFGS": ExpPreconLBFGS,
    "CG": SciPyFminCG,
    "GPMinFitted": GPMinFitted,
}

#: The baselines a benchmark runs unless told otherwise.
DEFAULT_OPTIMIZERS: tuple[str, ...] = ("BFGS", "LBFGS", "BFGSLineSearch", "FIRE", "GPMin", "PreconLBFGS", "CG")

#: Other names accepted by :func:`get_optimizer` (lower case) and the table name each stands for.
OPTIMIZER_ALIASES: dict[str, str] = {
    "scipyfmincg": "CG",
    "scipycg": "CG",
    "bfgsls": "BFGSLineSearch",
    "exppreconlbfgs": "PreconLBFGS",
}

#: Optimizers whose path does not depend on ``fmax`` (it only decides when to stop), so that one run to the
#: smallest threshold answers every larger one exactly. GPMin's inner retry loop stops at the first point below
#: ``fmax``; SciPy CG's ``gtol = 0.1·fmax`` enters its line-search acceptance.
FMAX_INDEPENDENT_OPTIMIZERS: tuple[type[Optimizer], ...] = (BFGS, LBFGS, BFGSLineSearch, FIRE, ExpPreconLBFGS)

#: Names of the optimizers that take one step per ``step()`` call (all but SciPy's, which run their own loop):
#: those another driver, such as a hybrid relaxer, can hand a structure over to.
STEPWISE_OPTIMIZERS: tuple[str, ...] = tuple(
    name for name, cls in CLASSICAL_OPTIMIZERS.items() if not issubclass(cls, SciPyOptimizer)
)


class UnknownOptimizerError(KeyError, ValueError):
    """A name that is not in :data:`CLASSICAL_OPTIMIZERS` (nor an alias); the message lists the known names.

    A :class:`KeyError` (a failed lookup) and a :class:`ValueError` (a bad argument), so callers may catch either.
    """

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def optimizer_name(name: str) -> str:
    """The table name of ``name`` (any case, or an alias of :data:`OPTIMIZER_ALIASES`).

    :param name: an optimizer name.
    :raises UnknownOptimizerError: for an unknown name.
    """
    if isinstance(name, str):
        lookup = {key.lower(): key for key in CLASSICAL_OPTIMIZERS}
        key = lookup.get(name.lower()) or OPTIMIZER_ALIASES.get(name.lower())
        if key is not None:
            return key
    raise UnknownOptimizerError(f"Unknown optimizer {name!r}: choose from {', '.join(CLASSICAL_OPTIMIZERS)}")


def get_optimizer(name: str) -> type[Optimizer]:
    """The optimizer class of ``name`` (any case, or an alias of :data:`OPTIMIZER_ALIASES`).

    :param name: an optimizer name.
    :raises UnknownOptimizerError: for an unknown name.
    """
    return CLASSICAL_OPTIMIZERS[optimizer_name(name)]
