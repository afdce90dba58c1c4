"""Benchmark output files, written atomically: readers never see half a file."""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sb3_crystal.benchmark.loop import ROW_FIELDS

__all__ = ["atomic_write", "write_csv"]


def atomic_write(path: Path, write: Any, suffix: str, binary: bool = False) -> None:
    """Write through a temporary file in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    try:
        with os.fdopen(handle, "wb" if binary else "w", **({} if binary else {"newline": "", "encoding": "utf-8"})) as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
