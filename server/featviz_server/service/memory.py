"""Keeping the server's resident memory near what it uses (glibc's malloc; no-ops elsewhere).

A run allocates many image-sized buffers (its previews, their PNGs, the messages) from several
threads: the batcher, the PNG encoders, gRPC's. glibc's malloc gives each contending thread an
arena of its own (up to 8 per core) and keeps what they free there for reuse, rarely returning it,
so the resident size drifts up with the number of threads and stays at its peak long after the
runs have ended. Two arenas (unless MALLOC_ARENA_MAX says otherwise) and a `malloc_trim` whenever
the server goes idle keep it near its working set.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from functools import cache
from typing import Any

MALLOC_ARENAS = 2
M_ARENA_MAX = -8  # mallopt's parameter number in glibc's malloc.h


@cache
def _glibc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def limit_malloc_arenas() -> None:
    """At start-up, before the threads: at most MALLOC_ARENAS arenas (or MALLOC_ARENA_MAX)."""
    libc = _glibc()
    if libc is not None and "MALLOC_ARENA_MAX" not in os.environ:
        libc.mallopt(M_ARENA_MAX, MALLOC_ARENAS)


def release_free_memory() -> None:
    """Return the allocator's free pages to the OS (blocks for milliseconds: run it in a thread)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
