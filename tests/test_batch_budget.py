"""The batcher's budget follows what the device does well: it tries each budget in turn, then
keeps the one that advances the most images per second, per batch key, and learns again later;
a batch that runs out of memory is never tried again, and its clients are told to retry, unless
a run did not fit even alone."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import torch
from conftest import RETRY_AFTER, small_scheduler

from featviz_server import engine
from featviz_server.model import VGG16
from featviz_server.service.scheduler import BatchBudget, Overloaded, TooLarge

KEY = ("block1_conv2", 128, "cpu")


def settle(budget: BatchBudget, step_seconds: Callable[[int], float], steps: int = 40) -> list[int]:
    """Run `steps` steps, each as full as its budget allows; the budgets used."""
    used = []
    for _ in range(steps):
        images = budget.images(KEY)
        used.append(images)
        budget.observe(KEY, images, images, step_seconds(images))
    return used


def test_each_budget_is_tried_in_turn_smallest_first() -> None:
    used = settle(BatchBudget(64), lambda images: 0.01 * images)
    per_budget = BatchBudget.SAMPLES + 1
    assert used[: 7 * per_budget] == [
        b for b in (1, 2, 4, 8, 16, 32, 64) for _ in range(per_budget)
    ]


def test_where_batching_costs_per_image_the_budget_settles_on_one_image() -> None:
    cpu = lambda images: 0.05 * images * (1 + images / 64)  # noqa: E731 - 64 at half the speed
    used = settle(BatchBudget(64), cpu)
    assert used[-5:] == [1] * 5


def test_where_batching_pays_the_budget_settles_on_the_ceiling() -> None:
    gpu = lambda images: 0.01 + 0.0002 * images  # noqa: E731 - launch cost, then nearly free
    used = settle(BatchBudget(48), gpu)
    assert used[-5:] == [48] * 5


def test_a_budget_close_to_the_fastest_wins_when_smaller() -> None:
    flat = lambda images: 0.01 * images * (1 - 0.01 * (images > 4))  # noqa: E731 - 1 % better
    assert settle(BatchBudget(16), flat)[-1] == 1


def test_the_first_step_of_a_budget_does_not_count() -> None:
    budget = BatchBudget(2)
    for seconds in (100.0, 0.02, 0.02, 0.02):  # budget 1: a slow first step, then 20 ms
        budget.observe(KEY, 1, 1, seconds)
    for _ in range(4):
        budget.observe(KEY, 2, 2, 0.05)  # budget 2: 25 ms per image
    assert budget.images(KEY) == 1


def test_timings_are_learnt_again_after_a_while() -> None:
    budget = BatchBudget(4)
    settle(budget, lambda images: 0.01 * images * images)
    assert budget.images(KEY) == 1
    used = settle(budget, lambda images: 0.01, BatchBudget.RELEARN_STEPS)  # batching pays now
    assert used[-1] == 4


def test_a_batch_that_ran_out_of_memory_is_never_reached_again() -> None:
    budget = BatchBudget(64)
    budget.too_many(KEY, 40)
    gpu = lambda images: 0.01 + 0.0002 * images  # noqa: E731 - batching pays: the most wins
    used = settle(budget, gpu)
    assert max(used) == 32 and used[-5:] == [32] * 5
    budget.too_many(KEY, 1)
    assert budget.images(KEY) == 1  # one image a batch is the least


async def test_a_shared_batch_that_runs_out_of_memory_tells_its_clients_to_retry(
    model: VGG16, monkeypatch: pytest.MonkeyPatch
) -> None:
    def out_of_memory_when_shared(runs: list[engine.Run]) -> None:
        if len(runs) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        real_advance(runs)

    real_advance = engine.advance
    monkeypatch.setattr(engine, "advance", out_of_memory_when_shared)
    scheduler = small_scheduler(model)
    jobs = [  # long enough to still run together once the budget tries two images a batch
        engine.Job("block1_conv1", (channel,), engine.recipe("lucid", size=32, steps=1000))
        for channel in (0, 1)
    ]

    async def run(job: engine.Job) -> BaseException | None:
        try:
            async for _ in scheduler.run(job, progress_every=0):
                pass
        except Overloaded as error:
            return error
        return None

    errors = await asyncio.wait_for(asyncio.gather(*map(run, jobs)), 120)
    assert all(isinstance(e, Overloaded) and "ran out of memory" in str(e) for e in errors)
    assert all(e.retry_after == RETRY_AFTER for e in errors if isinstance(e, Overloaded))
    await scheduler.drain(grace=0)


async def test_a_run_that_does_not_fit_even_alone_is_told_so_not_to_retry(
    model: VGG16, monkeypatch: pytest.MonkeyPatch
) -> None:
    def out_of_memory(runs: list[engine.Run]) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(engine, "advance", out_of_memory)
    scheduler = small_scheduler(model)
    job = engine.Job("block1_conv2", (0, 1), engine.recipe("fast", size=32, steps=2))
    with pytest.raises(TooLarge, match=r"2 images of 32 px do not fit .* even alone"):
        async for _ in scheduler.run(job, progress_every=0):
            pass
    await scheduler.drain(grace=0)
