"""Threads of the BLAS libraries loaded in this process, for a block of work (best effort, Linux).

Relaxations do linear algebra on tiny matrices (GPMin's surrogate model, BFGS's Hessian of a few atoms, the 3×3
matrix exponentials and logarithms of ``FrechetCellFilter``): extra OpenBLAS threads only spin there, and on a busy
2-core machine they make such work many times slower. ``OPENBLAS_NUM_THREADS`` would have to be set before NumPy
is imported; :func:`blas_threads` changes the loaded libraries' thread counts for a block and restores them.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator
from typing import Any

__all__ = ["blas_threads"]

_OPENBLAS_THREAD_CALLS = (
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
    ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
    ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
    ("openblas_get_num_threads", "openblas_set_num_threads"),
)


@contextlib.contextmanager
def blas_threads(n_threads: int = 1) -> Iterator[int]:
    """Run a block with the OpenBLAS libraries loaded in this process set to ``n_threads`` (best effort, Linux).

    The previous thread counts are restored on exit (see the module docstring for why).

    :param n_threads: threads per library.
    :return: (as the ``with`` target) how many libraries were adjusted.
    """
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower() and line.split()[-1].startswith("/")}
    except OSError:
        paths = set()
    previous: list[tuple[Any, int]] = []
    for path in sorted(paths):
        try:
            handle = ctypes.CDLL(path)
        except OSError:
            continue
        for get_name, set_name in _OPENBLAS_THREAD_CALLS:
            getter, setter = getattr(handle, get_name, None), getattr(handle, set_name, None)
            if getter is not None and setter is not None:
                previous.append((setter, int(getter())))
                setter(ctypes.c_int(int(n_threads)))
                break
    try:
        yield len(previous)
    finally:
        for setter, count in previous:
            setter(ctypes.c_int(count))
