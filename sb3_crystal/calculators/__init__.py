"""Force calculators: the default LAMMPS EAM route, matscipy's EAM on the same file, and any ASE calculator.

Environments and relaxers take a *calculator spec*, which keeps their constructor arguments plain data
(YAML-friendly, picklable for ``SubprocVecEnv``):

- ``"lammps"`` or ``"lammps:<potential>"``: :class:`LammpsEAMCalculator` (default potential ``AlFe_mm.eam.fs``);
- ``"matscipy"`` or ``"matscipy:<potential>"``: matscipy's pure-Python EAM on the same file;
- ``"emt"``: ASE's EMT (Al, Cu, Ag, Au, Ni, Pd, Pt; no Fe);
- ``"chgnet"`` or ``"chgnet:<model>"``: CHGNet's universal potential (optional extra ``sb3-crystal[chgnet]``);
- ``"package.module:ClassName"``: any importable ASE calculator class, built without arguments;
- an ASE ``Calculator`` object, or a zero-argument factory returning one;
- any name added with :func:`register_calculator` (see :mod:`sb3_crystal.calculators.registry` and
  docs/extending.md).
"""

from sb3_crystal.calculators.counting import ForceCallCounter
from sb3_crystal.calculators.factory import (
    CalculatorSpec,
    calculator_elements,
    calculator_fingerprint,
    chgnet_calculator,
    make_calculator,
    matscipy_eam,
)
from sb3_crystal.calculators.lammps_eam import LammpsEAMCalculator, UnsupportedElementsError, check_elements
from sb3_crystal.calculators.potentials import DEFAULT_POTENTIAL, PotentialNotFoundError, resolve_potential
from sb3_crystal.calculators.registry import CALCULATORS, calculator_names, register_calculator

__all__ = [
    "CALCULATORS",
    "DEFAULT_POTENTIAL",
    "CalculatorSpec",
    "ForceCallCounter",
    "LammpsEAMCalculator",
    "PotentialNotFoundError",
    "UnsupportedElementsError",
    "calculator_elements",
    "calculator_fingerprint",
    "calculator_names",
    "check_elements",
    "chgnet_calculator",
    "make_calculator",
    "matscipy_eam",
    "register_calculator",
    "resolve_potential",
]
