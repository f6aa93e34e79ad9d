"""Finished results on disk, addressed by everything that determines them, bounded in size, and
checked before they are served.

The same job (layer, channels, every recipe value, objective, seed) on the same weights, computed
the same way (device kind and precision), gives the same images, so a repeat is answered from
here at once. Files are written atomically, so several replicas may share one directory (each
finds only what was computed as it computes); the least recently used are evicted first.

An entry is one file: MAGIC, a one-line JSON header, then the images' raw bytes. The header holds
the entry's key and job, the images' shape, the result's facts and a SHA-256 of everything else.
A file that does not match the job it is read for in any way (size, checksum, shapes, keys, job)
is deleted, counted and reported as a miss, so the run is computed again and the entry replaced:
a damaged disk costs a recomputation, never a wrong image or an error. Partial files left by a
killed writer are counted in the size bound and removed once stale (at start-up or eviction).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import get_args

import numpy as np

from .. import engine
from ..engine.job import StopReason
from .metrics import Metrics

log = logging.getLogger(__name__)

# Bump when the stored layout, or what the engine computes for a given job, changes.
FORMAT = 3
MAGIC = b"featviz-result\n"
SUFFIX, PARTIAL = ".result", ".result.part"  # the cache's files: eviction touches no other
MAX_HEADER_BYTES = 1 << 20  # 512 images' facts take ~60 kB
STALE_PARTIAL_SECONDS = 600.0  # a partial file this old has no writer left


def _per_image_floats(value: object, job: engine.Job) -> bool:
    return (
        isinstance(value, list)
        and len(value) == len(job.images)
        and all(isinstance(v, float | int) and not isinstance(v, bool) for v in value)
    )


def _count(value: object, job: engine.Job) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _seconds(value: object, job: engine.Job) -> bool:
    return isinstance(value, float | int) and not isinstance(value, bool) and math.isfinite(value)


def _text(value: object, job: engine.Job) -> bool:
    return isinstance(value, str)


def _stop_reason(value: object, job: engine.Job) -> bool:
    return value in get_args(StopReason)


# The engine.RenderResult fields stored besides the images, each with its check against the job.
FACTS: dict[str, Callable[[object, engine.Job], bool]] = {
    "objective": _per_image_floats,
    "activation": _per_image_floats,
    "steps": _count,
    "duration_seconds": _seconds,
    "device": _text,
    "robust_activation": _per_image_floats,
    "saturated_fraction": _per_image_floats,
    "stop_reason": _stop_reason,
}


class Damaged(ValueError):
    """An entry that must not be served; `reason` is its metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def encode(header: dict[str, object], images: np.ndarray) -> bytes:
    """An entry's bytes: `header` plus the checksum of it and the images, then the images."""
    sealed = {**header, "sha256": _checksum(header, images)}
    return MAGIC + json.dumps(sealed, sort_keys=True).encode() + b"\n" + images.tobytes()


def decode(data: bytes) -> tuple[dict[str, object], bytes]:
    """(header, image bytes) of an entry, its checksum not yet verified."""
    if not data.startswith(MAGIC):
        raise Damaged("format", "not a featviz result entry")
    end = data.find(b"\n", len(MAGIC), len(MAGIC) + MAX_HEADER_BYTES)
    if end < 0:
        raise Damaged("format", "no header line")
    try:
        header = json.loads(data[len(MAGIC) : end])
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise Damaged("format", f"header is not JSON ({error})") from None
    if not isinstance(header, dict):
        raise Damaged("format", "header is not a JSON object")
    return header, data[end + 1 :]


def _checksum(header: dict[str, object], images: np.ndarray | bytes) -> str:
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    digest.update(memoryview(images).cast("B"))
    return digest.hexdigest()


def _plain(value: object) -> object:
    """`value` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value, default=_fingerprint))


def _fingerprint(value: object) -> str:
    """Bytes in a job (a start picture's pixels) enter the key as their sha256."""
    if isinstance(value, bytes):
        return hashlib.sha256(value).hexdigest()
    raise TypeError(f"cannot key a {type(value).__name__}")


class ResultCache:
    """`get(job)` / `put(job, result)` under `directory`, at most `max_bytes` in all, for results
    computed by `computed_by` (the weights' sha256 and how they compute, e.g. "<sha256> cuda
    bf16"): part of every key."""

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        computed_by: str,
        metrics: Metrics | None = None,
    ) -> None:
        self._directory = directory
        self._max_bytes = max_bytes
        self._computed_by = computed_by
        self._metrics = metrics
        directory.mkdir(parents=True, exist_ok=True)
        self._evict()  # stale partial files first, then whatever exceeds a lowered bound

    def key(self, job: engine.Job) -> str:
        identity = {
            "format": FORMAT,
            "computed_by": self._computed_by,
            "job": dataclasses.asdict(job),
        }
        text = json.dumps(identity, sort_keys=True, default=_fingerprint)
        return hashlib.sha256(text.encode()).hexdigest()

    def get(self, job: engine.Job) -> engine.RenderResult | None:
        """The stored result, or None; a damaged entry is deleted, counted and is a miss. Its
        `duration_seconds` is the time this lookup took, not the original run's."""
        started = time.perf_counter()
        path = self.path(job)
        try:
            size = path.stat().st_size
            expected = _image_bytes(job)
            if not expected < size <= expected + len(MAGIC) + MAX_HEADER_BYTES:
                raise Damaged("size", f"{size} bytes for {expected} bytes of images")
            result = self._validated(job, path.read_bytes())
        except FileNotFoundError:
            return None
        except Damaged as error:
            self._drop(path, error.reason, str(error))
            return None
        except Exception as error:  # an unreadable file or disk: recompute, never fail the run
            self._drop(path, "unreadable", repr(error))
            return None
        with contextlib.suppress(OSError):  # a read-only disk still serves
            os.utime(path)  # recently used: evicted last
        return dataclasses.replace(result, duration_seconds=time.perf_counter() - started)

    def put(self, job: engine.Job, result: engine.RenderResult) -> None:
        header = {
            "format": FORMAT,
            "key": self.key(job),
            "job": _plain(dataclasses.asdict(job)),
            "shape": list(result.images.shape),
            "facts": {name: getattr(result, name) for name in FACTS},
        }
        data = encode(header, np.ascontiguousarray(result.images, dtype=np.uint8))
        with tempfile.NamedTemporaryFile(dir=self._directory, suffix=PARTIAL, delete=False) as f:
            partial = Path(f.name)
            try:
                f.write(data)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
        partial.replace(self.path(job))
        self._evict()

    def path(self, job: engine.Job) -> Path:
        """Where the entry of `job` lives."""
        return self._directory / f"{self.key(job)}{SUFFIX}"

    def _validated(self, job: engine.Job, data: bytes) -> engine.RenderResult:
        header, payload = decode(data)
        shape = [len(job.images), job.recipe.size, job.recipe.size, 3]
        if header.get("format") != FORMAT:
            raise Damaged("format", f"format {header.get('format')!r}, not {FORMAT}")
        if header.get("key") != self.key(job):
            raise Damaged("key", "the entry's key is another job's")
        if header.get("job") != _plain(dataclasses.asdict(job)):
            raise Damaged("job", "the entry answers another job")
        if header.get("shape") != shape:
            raise Damaged("shape", f"images {header.get('shape')}, the job makes {shape}")
        if len(payload) != math.prod(shape):
            raise Damaged("size", f"{len(payload)} bytes of images, not {math.prod(shape)}")
        sealed = {name: value for name, value in header.items() if name != "sha256"}
        if header.get("sha256") != _checksum(sealed, payload):
            raise Damaged("checksum", "contents do not match their SHA-256")
        facts = header.get("facts")
        if not isinstance(facts, dict) or facts.keys() != FACTS.keys():
            raise Damaged("facts", f"facts {sorted(facts or ())}, not {sorted(FACTS)}")
        for name, valid in FACTS.items():
            if not valid(facts[name], job):
                raise Damaged("facts", f"{name} is not valid for the job")
        images = np.frombuffer(payload, np.uint8).reshape(shape).copy()
        return engine.RenderResult(images=images, **facts)

    def _drop(self, path: Path, reason: str, detail: str) -> None:
        log.warning(
            "dropping damaged result cache entry",
            extra={"fields": {"entry": path.name, "reason": reason, "detail": detail[:200]}},
        )
        self._damaged(reason)
        try:
            path.unlink(missing_ok=True)
        except OSError as error:  # a read-only disk: the entry stays, and is never served
            log.warning("cannot delete %s: %s", path.name, error)

    def _damaged(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.result_cache_damaged.labels(reason).inc()

    def _evict(self) -> None:
        """Delete stale partial files, then the least recently used entries until the cache
        (partial files in progress included) fits its bound."""
        now = time.time()
        entries, total = [], 0
        for path in self._directory.iterdir():
            try:
                stat = path.stat()
            except FileNotFoundError:  # evicted meanwhile by another replica
                continue
            if not path.is_file() or not path.name.endswith((SUFFIX, PARTIAL)):
                continue
            if path.name.endswith(PARTIAL):
                if now - stat.st_mtime > STALE_PARTIAL_SECONDS:
                    path.unlink(missing_ok=True)
                    self._damaged("partial")
                    log.info("removed a stale partial file", extra={"fields": {"file": path.name}})
                else:
                    total += stat.st_size  # a write in progress: counted, not evicted
                continue
            entries.append((stat.st_mtime, stat.st_size, path))
            total += stat.st_size
        for _, size, path in sorted(entries):
            if total <= self._max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size


def _image_bytes(job: engine.Job) -> int:
    return len(job.images) * job.recipe.size**2 * 3
