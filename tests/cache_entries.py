"""Reading and rewriting a server's result cache entries on disk, for tests that plant changed or
damaged entries:

    before = set(cache_dir.glob("*.result"))
    ...                                     # a run whose result the server stores
    entry = entry_after(cache_dir, before)
    entry.write_bytes(resealed(entry, change))
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from featviz_server.service import result_cache

Change = Callable[[dict, np.ndarray], tuple[dict, np.ndarray]]


def entry_after(cache_dir: Path, before: set[Path], timeout: float = 30.0) -> Path:
    """The one entry that appeared in `cache_dir` since `before` (results are stored just after
    they are sent, so this waits for it)."""
    deadline = time.monotonic() + timeout
    while not (new := set(cache_dir.glob("*.result")) - before):
        assert time.monotonic() < deadline, "no entry was stored"
        time.sleep(0.05)
    (entry,) = new
    return entry


def resealed(entry: Path, change: Change) -> bytes:
    """The entry with its header and images changed by `change(header, images)`, and a checksum
    that is valid for the change: the cache reads it as sound."""
    header, images = result_cache.decode(entry.read_bytes())
    del header["sha256"]
    header, images = change(header, np.frombuffer(images, np.uint8))
    return result_cache.encode(header, images)
