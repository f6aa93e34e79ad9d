"""Continuous batching, fairness, the result cache and in-flight de-duplication."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
from cache_entries import Change, entry_after, resealed
from PIL import Image
from serverproc import ServerProcess, start_server

from featviz.v1 import featviz_pb2 as pb
from featviz.v1 import featviz_pb2_grpc as pb_grpc
from featviz_server import engine
from featviz_server.service.result_cache import ResultCache

T = TypeVar("T")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The result cache directory of `batching_server`."""
    return tmp_path_factory.mktemp("results")


@pytest.fixture(scope="module")
def batching_server(results: Path) -> Iterator[ServerProcess]:
    with start_server(
        "--max-concurrent-runs", "4", "--max-batch-images", "16", "--metrics-port", "0",
        "--result-cache-dir", str(results), "--result-cache-mb", "64",
    ) as process:  # fmt: skip
        yield process


@pytest.fixture
def stub(batching_server: ServerProcess) -> Iterator[pb_grpc.FeatureVisualizationServiceStub]:
    with batching_server.channel() as channel:
        yield pb_grpc.FeatureVisualizationServiceStub(channel)


def in_threads(*calls: Callable[[], T]) -> list[T]:
    """Run the calls at the same time; their results in order."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return [future.result() for future in [pool.submit(call) for call in calls]]


def final_pixels(responses: list[pb.MaximizeResponse]) -> np.ndarray:
    images = [i for r in responses if r.HasField("final_images") for i in r.final_images.images]
    return np.stack([np.asarray(Image.open(io.BytesIO(image.png))) for image in images])


def passes(server: ServerProcess) -> float:
    """Forward/backward passes the server has made."""
    return server.metric("featviz_batch_images_count", 0.0)


def test_concurrent_runs_share_steps_and_give_the_images_they_would_alone(
    batching_server: ServerProcess, stub, server: ServerProcess
) -> None:
    steps = 30
    common = {"size": 48, "steps": steps}
    first = pb.MaximizeRequest(
        layer="block2_conv1", channels=[3], seed=1, preview_every=1, **common
    )
    others = [
        pb.MaximizeRequest(
            layer="block2_conv1", channels=[9, 70], seed=5, images_per_channel=2, **common
        ),
        pb.MaximizeRequest(layer="block1_conv2", channels=[14], seed=3, **common),
    ]
    requests = [first, *others]
    before = passes(batching_server)
    running = stub.Maximize(first)
    head = next(running)  # the first run is going: the others join it mid-way
    together = in_threads(
        lambda: [head, *running], *[lambda r=r: list(stub.Maximize(r)) for r in others]
    )
    assert passes(batching_server) - before < 3 * steps  # some passes advanced two runs

    with server.channel() as channel:  # another server, one request at a time
        plain = pb_grpc.FeatureVisualizationServiceStub(channel)
        for request, stream in zip(requests, together, strict=True):
            alone = list(plain.Maximize(request, timeout=300))
            assert stream[-1].summary.steps == alone[-1].summary.steps <= steps  # may converge
            assert np.array_equal(final_pixels(stream), final_pixels(alone))  # bitwise
            assert stream[-1].summary.activation == alone[-1].summary.activation


def test_a_big_run_over_the_batch_budget_does_not_starve_a_small_one(
    batching_server: ServerProcess, stub
) -> None:
    big = stub.Maximize(
        pb.MaximizeRequest(
            layer="block1_conv1",
            channels=range(24),
            size=48,
            steps=400,
            preview_every=1,
            no_preview_images=True,
            preset=pb.PRESET_LUCID,  # no early stop: surely still going
        )
    )
    assert next(big).progress.step == 1
    small = list(
        stub.Maximize(pb.MaximizeRequest(layer="block1_conv1", channels=[0], size=48, steps=30))
    )
    assert small[-1].HasField("summary") and small[-1].summary.steps <= 30
    assert batching_server.metric("featviz_active_runs") == 1  # the big one is still going
    big.cancel()
    batching_server.wait_metric("featviz_active_runs", 0)


def with_duration(seconds: float) -> Change:
    """A change (for `resealed`) that makes an entry's stored duration `seconds`."""

    def change(header: dict, images: np.ndarray) -> tuple[dict, np.ndarray]:
        return {**header, "facts": {**header["facts"], "duration_seconds": seconds}}, images

    return change


def test_a_repeat_is_answered_from_the_cache(
    batching_server: ServerProcess, results: Path, stub
) -> None:
    request = pb.MaximizeRequest(layer="block1_conv2", channels=[5], size=40, steps=6, seed=11)
    before = set(results.glob("*.result"))
    first = list(stub.Maximize(request, timeout=120))
    assert any(r.HasField("progress") for r in first) and not first[-1].summary.cached
    # A stored duration no cache read takes: the repeat must not report it as its own.
    stored = 1000.0
    entry = entry_after(results, before)
    entry.write_bytes(resealed(entry, with_duration(stored)))
    hits = batching_server.metric('featviz_result_cache_lookups_total{result="hit"}', 0.0)

    repeat = list(stub.Maximize(request, timeout=120))
    assert [r.WhichOneof("update") for r in repeat] == ["final_images", "summary"]
    assert repeat[-1].summary.cached
    # its own duration (the cache read), not the stored one; it ran no step
    assert 0 < repeat[-1].summary.duration_seconds < stored
    assert repeat[-1].summary.steps_per_second == 0
    assert list(repeat[-1].summary.activation) == list(first[-1].summary.activation)
    for fact in ("robust_activation", "saturated_fraction", "stop_reason"):
        assert getattr(repeat[-1].summary, fact) == getattr(first[-1].summary, fact)
    np.testing.assert_array_equal(final_pixels(repeat), final_pixels(first))
    assert batching_server.metric('featviz_result_cache_lookups_total{result="hit"}') == hits + 1


def test_identical_requests_in_flight_share_one_computation(
    batching_server: ServerProcess, stub
) -> None:
    request = pb.MaximizeRequest(layer="block1_conv2", channels=[7], size=40, steps=100, seed=21,
                                 preview_every=1)  # fmt: skip
    started = batching_server.metric("featviz_runs_started_total")
    shared = batching_server.metric("featviz_shared_runs_total")
    leaver = stub.Maximize(request)
    assert next(leaver).HasField("progress")  # running
    with ThreadPoolExecutor(2) as pool:
        calls = [pool.submit(lambda: list(stub.Maximize(request, timeout=300))) for _ in "ab"]
        batching_server.wait_metric("featviz_shared_runs_total", shared + 2)
        leaver.cancel()  # one consumer leaving does not cancel the others' run
        first, second = (call.result() for call in calls)
    assert first[-1].summary.steps == second[-1].summary.steps <= 100
    np.testing.assert_array_equal(final_pixels(first), final_pixels(second))
    assert batching_server.metric("featviz_runs_started_total") == started + 1
    assert batching_server.metric("featviz_shared_runs_total") == shared + 2


def result(seed: int, side: int = 64) -> engine.RenderResult:
    pixels = np.random.default_rng(seed).integers(0, 256, (1, side, side, 3), dtype=np.uint8)
    return engine.RenderResult(pixels, [float(seed)], [2.0], 5, 0.5, "cpu", [1.5], [0.0])


def job(seed: int) -> engine.Job:
    return engine.Job("block1_conv1", (0,), engine.recipe("fast", size=64, steps=5), seed=seed)


def test_the_cache_keys_on_everything_and_stays_within_its_bound(tmp_path: Path) -> None:
    entry_bytes = 64 * 64 * 3 + 1000  # one 64 px image plus its facts
    cache = ResultCache(tmp_path, 3 * entry_bytes, "sha-a cpu")
    cache.put(job(1), result(1))
    stored = cache.get(job(1))
    assert stored is not None and stored.objective == [1.0] and stored.steps == 5
    np.testing.assert_array_equal(stored.images, result(1).images)
    assert cache.get(job(2)) is None
    for other in ("sha-b cpu", "sha-a cuda bf16"):  # other weights, or computed otherwise
        assert ResultCache(tmp_path, 3 * entry_bytes, other).get(job(1)) is None

    for seed in (2, 3, 4, 5):
        cache.put(job(seed), result(seed))
    kept = [seed for seed in range(1, 6) if cache.get(job(seed)) is not None]
    assert len(list(tmp_path.glob("*.result"))) == len(kept) < 5
    assert 5 in kept and 1 not in kept  # least recently used went first


def test_a_damaged_cache_entry_is_dropped_not_served(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path, 1 << 20, "sha-a")
    cache.put(job(1), result(1))
    (entry,) = tmp_path.glob("*.result")
    entry.write_bytes(b"garbage")
    assert cache.get(job(1)) is None
    assert not entry.exists()
