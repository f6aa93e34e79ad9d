"""Admission, queueing and execution of runs, off the event loop.

A run is admitted if a slot is free or the bounded queue has room; otherwise Overloaded (the
servicer answers RESOURCE_EXHAUSTED with a retry hint). Each started run optimizes in a worker
thread; its progress crosses into the event loop with `call_soon_threadsafe`. When the consumer
goes away (client cancel, deadline, drain), the run's cancel Event is set and the engine stops
within one step; only then does the run leave `active` and free its slot.

The servicer sees only `run(job, progress_every)` -> an async stream of Queued, engine.Progress
and Finished events, so the execution strategy (one job per thread today; continuous batching of
several jobs with engine.Run/engine.advance later) can change without touching it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from torch import nn

from .. import engine
from .metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Queued:
    """The run waits for a slot; position 1 starts next."""

    position: int


@dataclass(frozen=True)
class Finished:
    """The run's result; always the last event."""

    result: engine.RenderResult
    queued_seconds: float


Event = Queued | engine.Progress | Finished


class Overloaded(Exception):
    """Every slot is busy and the queue is full."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(
            f"server overloaded: every run slot is busy and the queue is full; "
            f"retry in {retry_after:g} s"
        )
        self.retry_after = retry_after


class ShuttingDown(Exception):
    """The server drains: it takes no new runs, and the grace period of running ones is over."""


@dataclass(eq=False)
class _Ticket:
    """One admitted run and the channel between its worker thread and its consumer."""

    job: engine.Job
    progress_every: int
    admitted: float = field(default_factory=time.monotonic)
    events: asyncio.Queue[Event | BaseException] = field(default_factory=asyncio.Queue)
    cancel: threading.Event = field(default_factory=threading.Event)
    position: int = 0
    started: float = 0.0
    last_step: int = 0
    progressed: bool = False
    shut_down: bool = False


class Scheduler:
    """Runs at most `max_active` jobs at once, with up to `queue_size` more waiting (FIFO)."""

    def __init__(
        self,
        model: nn.Module,
        metrics: Metrics,
        *,
        max_active: int,
        queue_size: int,
        retry_after: float,
    ) -> None:
        self._model = model
        self._metrics = metrics
        self._max_active = max_active
        self._queue_size = queue_size
        self._retry_after = retry_after
        self._executor = ThreadPoolExecutor(max_active, thread_name_prefix="featviz-run")
        self._waiting: deque[_Ticket] = deque()
        self._active: set[_Ticket] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False

    @property
    def active_runs(self) -> int:
        """Runs whose worker thread has not returned yet."""
        return len(self._active)

    async def run(self, job: engine.Job, progress_every: int) -> AsyncIterator[Event]:
        """Admit the job and stream its events; closing the stream early cancels the run.

        Raises Overloaded or ShuttingDown before the first event; the engine's errors as they
        happen. Use under `contextlib.aclosing` so that cancellation is immediate.
        """
        ticket = self._admit(job, progress_every)
        try:
            while True:
                event = await ticket.events.get()
                if isinstance(event, BaseException):
                    raise event
                yield event
                if isinstance(event, Finished):
                    return
        finally:
            self._abandon(ticket)

    async def drain(self, grace: float) -> None:
        """Stop admitting; queued runs end now, running ones get `grace` seconds, then end."""
        self._closed = True
        while self._waiting:
            self._waiting.popleft().events.put_nowait(ShuttingDown("server is shutting down"))
        self._metrics.queue_depth.set(0)
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            log.warning(
                "grace period over; ending runs", extra={"fields": {"runs": len(self._active)}}
            )
            for ticket in self._active:
                ticket.shut_down = True
                ticket.cancel.set()
                ticket.events.put_nowait(ShuttingDown("server shut down before the run finished"))
            await self._idle.wait()
        self._executor.shutdown(wait=False)

    # --- inside the event loop ------------------------------------------------------------------

    def _admit(self, job: engine.Job, progress_every: int) -> _Ticket:
        if self._closed:
            raise ShuttingDown("server is shutting down")
        if len(self._active) >= self._max_active and len(self._waiting) >= self._queue_size:
            raise Overloaded(self._retry_after)
        ticket = _Ticket(job, progress_every)
        self._waiting.append(ticket)
        self._dispatch()
        return ticket

    def _dispatch(self) -> None:
        """Start waiting runs while slots are free; tell the others their new position."""
        while self._waiting and len(self._active) < self._max_active:
            self._start(self._waiting.popleft())
        for position, ticket in enumerate(self._waiting, start=1):
            if ticket.position != position:
                ticket.position = position
                ticket.events.put_nowait(Queued(position))
        self._metrics.queue_depth.set(len(self._waiting))

    def _start(self, ticket: _Ticket) -> None:
        self._active.add(ticket)
        self._idle.clear()
        self._metrics.runs_started.inc()
        self._metrics.active_runs.set(len(self._active))
        ticket.started = time.monotonic()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._render, ticket, loop)
        future.add_done_callback(functools.partial(self._finished, ticket))

    def _progressed(self, ticket: _Ticket, progress: engine.Progress) -> None:
        if not ticket.progressed:
            ticket.progressed = True
            self._metrics.time_to_first_preview.observe(time.monotonic() - ticket.admitted)
        self._metrics.steps.inc(max(0, progress.step - ticket.last_step))
        ticket.last_step = max(ticket.last_step, progress.step)
        ticket.events.put_nowait(progress)

    def _finished(self, ticket: _Ticket, future: Future[engine.RenderResult]) -> None:
        """The worker thread returned: record the outcome, free the slot, start the next run."""
        self._active.discard(ticket)
        error = future.exception()
        if error is None:
            result = future.result()
            status = "ok"
            self._metrics.steps.inc(max(0, result.steps - ticket.last_step))
            self._metrics.run_duration.observe(result.duration_seconds)
            if result.duration_seconds > 0:
                self._metrics.steps_per_second.observe(result.steps / result.duration_seconds)
            ticket.events.put_nowait(Finished(result, ticket.started - ticket.admitted))
        elif isinstance(error, engine.Cancelled):
            status = "unavailable" if ticket.shut_down else "cancelled"
        else:
            status = "error"
            ticket.events.put_nowait(error)
        self._metrics.runs_finished.labels(status).inc()
        fields = {
            "layer": ticket.job.layer,
            "images": len(ticket.job.images),
            "total_steps": ticket.job.recipe.steps,
            "seconds": round(time.monotonic() - ticket.started, 3),
            "active_runs": len(self._active),
        }
        if error is not None:
            fields["detail"] = str(error)
        log.info("run %s", status, extra={"fields": fields})
        self._metrics.active_runs.set(len(self._active))  # after the log: tests read both
        if not self._active:
            self._idle.set()
        self._dispatch()

    def _abandon(self, ticket: _Ticket) -> None:
        """The consumer is gone (or done): drop the run from the queue or stop its thread."""
        ticket.cancel.set()
        if ticket in self._waiting:
            self._waiting.remove(ticket)
            self._dispatch()

    # --- in a worker thread ---------------------------------------------------------------------

    def _render(self, ticket: _Ticket, loop: asyncio.AbstractEventLoop) -> engine.RenderResult:
        def on_progress(progress: engine.Progress) -> None:
            loop.call_soon_threadsafe(self._progressed, ticket, progress)

        return engine.render(
            self._model,
            ticket.job,
            on_progress=on_progress,
            progress_every=ticket.progress_every,
            cancel=ticket.cancel,
        )
