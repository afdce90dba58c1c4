"""Benchmark output files, written atomically: readers never see half a file."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sb3_crystal.benchmark.loop import ROW_FIELDS
from sb3_crystal.files import atomic_file

__all__ = ["atomic_write", "write_csv"]


def atomic_write(path: Path, write: Any, suffix: str, binary: bool = False) -> None:
    """Write through :func:`~sb3_crystal.files.atomic_file`: ``write(file)`` gets the open temporary file.

    :param suffix: unused (kept for callers; the temporary name carries the target's).
    """
    with (
        atomic_file(path) as tmp,
        open(tmp, "wb" if binary else "w", **({} if binary else {"newline": "", "encoding": "utf-8"})) as f,
    ):
        write(f)


def write_csv(rows: Sequence[dict[str, Any]], path: str | os.PathLike, fields: Sequence[str] | None = None) -> Path:
    """Write rows as CSV, atomically.

    :param rows: dicts (extra keys are ignored).
    :param path: output file.
    :param fields: column order; default :data:`ROW_FIELDS`.
    """
    path = Path(path)
    columns = list(fields or ROW_FIELDS)

    def write(handle: Any) -> None:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

    atomic_write(path, write, ".tmp")
    return path
