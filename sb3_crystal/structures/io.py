"""Reading and writing structure files: CIF, POSCAR/CONTCAR, extended XYZ and the paper's dataset CSV.

Every structure read is a fully periodic ``ase.Atoms`` whose ``info["source"]`` says where it came from
(``"<file>"`` or ``"<file>:<row or index>"``). Problems with a file's content raise
:class:`StructureFileError`, whose message names the file (and the CSV row or structure index) and the
parser's own complaint, so that users see one clear line instead of a traceback from inside pymatgen or ASE.
"""

from __future__ import annotations

import csv
import errno
import io
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import read as ase_read
from ase.io import write as ase_write
from ase.io.formats import filetype as ase_filetype

from sb3_crystal.files import atomic_file

#: Smallest cell volume (Å³) accepted as a real 3D cell.
_MIN_CELL_VOLUME = 1e-6

_SUPPORTED = "CIF (.cif), POSCAR/CONTCAR (POSCAR*, CONTCAR*, .vasp, .poscar), extended XYZ (.extxyz, .xyz), dataset CSV (.csv)"


class StructureFileError(ValueError):
    """A structure file is malformed or cannot be read as the format its name implies."""


def _format_from_name(path: Path) -> str | None:
    """The format (``"cif"``, ``"vasp"``, ``"extxyz"``, ``"csv"``) implied by a file name, or ``None``."""
    name = path.name.lower()
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix == ".cif":
        return "cif"
    if suffix in (".extxyz", ".xyz"):
        return "extxyz"
    if name.startswith(("poscar", "contcar")) or suffix in (".vasp", ".poscar"):
        return "vasp"
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _parser_message(err: BaseException, caught: Sequence[warnings.WarningMessage] = ()) -> str:
    """The parser's own complaint on one line, with the warnings it raised before failing (often the real cause)."""
    message = _one_line(f"{type(err).__name__}: {err}").rstrip(": ")
    notes = [_one_line(str(w.message)) for w in caught]
    # pymatgen repeats all its warnings in a final "Issues encountered…" one; the error often repeats one too.
    notes = [note for note in notes if note and note not in message and not note.startswith("Issues encountered")]
    if notes:
        message += " (parser warnings: " + "; ".join(dict.fromkeys(notes)) + ")"
    return message


def _parse_cif(text: str) -> list[Atoms]:
    """Every structure of a CIF text, through pymatgen (which wrote the paper's CSVs).

    pymatgen groups the sites by species; they are put back in the order of the CIF's ``_atom_site`` loop
    (each symmetry orbit in the place of its label), so that a CIF written by :func:`write_structure` reads
    back atom for atom. pymatgen also sets up the cell from its lengths and angles in its own orientation.
    """
    from pymatgen.io.ase import AseAtomsAdaptor  # pymatgen is slow to import: only when a CIF is read
    from pymatgen.io.cif import CifFile, CifParser

    parser = CifParser.from_str(text)
    structures = parser.parse_structures(primitive=False)
    skipped = [note for note in parser.warnings if "No structure parsed" in note]
    if skipped:  # pymatgen drops a bad data block with a warning: a half-read file must not pass silently
        raise ValueError("; ".join(skipped))

    label_loops = [block.data.get("_atom_site_label") for block in CifFile.from_str(text).data.values()]
    label_loops = [[loop] if isinstance(loop, str) else loop for loop in label_loops if loop is not None]
    atoms_list = []
    for number, structure in enumerate(structures):
        atoms = AseAtomsAdaptor.get_atoms(structure)
        order = np.arange(len(atoms))
        if len(label_loops) == len(structures):
            loop = label_loops[number]
            first_row = {label: row for row, label in reversed(list(enumerate(loop)))}
            if all(label in first_row for label in structure.labels):
                order = np.argsort([first_row[label] for label in structure.labels], kind="stable")
        # A plain Atoms (the adaptor returns pymatgen's MSONAtoms subclass with pymatgen metadata).
        atoms_list.append(Atoms(numbers=atoms.numbers[order], positions=atoms.positions[order], cell=atoms.cell, pbc=True))
    return atoms_list


def _check_structure(atoms: Atoms, where: str) -> None:
    """Raise :class:`StructureFileError` unless ``atoms`` is a non-empty, fully periodic 3D structure."""
    if len(atoms) == 0:
        raise StructureFileError(f"{where}: structure has no atoms")
    if not np.all(atoms.pbc):
        raise StructureFileError(
            f"{where}: structure is not periodic in all three directions (pbc={atoms.pbc.tolist()}); "
            'a crystal needs a full 3D cell (for extended XYZ, give Lattice=... and pbc="T T T")'
        )
    volume = abs(float(np.linalg.det(atoms.cell.array)))
    if not volume > _MIN_CELL_VOLUME:
        raise StructureFileError(f"{where}: cell has zero volume ({volume:.3g} Å³)")
    if not np.all(np.isfinite(atoms.positions)):
        raise StructureFileError(f"{where}: positions are not all finite numbers")


def _parse_count(value: str) -> int:
    """An atom count written by pandas (``"4"``, or ``"4.0"`` from a float column)."""
    try:
        return int(value)
    except ValueError:
        number = float(value)
        if not number.is_integer():
            raise ValueError(f"'{value}' is not a whole number") from None
        return int(number)


def _read_csv(path: Path, label: str, text: str) -> list[Atoms]:
    """Structures of a pandas-written dataset CSV: leading index column, ``structure`` (CIF text), ``nsites``."""
    old_limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)  # the CIF of a large cell exceeds csv's default 128 kB field limit
    try:
        records = list(csv.reader(io.StringIO(text)))
    except csv.Error as err:
        raise StructureFileError(f"{label}: not a valid CSV file: {err}") from None
    finally:
        csv.field_size_limit(old_limit)

    header, rows = records[0], records[1:]
    if "structure" not in header:
        raise StructureFileError(
            f"{label}: no 'structure' column (columns found: {', '.join(repr(c) for c in header)}); "
            "the dataset CSV needs a 'structure' column holding the CIF text of each cell"
        )
    structure_column = header.index("structure")
    nsites_column = header.index("nsites") if "nsites" in header else None
    index_column = 0 if header[0] == "" else None  # pandas writes its index under an empty header

    rows = [row for row in rows if any(field.strip() for field in row)]  # blank lines, e.g. a trailing newline
    indices = [row[0] if index_column is not None else str(position) for position, row in enumerate(rows)]
    # Concatenated pandas frames repeat index values: then the row position is the only unique label.
    unique_indices = len(set(indices)) == len(indices)

    structures = []
    for position, (row, index) in enumerate(zip(rows, indices, strict=True)):
        where = f"{label}, row {position} (index {index})"
        if len(row) != len(header):
            raise StructureFileError(f"{where}: {len(row)} fields, but the header has {len(header)} columns")
        cif_text = row[structure_column]
        if not cif_text.strip():
            raise StructureFileError(f"{where}: the 'structure' field is empty")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                parsed = _parse_cif(cif_text)
                if len(parsed) != 1:
                    raise ValueError(f"expected the CIF of one cell, found {len(parsed)} structures")
                atoms = parsed[0]
            except Exception as err:  # pymatgen raises many types for bad CIF text; report them all the same way
                raise StructureFileError(f"{where}: cannot parse the CIF text: {_parser_message(err, caught)}") from None
        if nsites_column is not None:
            try:
                nsites = _parse_count(row[nsites_column])
            except ValueError as err:
                raise StructureFileError(f"{where}: bad 'nsites' value: {err}") from None
            if nsites != len(atoms):
                raise StructureFileError(f"{where}: 'nsites' is {nsites} but the CIF text holds {len(atoms)} atoms")
        _check_structure(atoms, where)
        atoms.info["source"] = f"{label}:{index if unique_indices else position}"
        if index_column is not None:
            atoms.info["csv_index"] = index
        structures.append(atoms)
    return structures


def _read_cif(path: Path, label: str, text: str) -> list[Atoms]:
    """Every data block of a CIF file, through pymatgen as for the CSV cells."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return _parse_cif(text)
        except Exception as err:  # pymatgen raises many types for bad CIF; report them all the same way
            raise StructureFileError(f"{label}: cannot read as CIF: {_parser_message(err, caught)}") from None


def _read_with_ase(ase_format: str, format_name: str) -> Callable[[Path, str, str], list[Atoms]]:
    def read(path: Path, label: str, text: str) -> list[Atoms]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                frames = ase_read(path, index=":", format=ase_format)
            except Exception as err:  # ASE's readers raise many types on bad input; report them all the same way
                raise StructureFileError(f"{label}: cannot read as {format_name}: {_parser_message(err, caught)}") from None
        return list(frames) if isinstance(frames, list) else [frames]

    return read


_READERS: dict[str, Callable[[Path, str, str], list[Atoms]]] = {
    "csv": _read_csv,
    "cif": _read_cif,
    "vasp": _read_with_ase("vasp", "POSCAR"),
    "extxyz": _read_with_ase("extxyz", "extended XYZ"),
}


def read_structures(path: str | os.PathLike) -> list[Atoms]:
    """Read every structure of a file, the format taken from its name.

    Formats: CIF (``.cif``, every data block), POSCAR/CONTCAR (``POSCAR*``, ``CONTCAR*``, ``*.vasp``, ``*.poscar``),
    extended XYZ (``.extxyz``, ``.xyz``, every frame) and the dataset CSV of the paper's code (``.csv``: a
    pandas-written table with a leading index column, a ``structure`` column holding the CIF text of one cell,
    and an optional ``nsites`` column checked against the atom count).

    :param path: the structure file.
    :return: fully periodic structures. ``info["source"]`` is ``"<file>"`` for a file of one structure, else
        ``"<file>:<k>"``: for a CSV, ``k`` is the value of its index column, or the row's position from 0 (as
        pandas counts them, header excluded) when the index column is missing or repeats values (concatenated
        frames); ``info["csv_index"]`` keeps the index value. For CIF and extended XYZ, ``k`` is the data block or
        frame number from 0. Error messages name CSV rows the same way: ``"<file>, row <position> (index <k>)"``.
    :raises FileNotFoundError: the file does not exist.
    :raises StructureFileError: unknown format, empty file, no structures, unparsable content, a CSV without
        ``structure`` column or with a wrong ``nsites``, a non-periodic or zero-volume cell.
    """
    file = Path(path)
    label = os.fspath(path)
    if not file.exists():
        raise FileNotFoundError(errno.ENOENT, "Structure file not found", label)
    if file.is_dir():
        raise StructureFileError(f"{label}: is a directory, not a structure file")
    file_format = _format_from_name(file)
    if file_format is None:
        raise StructureFileError(f"{label}: unknown structure file format; supported: {_SUPPORTED}")
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise StructureFileError(f"{label}: not a text file ({err})") from None
    if not text.strip():
        raise StructureFileError(f"{label}: file is empty")

    structures = _READERS[file_format](file, label, text)
    if not structures:
        raise StructureFileError(f"{label}: file holds no structures")
    if file_format != "csv":
        several = len(structures) > 1
        for number, atoms in enumerate(structures):
            source = f"{label}:{number}" if several else label
            _check_structure(atoms, source)
            atoms.info["source"] = source
    return structures


def write_structure(atoms: Atoms | Sequence[Atoms], path: str | os.PathLike, format: str | None = None, **kwargs) -> None:
    """Write structures with :func:`ase.io.write`, atomically: a crash never leaves a half-written file.

    The data go to a hidden temporary file in the same folder, which then replaces ``path`` in one step.

    :param atoms: a structure, or several for formats that hold many (extended XYZ, CIF).
    :param path: destination; the format is taken from its name as in :func:`read_structures`
        (``POSCAR``/``CONTCAR`` names, ``.vasp``, ``.cif``, ``.extxyz``/``.xyz``), otherwise as ASE guesses it.
    :param format: ASE format name, to override the guess.
    :param kwargs: passed to :func:`ase.io.write` (e.g. ``direct=True`` for POSCAR).
    """
    target = Path(path)
    if format is None:
        format = _format_from_name(target)
    if format == "csv":
        raise ValueError(f"{os.fspath(path)}: writing the dataset CSV format is not supported")
    if format is None:
        format = ase_filetype(os.fspath(target), read=False)  # the temporary name hides the real suffix from ASE

    with atomic_file(target) as temporary:
        ase_write(temporary, atoms, format=format, **kwargs)
