"""A newcomer runs ahead of the runs already there, from one allowance that refills with time, so
that a short run finishes in about its idle time and a flood of newcomers cannot starve the rest."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from featviz_server.service import scheduler
from featviz_server.service.scheduler import HEAD_START, HEAD_START_REFILL, Batcher


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(scheduler.time, "monotonic", lambda: now[0])
    return now


@pytest.fixture
def batcher(clock: list[float]) -> Iterator[Batcher]:
    batcher = Batcher(model=None, max_batch_images=8, report=lambda *_: None, metrics=None)
    yield batcher
    batcher.stop()


def test_the_first_newcomer_gets_the_whole_head_start_and_the_next_one_at_once_none(
    batcher: Batcher,
) -> None:
    assert batcher._head_start() == HEAD_START
    assert batcher._head_start() == 0.0


def test_the_allowance_refills_at_its_share_of_the_wall_time_up_to_one_head_start(
    batcher: Batcher, clock: list[float]
) -> None:
    batcher._head_start()
    clock[0] += 2.0
    assert batcher._head_start() == pytest.approx(2.0 * HEAD_START_REFILL)
    clock[0] += 1000.0
    assert batcher._head_start() == HEAD_START
