"""Structure files: round trips through every format, each bad input's error, the paper's dataset CSVs."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.io import write as ase_write

from sb3_crystal.structures import io as structure_io
from sb3_crystal.structures.io import StructureFileError, read_structures, write_structure

PAPER_STRUCTURES = Path(__file__).resolve().parents[2].parent / "shared" / "paper_structures"


def triclinic_alfe() -> Atoms:
    """A low-symmetry cell with interleaved species, so that order, cell and positions all matter."""
    return Atoms(
        "AlFeAl",
        scaled_positions=[[0.1037, 0.2113, 0.3071], [0.6129, 0.5521, 0.4487], [0.3117, 0.8243, 0.7109]],
        cell=[[3.1, 0.2, 0.0], [0.1, 3.3, 0.0], [0.3, 0.1, 4.4]],
        pbc=True,
    )


def assert_same_structure(read: Atoms, original: Atoms, same_orientation: bool) -> None:
    """Same species, cell and positions (to 1e-6 Å, modulo lattice vectors); CIF only keeps the cell's shape."""
    assert read.get_chemical_symbols() == original.get_chemical_symbols()
    assert read.pbc.all()
    np.testing.assert_allclose(read.cell.cellpar(), original.cell.cellpar(), atol=1e-8)
    if same_orientation:
        np.testing.assert_allclose(read.cell.array, original.cell.array, atol=1e-8)
    fractional_shift = read.get_scaled_positions(wrap=False) - original.get_scaled_positions(wrap=False)
    fractional_shift -= np.round(fractional_shift)
    assert np.linalg.norm(fractional_shift @ read.cell.array, axis=1).max() < 1e-6


def write_dataset_csv(path: Path, atoms_list: list[Atoms], index: list[int] | None = None, nsites_offset: int = 0) -> None:
    """A CSV like the paper's (pandas: empty header over the index, CIF text from pymatgen, nsites)."""
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.io.cif import CifWriter

    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["", "structure", "nsites"])
        for k, atoms in enumerate(atoms_list):
            cif_text = str(CifWriter(AseAtomsAdaptor.get_structure(atoms)))
            writer.writerow([index[k] if index else k, cif_text, len(atoms) + nsites_offset])


@pytest.mark.parametrize(
    "name", ["cell.cif", "POSCAR", "CONTCAR_relaxed", "cell.vasp", "cell.poscar", "cell.extxyz", "cell.xyz"]
)
def test_round_trip_keeps_species_cell_and_positions(tmp_path: Path, name: str) -> None:
    original = triclinic_alfe()
    path = tmp_path / name
    write_structure(original, path)
    (read,) = read_structures(path)
    # pymatgen rebuilds a CIF cell from its lengths and angles, in its own orientation
    assert_same_structure(read, original, same_orientation=not name.endswith(".cif"))
    assert read.info["source"] == str(path)
    assert sorted(os.listdir(tmp_path)) == [name]  # no temporary file left behind


@pytest.mark.parametrize("name", ["frames.extxyz", "blocks.cif"])
def test_every_frame_or_block_is_read_and_numbered(tmp_path: Path, name: str) -> None:
    frames = [triclinic_alfe() for _ in range(3)]
    for k, atoms in enumerate(frames):
        atoms.positions[0] += 0.1 * k
    write_structure(frames, tmp_path / name)
    read = read_structures(tmp_path / name)
    assert [atoms.info["source"] for atoms in read] == [f"{tmp_path / name}:{k}" for k in range(3)]
    for got, original in zip(read, frames, strict=True):
        assert_same_structure(got, original, same_orientation=name.endswith(".extxyz"))


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "POSCAR"
    write_structure(triclinic_alfe(), path)
    before = path.read_text()

    def crash_halfway(filename, images, format=None, **kwargs):
        Path(filename).write_text("Al Fe\n1.0\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(structure_io, "ase_write", crash_halfway)
    with pytest.raises(KeyboardInterrupt):
        write_structure(Atoms("Fe", cell=[2, 2, 2], pbc=True), path)
    assert path.read_text() == before
    assert os.listdir(tmp_path) == ["POSCAR"]


def test_written_file_gets_the_usual_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    write_structure(triclinic_alfe(), tmp_path / "cell.cif")
    assert (tmp_path / "cell.cif").stat().st_mode & 0o777 == 0o666 & ~umask


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "absent.cif"))):
        read_structures(tmp_path / "absent.cif")


@pytest.mark.parametrize(
    ("name", "content", "complaint"),
    [
        ("bad.cif", "this is not a CIF file\n", "cannot read as CIF"),
        ("POSCAR", "this is not a POSCAR\n", "cannot read as POSCAR"),
        ("bad.extxyz", "this is not\nan xyz file\n", "cannot read as extended XYZ"),
        ("bad.csv", ",structure,nsites\n0,not a cif,1\n", r"row 0 \(index 0\): cannot parse the CIF text"),
        ("empty.cif", "", "file is empty"),
        ("empty.csv", "\n  \n", "file is empty"),
        ("POSCAR_blank", "   \n", "file is empty"),
        ("header_only.csv", ",structure,nsites\n", "holds no structures"),
        ("cell.txt", "whatever", "unknown structure file format"),
        ("flat.vasp", "flat\n1.0\n3 0 0\n0 3 0\n0 0 0\nAl\n1\nDirect\n0 0 0\n", "zero volume"),
        ("molecule.xyz", "2\nProperties=species:S:1:pos:R:3\nAl 0 0 0\nFe 2 0 0\n", "not periodic"),
    ],
)
def test_bad_files_raise_one_clear_error_naming_the_file(tmp_path: Path, name: str, content: str, complaint: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(StructureFileError, match=re.escape(str(path)) + r".*" + complaint) as raised:
        read_structures(path)
    error = raised.value
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)  # no parser traceback


def test_binary_garbage_is_reported_as_not_text(tmp_path: Path) -> None:
    path = tmp_path / "binary.cif"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(StructureFileError, match=re.escape(str(path)) + ".*not a text file"):
        read_structures(path)


def test_a_cif_with_one_unreadable_block_is_not_read_halfway(tmp_path: Path) -> None:
    path = tmp_path / "half.cif"
    ase_write(path, triclinic_alfe())
    with open(path, "a") as handle:
        handle.write("\ndata_broken\n_cell_length_a 3\nloop_\n _atom_site_label\n _atom_site_fract_x\n X1 0.1\n")
    with pytest.raises(StructureFileError, match=re.escape(str(path)) + ".*No structure parsed for section 2"):
        read_structures(path)


BCC_FE_CIF = """data_bcc_Fe
_cell_length_a 2.8553
_cell_length_b 2.8553
_cell_length_c 2.8553
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'I m -3 m'
_symmetry_Int_Tables_number 229
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
Fe1 Fe 0 0 0 OCCUPANCY
"""


def test_symmetric_cif_is_expanded_to_the_full_cell(tmp_path: Path) -> None:
    path = tmp_path / "bcc.cif"
    path.write_text(BCC_FE_CIF.replace("OCCUPANCY", "1"))
    (atoms,) = read_structures(path)
    assert atoms.get_chemical_formula() == "Fe2"
    assert atoms.get_volume() == pytest.approx(2.8553**3)
    np.testing.assert_allclose(atoms.get_scaled_positions()[1], [0.5] * 3, atol=1e-12)


def test_partially_occupied_cif_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "disordered.cif"
    path.write_text(BCC_FE_CIF.replace("OCCUPANCY", "0.5"))
    with pytest.raises(StructureFileError, match=re.escape(str(path)) + ".*ordered structures"):
        read_structures(path)


def test_dataset_csv_is_read_with_index_sources(tmp_path: Path) -> None:
    structures = [triclinic_alfe(), Atoms("Fe2", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=[2.8553] * 3, pbc=True)]
    path = tmp_path / "set.csv"
    write_dataset_csv(path, structures, index=[7, 3])
    read = read_structures(path)
    assert [atoms.info["source"] for atoms in read] == [f"{path}:7", f"{path}:3"]
    for got, original in zip(read, structures, strict=True):
        assert_same_structure(got, original, same_orientation=False)


def test_repeated_csv_index_falls_back_to_row_positions(tmp_path: Path) -> None:
    path = tmp_path / "concatenated.csv"
    write_dataset_csv(path, [triclinic_alfe()] * 3, index=[0, 1, 0])
    read = read_structures(path)
    assert [atoms.info["source"] for atoms in read] == [f"{path}:{k}" for k in range(3)]
    assert [atoms.info["csv_index"] for atoms in read] == ["0", "1", "0"]


def test_csv_without_structure_column_lists_the_columns_found(tmp_path: Path) -> None:
    path = tmp_path / "no_structure.csv"
    path.write_text(",cif,nsites\n0,data_x,1\n")
    with pytest.raises(StructureFileError, match=re.escape(str(path)) + r".*no 'structure' column.*'cif', 'nsites'"):
        read_structures(path)


def test_csv_nsites_mismatch_names_the_row(tmp_path: Path) -> None:
    path = tmp_path / "wrong_count.csv"
    write_dataset_csv(path, [triclinic_alfe()] * 2, nsites_offset=1)
    with pytest.raises(StructureFileError, match=re.escape(str(path)) + r", row 0 \(index 0\): 'nsites' is 4 but .* 3 atoms"):
        read_structures(path)


def test_csv_row_with_missing_fields_names_the_row(tmp_path: Path) -> None:
    path = tmp_path / "short_row.csv"
    write_dataset_csv(path, [triclinic_alfe()])
    with open(path, "a") as handle:
        handle.write("1,data_only_two_fields\n")
    with pytest.raises(
        StructureFileError, match=re.escape(str(path)) + r", row 1 \(index 1\): 2 fields, but the header has 3"
    ):
        read_structures(path)


def paper_file(name: str) -> Path:
    path = PAPER_STRUCTURES / name
    if not path.is_file():
        pytest.skip(f"paper structures not available ({path})")
    return path


@pytest.mark.parametrize(
    ("name", "count", "sizes"),
    [
        ("AlFe.csv", 2, {2}),
        ("AlandFe_mono.csv", 12, {1, 2, 4}),
        ("Al-Fe_N=2-3.csv", 20, {2, 3}),
        ("Al-Fe_N=4.csv", 50, {4}),
        ("Al-Fe_N=5.csv", 50, {5}),
        ("AlFe7.csv", 1, {8}),
        ("Al8Fe2.csv", 1, {10}),
        ("Al2Fe18.csv", 1, {20}),
    ],
)
def test_paper_csvs_have_the_published_counts(name: str, count: int, sizes: set[int]) -> None:
    read = read_structures(paper_file(name))
    assert len(read) == count
    assert {len(atoms) for atoms in read} == sizes
    assert len({atoms.info["source"] for atoms in read}) == count
    assert all(set(atoms.get_chemical_symbols()) <= {"Al", "Fe"} and atoms.pbc.all() for atoms in read)


def test_paper_b2_alfe_is_index_1_of_alfe_csv() -> None:
    path = paper_file("AlFe.csv")
    b2 = next(atoms for atoms in read_structures(path) if atoms.info["source"] == f"{path}:1")
    assert b2.get_chemical_formula() == "AlFe"
    np.testing.assert_allclose(b2.cell.cellpar(), [2.845506] * 3 + [90] * 3, atol=1e-6)
    np.testing.assert_allclose(b2.get_scaled_positions()[1] - b2.get_scaled_positions()[0], [0.5] * 3, atol=1e-8)
