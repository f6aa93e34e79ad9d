"""Admission, queueing, de-duplication, caching and execution of runs, off the event loop.

A request is answered from the result cache if it can be; joins an identical run already in
flight if there is one; else it is admitted when a slot is free or the bounded queue has room,
and refused with Overloaded otherwise (the servicer answers RESOURCE_EXHAUSTED with a retry hint).

Admitted runs are optimized by one Batcher thread with continuous batching: at every step it
advances, in ONE forward/backward (`engine.advance`), as many runs sharing a cut point and image
size as fit the batch budget. The budget is learnt per batch key from the timed steps themselves
(BatchBudget): the one, up to `max_batch_images`, that advances the most images per second on this
device. Runs join and leave at step boundaries, and each keeps its own parameters, optimizer and
random streams (so its images are those it would get alone). Each run is charged the time of every
step it takes part in and of its previews, and the least charged goes next. A newcomer starts
up to HEAD_START seconds below the least charged run, so that a short run (a preview, a notebook's
next unit) finishes in about its time on an idle server; the head starts come from an allowance
that refills at HEAD_START_REFILL of the wall time, so that a flood of newcomers cannot starve
the runs already there. Past its head start, every run gets an equal share of the device's time
whatever its size, so a huge run cannot starve small ones. Progress crosses into the event loop with
`call_soon_threadsafe` and lands in each consumer's bounded Mailbox: the batcher never waits for a
consumer, and one that reads slowly gets the latest progress, not all of it. When a run's last
consumer goes away (cancel, deadline, drain), its cancel Event is set and it leaves the batch before
the next step; only then does it free its slot.

The servicer sees only `run(job, progress_every, deadline_passed)` -> an async stream of Queued,
engine.Progress and Finished events.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from itertools import count

import torch
from torch import nn

from .. import engine
from .mailbox import Mailbox
from .memory import release_free_memory
from .metrics import Metrics
from .result_cache import ResultCache

HEAD_START = 1.0  # seconds of device time a newcomer may run ahead of the others,
HEAD_START_REFILL = 0.25  # from an allowance that refills at this share of the wall time

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
    cached: bool = False


Event = Queued | engine.Progress | Finished
Outcome = engine.RenderResult | BaseException
Consumer = Mailbox[Event | BaseException]


class Overloaded(Exception):
    """The server cannot do this run now (`reason`); it may in `retry_after` seconds."""

    FULL = "every run slot is busy and the queue is full"
    OUT_OF_MEMORY = "the device ran out of memory for this run's batch"

    def __init__(self, retry_after: float, reason: str = FULL) -> None:
        super().__init__(f"server overloaded: {reason}; retry in {retry_after:g} s")
        self.retry_after = retry_after


class ShuttingDown(Exception):
    """The server drains: it takes no new runs, and the grace period of running ones is over."""


class TooLarge(Exception):
    """The run does not fit the device's memory even alone: trying again would not help."""

    def __init__(self, run: engine.Run) -> None:
        super().__init__(
            f"the run's {len(run)} images of {run.job.recipe.size} px do not fit the device's "
            "memory even alone; ask for fewer images or a smaller size"
        )


@dataclass(eq=False)
class _Ticket:
    """One computation and the consumers (identical requests) waiting for its events."""

    job: engine.Job
    progress_every: int
    order: int  # admission order, which breaks ties between equally served runs
    admitted: float = field(default_factory=time.monotonic)
    consumers: list[Consumer] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)
    cancelled_status: str = "cancelled"  # or "deadline_exceeded": why the last consumer left
    position: int = 0
    started: float = 0.0
    last_step: int = 0
    progressed: bool = False
    shut_down: bool = False

    @property
    def key(self) -> tuple[engine.Job, int]:
        return self.job, self.progress_every

    def publish(self, event: Event | BaseException) -> None:
        for consumer in self.consumers:
            consumer.put(event)


class Scheduler:
    """At most `max_active` runs at once, up to `queue_size` more waiting (FIFO); each consumer
    holds at most `pending_updates` progress updates and `pending_bytes` of their images."""

    def __init__(
        self,
        model: nn.Module,
        metrics: Metrics,
        *,
        max_active: int,
        queue_size: int,
        retry_after: float,
        max_batch_images: int,
        pending_updates: int,
        pending_bytes: int,
        cache: ResultCache | None = None,
    ) -> None:
        self._metrics = metrics
        self._pending = (pending_updates, pending_bytes)
        self._max_active = max_active
        self._queue_size = queue_size
        self._retry_after = retry_after
        self._cache = cache
        self._waiting: deque[_Ticket] = deque()
        self._active: set[_Ticket] = set()
        self._in_flight: dict[tuple[engine.Job, int], _Ticket] = {}
        self._admissions = count()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self._loop = asyncio.get_running_loop()
        self._batcher = Batcher(model, max_batch_images, self._report, metrics)

    async def run(
        self,
        job: engine.Job,
        progress_every: int,
        deadline_passed: Callable[[], bool] = lambda: False,
    ) -> AsyncIterator[Event]:
        """The events of `job`; closing the stream early cancels the run (if nobody else waits
        for it), as "deadline_exceeded" if `deadline_passed()` says so then, else "cancelled".
        Raises Overloaded or ShuttingDown before the first event, the engine's errors as they
        happen. Use under `contextlib.aclosing` so that cancellation is immediate.
        """
        if self._cache is not None:
            cached = await asyncio.to_thread(self._cache.get, job)
            self._metrics.result_cache.labels("miss" if cached is None else "hit").inc()
            if cached is not None:
                yield Finished(cached, 0.0, cached=True)
                return
        ticket = self._in_flight.get((job, progress_every))
        if ticket is None:
            ticket = self._admit(job, progress_every)
        else:
            self._metrics.shared_runs.inc()
        events: Consumer = Mailbox(*self._pending, self._metrics.progress_dropped.inc)
        ticket.consumers.append(events)
        if ticket.position:
            events.put(Queued(ticket.position))
        try:
            while True:
                event = await events.get()
                if isinstance(event, BaseException):
                    raise event
                yield event
                if isinstance(event, Finished):
                    return
        finally:
            self._leave(ticket, events, deadline_passed)

    async def drain(self, grace: float) -> None:
        """Stop admitting; queued runs end now, running ones get `grace` seconds, then end."""
        self._closed = True
        while self._waiting:
            self._forget(self._waiting.popleft()).publish(ShuttingDown("server is shutting down"))
        self._metrics.queue_depth.set(0)
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except asyncio.TimeoutError:  # not TimeoutError on Python 3.10
            log.warning("grace period over; ending %d runs", len(self._active))
            for ticket in self._active:
                ticket.shut_down = True
                ticket.cancel.set()
                self._forget(ticket).publish(
                    ShuttingDown("server shut down before the run finished")
                )
            await self._idle.wait()
        self._batcher.stop()

    # --- inside the event loop ------------------------------------------------------------------

    def _admit(self, job: engine.Job, progress_every: int) -> _Ticket:
        if self._closed:
            raise ShuttingDown("server is shutting down")
        if len(self._active) >= self._max_active and len(self._waiting) >= self._queue_size:
            raise Overloaded(self._retry_after)
        ticket = _Ticket(job, progress_every, next(self._admissions))
        self._in_flight[ticket.key] = ticket
        self._waiting.append(ticket)
        self._dispatch()
        return ticket

    def _dispatch(self) -> None:
        """Start waiting runs while slots are free; tell the others their new position."""
        while self._waiting and len(self._active) < self._max_active:
            ticket = self._waiting.popleft()
            ticket.position = 0
            ticket.started = time.monotonic()
            self._active.add(ticket)
            self._idle.clear()
            self._metrics.runs_started.inc()
            self._batcher.add(ticket)
        for position, ticket in enumerate(self._waiting, start=1):
            if ticket.position != position:
                ticket.position = position
                ticket.publish(Queued(position))
        self._metrics.queue_depth.set(len(self._waiting))
        self._metrics.active_runs.set(len(self._active))

    def _leave(
        self, ticket: _Ticket, events: Consumer, deadline_passed: Callable[[], bool]
    ) -> None:
        """A consumer is gone (or done); the last one out cancels the run or its queue place."""
        ticket.consumers.remove(events)
        if ticket.consumers:
            return
        if deadline_passed():
            ticket.cancelled_status = "deadline_exceeded"
        ticket.cancel.set()
        self._forget(ticket)
        if ticket in self._waiting:
            self._waiting.remove(ticket)
            self._dispatch()

    def _forget(self, ticket: _Ticket) -> _Ticket:
        """No new request may join this ticket any more."""
        if self._in_flight.get(ticket.key) is ticket:
            del self._in_flight[ticket.key]
        return ticket

    def _report(self, ticket: _Ticket, outcome: engine.Progress | Outcome) -> None:
        """From the batcher thread: a progress update or the end of a run."""
        self._loop.call_soon_threadsafe(
            self._progressed if isinstance(outcome, engine.Progress) else self._finished,
            ticket,
            outcome,
        )

    def _progressed(self, ticket: _Ticket, progress: engine.Progress) -> None:
        if not ticket.progressed:
            ticket.progressed = True
            self._metrics.time_to_first_preview.observe(time.monotonic() - ticket.admitted)
        self._metrics.steps.inc(max(0, progress.step - ticket.last_step))
        ticket.last_step = max(ticket.last_step, progress.step)
        ticket.publish(progress)

    def _finished(self, ticket: _Ticket, outcome: Outcome) -> None:
        """The run left the batcher: record the outcome, free the slot, start the next run."""
        self._active.discard(ticket)
        self._forget(ticket)
        if isinstance(outcome, engine.RenderResult):
            status = "ok"
            self._metrics.steps.inc(max(0, outcome.steps - ticket.last_step))
            self._metrics.run_duration.observe(outcome.duration_seconds)
            if outcome.duration_seconds > 0:
                self._metrics.steps_per_second.observe(outcome.steps / outcome.duration_seconds)
            self._metrics.observe_result(outcome)
            ticket.publish(Finished(outcome, ticket.started - ticket.admitted))
            if self._cache is not None:
                self._loop.run_in_executor(None, self._store, ticket.job, outcome)
        elif isinstance(outcome, engine.Cancelled):
            status = "unavailable" if ticket.shut_down else ticket.cancelled_status
        else:
            status = "error"
            if isinstance(outcome, torch.OutOfMemoryError):
                outcome = Overloaded(self._retry_after, Overloaded.OUT_OF_MEMORY)
            ticket.publish(outcome)
        self._metrics.runs_finished.labels(status).inc()
        fields = {
            "layer": ticket.job.layer,
            "images": len(ticket.job.images),
            "total_steps": ticket.job.recipe.steps,
            "seconds": round(time.monotonic() - ticket.started, 3),
            "active_runs": len(self._active),
        }
        if not isinstance(outcome, engine.RenderResult):
            fields["detail"] = str(outcome)
        log.info("run %s", status, extra={"fields": fields})
        if not self._active:
            self._idle.set()
            self._loop.run_in_executor(None, release_free_memory)
        self._dispatch()

    def _store(self, job: engine.Job, result: engine.RenderResult) -> None:
        assert self._cache is not None
        try:
            self._cache.put(job, result)
        except Exception:  # best effort: the client has its result already
            log.exception("could not store a result in the cache")


class Batcher:
    """One thread that advances every admitted run, several runs per forward/backward."""

    def __init__(
        self,
        model: nn.Module,
        max_batch_images: int,
        report: Callable[[_Ticket, engine.Progress | Outcome], None],
        metrics: Metrics,
    ) -> None:
        self._model = model
        self._budgets = BatchBudget(max_batch_images)
        self._report = report
        self._metrics = metrics
        self._inbox: list[_Ticket] = []
        self._wake = threading.Condition()
        self._stopped = False
        self._runs: dict[_Ticket, engine.Run] = {}  # only touched by the thread
        self._charged: dict[_Ticket, float] = {}  # seconds of the steps each run took part in
        self._allowance, self._refilled = HEAD_START, time.monotonic()  # newcomers' head starts
        self._thread = threading.Thread(target=self._work, name="featviz-batcher", daemon=True)
        self._thread.start()

    def add(self, ticket: _Ticket) -> None:
        with self._wake:
            self._inbox.append(ticket)
            self._wake.notify()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()
        self._thread.join()

    # --- in the thread --------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._wake:
                while not (self._inbox or self._runs or self._stopped):
                    self._wake.wait()
                if self._stopped:
                    return
                arrivals, self._inbox = self._inbox, []
            for ticket in arrivals:
                self._join(ticket)
            for ticket in [t for t in self._runs if t.cancel.is_set()]:
                self._leave(ticket, self._runs[ticket].cancelled())
            if self._runs:
                self._step(*self._next_batch())

    def _join(self, ticket: _Ticket) -> None:
        try:
            self._runs[ticket] = engine.Run(ticket.job, self._model)
        except Exception as error:  # e.g. out of memory for its parameters
            self._report(ticket, error)
            return
        self._charged[ticket] = min(self._charged.values(), default=0.0) - self._head_start()

    def _head_start(self) -> float:
        """What is left of the newcomers' allowance (all of it goes to this one)."""
        now = time.monotonic()
        refilled = self._allowance + (now - self._refilled) * HEAD_START_REFILL
        granted, self._allowance, self._refilled = min(HEAD_START, refilled), 0.0, now
        return granted

    def _leave(self, ticket: _Ticket, outcome: Outcome) -> None:
        del self._runs[ticket], self._charged[ticket]
        self._report(ticket, outcome)

    def _next_batch(self) -> tuple[list[_Ticket], int]:
        """The least charged run, plus every other run that shares its batch key and fits the
        key's budget, in the same order (a run larger than the budget goes alone)."""
        order = sorted(self._runs, key=lambda t: (self._charged[t], t.order))
        first = self._runs[order[0]]
        budget = self._budgets.images(first.batch_key)
        batch, images = [order[0]], len(first)
        for ticket in order[1:]:
            run = self._runs[ticket]
            if run.batch_key == first.batch_key and images + len(run) <= budget:
                batch.append(ticket)
                images += len(run)
        return batch, budget

    def _step(self, batch: list[_Ticket], budget: int) -> None:
        runs = [self._runs[ticket] for ticket in batch]
        key, images = runs[0].batch_key, sum(len(run) for run in runs)
        started = time.perf_counter()
        try:
            engine.advance(runs)
            engine.device.synchronize(runs[0].device)  # the step's time, not its launch's
        except Exception as error:  # the whole batch failed together
            if isinstance(error, torch.OutOfMemoryError):
                self._budgets.too_many(key, images)
                # Its traceback holds the failed step's tensors: let the next batch have them.
                error = TooLarge(runs[0]) if len(runs) == 1 else error.with_traceback(None)
            for ticket in batch:
                self._leave(ticket, error)
            return
        seconds = time.perf_counter() - started
        self._budgets.observe(key, budget, images, seconds)
        self._metrics.batch_images.observe(images)
        for ticket, run in zip(batch, runs, strict=True):
            began = time.perf_counter()
            try:
                if ticket.progress_every and run.step % ticket.progress_every == 0:
                    self._report(ticket, run.progress())
                if run.done:
                    self._leave(ticket, run.result())
                    continue
            except Exception as error:
                self._leave(ticket, error)
                continue
            self._charged[ticket] += seconds + time.perf_counter() - began  # its previews too


class BatchBudget:
    """How many images one forward/backward may carry, learnt per batch key (layer, canvas,
    device) from the timed steps themselves, up to `ceiling`.

    The candidate budgets are 1, 2, 4, ... and `ceiling`. A key's first steps try each in turn,
    smallest first, for SAMPLES + 1 steps each; each step's seconds per image count for the
    budget in force (its first step is left out: it pays one-off costs such as cuDNN autotuning
    or oneDNN primitives). From then on the budget is the smallest one within 5 % of the fewest
    seconds per image: large on a GPU; small on a CPU, where 64 block1_conv2 images in one batch
    run at half the speed per image of one image at a time. Every RELEARN_STEPS steps of a key
    its timings are dropped and learnt again, as the load changes.
    """

    SAMPLES = 3  # timed steps per budget, after its first
    NEAR_BEST = 1.05  # a budget this close to the fastest counts as fast
    RELEARN_STEPS = 2000

    def __init__(self, ceiling: int) -> None:
        self._budgets = [1 << i for i in range(ceiling.bit_length()) if 1 << i < ceiling]
        self._budgets.append(ceiling)
        self._timings: dict[object, dict[int, list[float]]] = {}
        self._steps: dict[object, int] = {}
        self._chosen: dict[object, int] = {}
        self._most: dict[object, int] = {}  # below the batches that ran out of memory

    def images(self, key: object) -> int:
        """The most images the next batch of `key` may carry."""
        most = self._most.get(key, self._budgets[-1])
        budgets = [budget for budget in self._budgets if budget <= most] or [1]
        timings = self._timings.get(key, {})
        for budget in budgets:
            if len(timings.get(budget, ())) <= self.SAMPLES:
                return budget  # still learning: each budget in turn
        rates = {b: sum(t[1:]) / (len(t) - 1) for b, t in timings.items() if b in budgets}
        fastest = min(rates.values())
        chosen = min(b for b in budgets if rates[b] <= fastest * self.NEAR_BEST)
        if self._chosen.get(key) != chosen:
            self._chosen[key] = chosen
            milliseconds = {b: round(rate * 1000, 2) for b, rate in sorted(rates.items())}
            fields = {"key": str(key), "images": chosen, "ms_per_image": milliseconds}
            log.info("batch budget learnt", extra={"fields": fields})
        return chosen

    def too_many(self, key: object, images: int) -> None:
        """A batch of `images` images of `key` ran out of memory: later ones carry fewer."""
        self._most[key] = min(self._most.get(key, images), images - 1)

    def observe(self, key: object, budget: int, images: int, seconds: float) -> None:
        """A step of `key` under `budget` advanced `images` images in `seconds`."""
        self._steps[key] = self._steps.get(key, 0) + 1
        if self._steps[key] % self.RELEARN_STEPS == 0:
            self._timings.pop(key, None)
            self._chosen.pop(key, None)
            return
        samples = self._timings.setdefault(key, {}).setdefault(budget, [])
        samples.append(seconds / images)
        if len(samples) > 4 * self.SAMPLES:
            del samples[1]  # keep the first (it stays out of the mean) and the latest
