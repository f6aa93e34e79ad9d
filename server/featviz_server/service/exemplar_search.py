"""The exemplar scanner seen from the event loop: a layer's scan runs in a thread and streams
its progress; then each requested channel's crops, cut off the loop.

A client that leaves during a scan does not stop it: the scan is cached for the next request.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..exemplars import Exemplar, LayerExemplars, Scanner, ScanProgress
from .validation import ExemplarQuery


@dataclass(frozen=True)
class ChannelExemplars:
    """One channel's top and bottom exemplars, each with its crop's (size, size, 3) pixels."""

    channel: int
    top: tuple[tuple[Exemplar, np.ndarray], ...]
    bottom: tuple[tuple[Exemplar, np.ndarray], ...]


@dataclass(frozen=True)
class ExemplarsDone:
    """The collection behind the exemplars; the last event."""

    collection: str
    photos: int
    skipped: int
    crops: int
    crop_size: int
    cached: bool


ExemplarEvent = ScanProgress | ChannelExemplars | ExemplarsDone
_END = object()


class ExemplarSearch:
    """`find(query)`: an async stream of ScanProgress, ChannelExemplars, then ExemplarsDone."""

    def __init__(self, scanner: Scanner) -> None:
        self._scanner = scanner
        # Scans take their own thread: the ones waiting their turn hold none of the loop's
        # shared pool, which validation, encoding and the result cache need meanwhile.
        self._scans = ThreadPoolExecutor(1, thread_name_prefix="exemplar-scan")

    async def find(self, query: ExemplarQuery) -> AsyncIterator[ExemplarEvent]:
        cached = await asyncio.to_thread(self._scanner.is_cached, query.layer)
        loop = asyncio.get_running_loop()
        updates: asyncio.Queue[object] = asyncio.Queue()

        def scan() -> LayerExemplars:
            try:
                return self._scanner.layer(
                    query.layer, lambda p: loop.call_soon_threadsafe(updates.put_nowait, p)
                )
            finally:
                loop.call_soon_threadsafe(updates.put_nowait, _END)

        in_context = functools.partial(contextvars.copy_context().run, scan)  # as to_thread
        scanning = loop.run_in_executor(None if cached else self._scans, in_context)
        while (update := await updates.get()) is not _END:
            yield update  # type: ignore[misc]
        layer = await scanning
        for channel in query.channels:
            yield await asyncio.to_thread(self._channel, layer, channel, query.count)
        collection, _ = self._scanner.collection()
        yield ExemplarsDone(
            collection.name,
            layer.photos,
            layer.skipped,
            len(layer.crops),
            self._scanner.size,
            cached,
        )

    def _channel(self, layer: LayerExemplars, channel: int, count: int) -> ChannelExemplars:
        def cut(exemplars: list[Exemplar]) -> tuple[tuple[Exemplar, np.ndarray], ...]:
            return tuple((e, self._scanner.pixels(e.crop)) for e in exemplars)

        top, bottom = layer.exemplars(channel, count)
        return ChannelExemplars(channel, cut(top), cut(bottom))
