"""Files that are whole or absent: the one atomic writer of the package.

Results, caches and structures are written to a temporary file beside the target, flushed to disk, then renamed over
it (``os.replace``, atomic on one file system), so a reader or a killed run never sees half a file.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_file"]


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; on success it replaces ``path``, on any error it is removed.

    The temporary file exists (empty, mode 0o666 before the umask, as for a normal write) when the block starts, is
    synced to disk after it, and holds ``path``'s name, so a writer that picks a format by the suffix must be told it.
    The folder is created if missing.

    :param path: the file to write.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield temporary
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
