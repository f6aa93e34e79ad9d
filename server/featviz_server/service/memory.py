"""Giving freed memory back to the operating system.

A run allocates many image-sized buffers (its previews, their PNGs, the messages) from several
threads. glibc's malloc keeps what they free in per-thread arenas for reuse and rarely returns it,
so without help the server's resident size stays at its peak long after the runs have ended.
`malloc_trim` returns every free page; it is a no-op elsewhere (musl, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from functools import cache

log = logging.getLogger(__name__)


@cache
def _malloc_trim() -> ctypes._CFuncPtr | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc
        return None


def release_free_memory() -> None:
    """Return the allocator's free pages to the OS (blocks for milliseconds: run it in a thread)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
