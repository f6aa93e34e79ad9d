"""One consumer's pending run events, bounded so that a client that reads slowly costs O(1) memory.

The run never waits for its consumers: `put` is called for every event and never blocks. Queue
positions, the final result and errors are all kept, in order (they are few and small). Progress
updates, which carry every image of the run, are not: beyond `max_updates` pending updates or
`max_bytes` of their images, the oldest pending update is dropped, so a slow reader always gets
the latest one next and never more than the bound is held for it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from .. import engine

T = TypeVar("T")


class Mailbox(Generic[T]):
    """Events for one consumer: `put` from the event loop, `await get()` by the consumer."""

    def __init__(
        self, max_updates: int, max_bytes: int, dropped: Callable[[], None] = lambda: None
    ) -> None:
        self._max_updates = max_updates
        self._max_bytes = max_bytes
        self._dropped = dropped
        self._events: deque[T] = deque()
        self._updates = 0  # pending engine.Progress events
        self._bytes = 0  # their images
        self._arrived = asyncio.Event()

    def put(self, event: T) -> None:
        self._events.append(event)
        if isinstance(event, engine.Progress):
            self._updates += 1
            self._bytes += event.images.nbytes
            while self._updates > 1 and (
                self._updates > self._max_updates or self._bytes > self._max_bytes
            ):
                self._drop_oldest_update()
        self._arrived.set()

    async def get(self) -> T:
        while not self._events:
            self._arrived.clear()
            await self._arrived.wait()
        event = self._events.popleft()
        if isinstance(event, engine.Progress):
            self._updates -= 1
            self._bytes -= event.images.nbytes
        return event

    def __len__(self) -> int:
        return len(self._events)

    def _drop_oldest_update(self) -> None:
        # By position, not by value: progress updates compare their arrays element-wise.
        index, oldest = next(
            (i, e) for i, e in enumerate(self._events) if isinstance(e, engine.Progress)
        )
        del self._events[index]
        self._updates -= 1
        self._bytes -= oldest.images.nbytes
        self._dropped()
