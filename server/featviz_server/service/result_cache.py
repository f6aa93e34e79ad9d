"""Finished results on disk, addressed by everything that determines them, bounded in size.

The same job (layer, channels, every recipe value, objective, seed) on the same weights gives
the same images, so a repeat is answered from here at once. Files are written atomically, so
several replicas may share one directory; the least recently used are evicted first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .. import engine

log = logging.getLogger(__name__)

# Bump when the stored layout, or what the engine computes for a given job, changes.
FORMAT = 2


class ResultCache:
    """`get(job)` / `put(job, result)` under `directory`, at most `max_bytes` in all."""

    def __init__(self, directory: Path, max_bytes: int, weights_sha256: str) -> None:
        self._directory = directory
        self._max_bytes = max_bytes
        self._weights_sha256 = weights_sha256
        directory.mkdir(parents=True, exist_ok=True)

    def key(self, job: engine.Job) -> str:
        identity = {
            "format": FORMAT,
            "weights": self._weights_sha256,
            "job": dataclasses.asdict(job),
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    def get(self, job: engine.Job) -> engine.RenderResult | None:
        """The stored result, or None; a damaged entry is deleted and counts as a miss."""
        path = self._path(job)
        try:
            with np.load(path) as stored:
                images, facts = stored["images"], json.loads(str(stored["facts"]))
            os.utime(path)  # recently used: evicted last
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            log.warning("dropping damaged cache entry %s: %s", path.name, error)
            path.unlink(missing_ok=True)
            return None
        return engine.RenderResult(images=images, **facts)

    def put(self, job: engine.Job, result: engine.RenderResult) -> None:
        facts = {
            "objective": result.objective,
            "activation": result.activation,
            "steps": result.steps,
            "duration_seconds": result.duration_seconds,
            "device": result.device,
            "robust_activation": result.robust_activation,
            "saturated_fraction": result.saturated_fraction,
            "stop_reason": result.stop_reason,
        }
        with tempfile.NamedTemporaryFile(dir=self._directory, suffix=".part", delete=False) as f:
            np.savez(f, images=result.images, facts=np.array(json.dumps(facts)))
        Path(f.name).replace(self._path(job))
        self._evict()

    def _path(self, job: engine.Job) -> Path:
        return self._directory / f"{self.key(job)}.npz"

    def _evict(self) -> None:
        """Delete the least recently used entries until the cache fits its bound."""
        entries = []
        for path in self._directory.glob("*.npz"):
            try:
                stat = path.stat()
                entries.append((stat.st_mtime, stat.st_size, path))
            except FileNotFoundError:  # evicted meanwhile by another replica
                continue
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self._max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
