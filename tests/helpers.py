"""Helpers shared by several test modules (``from tests.helpers import ...``); fixtures live in ``tests/conftest.py``."""

from __future__ import annotations

import functools
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

#: Tiny TFN hyperparameters: the tests check contracts, not learning.
TINY_TFN = dict(n_layers=1, mul=4, lmax=1, num_basis=4, radial_neurons=8, species_dim=4, force_basis=4, action_basis=4)


def mlp_td3(env: Any) -> Any:
    """A tiny untrained TD3 agent with SB3's MLP policy (one hidden layer of 8) on ``env``, seed 0."""
    from sb3_crystal.algorithms import CrystalTD3

    return CrystalTD3("MultiInputPolicy", env, policy_kwargs={"net_arch": [8]}, seed=0)


def record_observations(optimizer: Any) -> list[dict[str, np.ndarray]]:
    """Copies of the observations an :class:`~sb3_crystal.relax.RLOptimizer` (or a subclass) acts on, one per step.

    The optimizer's ``action`` is wrapped, so that each observation it is given is copied into the returned list,
    which grows as the optimizer runs (over several ``run`` calls too).

    :param optimizer: the optimizer, before it runs
    :return: the list the observations go into
    """
    seen: list[dict[str, np.ndarray]] = []
    act = optimizer.action

    def recording(observation: dict[str, np.ndarray]) -> np.ndarray:
        seen.append({key: value.copy() for key, value in observation.items()})
        return act(observation)

    optimizer.action = recording
    return seen


@functools.cache
def _shared_eam() -> Any:
    from sb3_crystal.calculators import LammpsEAMCalculator

    return LammpsEAMCalculator()  # one LAMMPS set-up for every CountingEAM


class CountingEAM(Calculator):
    """The LAMMPS EAM, counting the evaluations ASE asks of it (it asks again only when the geometry changed)."""

    implemented_properties = ("energy", "free_energy", "forces")

    def __init__(self) -> None:
        super().__init__()
        self.inner = _shared_eam()
        self.potential = self.inner.potential
        self.count = 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        energy, forces = self.inner.compute(self.atoms.numbers, np.asarray(self.atoms.cell), self.atoms.positions)
        self.count += 1
        self.results = {"energy": energy, "free_energy": energy, "forces": forces}


class _Planted:
    """Unpickling this creates ``marker``: the stand-in for code planted in a model file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Path]]:
        return Path.touch, (Path(self.marker),)


def planted_zip(path: str | Path, marker: Path) -> Path:
    """An SB3-style zip at ``path`` whose ``data`` entry runs code (touches ``marker``) when unpickled."""
    from stable_baselines3.common.save_util import save_to_zip_file

    save_to_zip_file(path, data={"policy_class": _Planted(marker)})
    if not Path(path).suffix:  # SB3 adds .zip to a name without suffix
        Path(f"{path}.zip").rename(path)
    assert zipfile.is_zipfile(path)
    return Path(path)
