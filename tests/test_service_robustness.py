"""Hostile clients and damaged disks: a client that reads slowly or not at all costs bounded
memory and slows nobody, one killed mid-stream leaves no run behind; a damaged result cache heals
itself; errors that repeat what the client sent stay small; a deadline is told apart from a
cancel (tests/test_service_maximize.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from cache_entries import entry_after, resealed
from serverproc import ServerProcess, bad_request, final_pngs, rss_mb, start_server

from featviz.v1 import featviz_pb2 as pb
from featviz.v1 import featviz_pb2_grpc as pb_grpc
from featviz_server import engine
from featviz_server.service import result_cache
from featviz_server.service.mailbox import Mailbox
from featviz_server.service.metrics import Metrics
from featviz_server.service.result_cache import ResultCache
from featviz_server.service.scheduler import Finished, Queued

# --- backpressure -----------------------------------------------------------------------------


def progress(step: int, side: int = 8) -> engine.Progress:
    return engine.Progress(step, 10, [0.0], np.zeros((1, side, side, 3), np.uint8))


async def test_a_mailbox_keeps_positions_and_results_but_only_the_latest_progress() -> None:
    dropped = []
    mailbox = Mailbox(2, 1 << 20, lambda: dropped.append(1))
    finished = Finished(
        engine.RenderResult(np.zeros((1, 8, 8, 3), np.uint8), [], [], 5, 1, "cpu", [], []), 0
    )
    for event in [Queued(2), Queued(1), *map(progress, range(1, 6)), finished]:
        mailbox.put(event)
    events = [await mailbox.get() for _ in range(len(mailbox))]
    assert events[:2] == [Queued(2), Queued(1)] and events[-1] is finished
    assert [event.step for event in events[2:-1]] == [4, 5]  # the latest two of five
    assert len(dropped) == 3

    small = Mailbox(100, 8 * 8 * 3 * 2)  # bytes for two updates
    for step in range(1, 6):
        small.put(progress(step))
    small.put(progress(6, side=64))  # larger than the bound alone: kept, as the latest
    assert [(await small.get()).step for _ in range(len(small))] == [6]


# The lucid and classic presets run every step they are given (the default may stop early).
OTHER = pb.MaximizeRequest(layer="block3_conv1", channels=[5], size=64, steps=10, seed=3,
                           preset=pb.PRESET_LUCID)  # fmt: skip
STEPS = "featviz_optimization_steps_total"  # of every run: each step counted once it is reported
HANG_GUARD = 300.0  # seconds


def finish(stub: pb_grpc.FeatureVisualizationServiceStub, request: pb.MaximizeRequest) -> None:
    assert list(stub.Maximize(request, timeout=HANG_GUARD))[-1].HasField("summary")


def wait_steps(server: ServerProcess, total: float) -> None:
    """Until the server has counted `total` steps in all."""
    deadline = time.monotonic() + HANG_GUARD
    while (counted := server.metric(STEPS)) < total:
        assert time.monotonic() < deadline, f"{counted} steps counted, not {total}: a run hangs"
        time.sleep(0.1)


def test_a_slow_reader_costs_bounded_memory_and_another_run_finishes_while_it_goes_on() -> None:
    # A run whose client never reads: 8 previews of 128 px every step, 200 steps (~80 MB of
    # previews that an unbounded queue would keep).
    slow = pb.MaximizeRequest(layer="block1_conv1", channels=range(8), size=128, steps=200,
                              preview_every=1, preset=pb.PRESET_CLASSIC)  # fmt: skip
    with start_server("--metrics-port", "0") as server, server.channel() as channel:
        stub = pb_grpc.FeatureVisualizationServiceStub(channel)
        # OTHER's one-off costs (its layer's first steps, the batch budget being learnt) are paid
        # here: each run is charged its steps' time, and they would buy the unread run extra steps.
        finish(stub, OTHER)
        steps = server.metric(STEPS)
        unread = stub.Maximize(slow, timeout=HANG_GUARD)  # started, never read
        wait_steps(server, steps + 10)
        finish(stub, OTHER)
        # Every step counted since `steps` is OTHER's or the unread run's: when OTHER finished,
        # the unread run was still at least a quarter of its steps short of its end.
        unread_steps = server.metric(STEPS) - steps - OTHER.steps
        assert 10 <= unread_steps < slow.steps - 50
        working_set = rss_mb(server.process.pid)  # both runs' buffers are allocated by now
        peak = working_set
        # The peak is watched up to the unread run's last step but one (the final evaluation then
        # takes memory of its own, read or not); reaching it shows that the run went on.
        deadline = time.monotonic() + HANG_GUARD
        while (counted := server.metric(STEPS) - steps - OTHER.steps) < slow.steps - 1:
            assert time.monotonic() < deadline, f"the unread run stopped at step {counted}"
            peak = max(peak, rss_mb(server.process.pid))
            time.sleep(0.25)
        server.wait_metric("featviz_active_runs", 0)
        unread.cancel()
        assert server.metric("featviz_progress_dropped_total") > 100
    assert peak - working_set < 30  # MB over the rest of the run: O(1), not O(steps)


def test_a_client_that_reads_nothing_after_its_run_finished_is_ended(tmp_path: Path) -> None:
    # 8 classic-preset images of 128 px are ~400 kB of noise PNGs: far more than the client's
    # transport takes in without reading (64 KiB without BDP probing).
    request = pb.MaximizeRequest(layer="block1_conv1", channels=range(8), size=128, steps=1,
                                 preset=pb.PRESET_CLASSIC, no_preview_images=True)  # fmt: skip
    env = {"FEATVIZ_RESULT_CACHE_MB": "64", "FEATVIZ_RESULT_CACHE_DIR": str(tmp_path)}
    flags = ("--metrics-port", "0", "--unread-result-timeout", "1")
    with (
        start_server(*flags, env=env) as server,
        server.channel(options=(("grpc.http2.bdp_probe", 0),)) as channel,
    ):
        stub = pb_grpc.FeatureVisualizationServiceStub(channel)
        unread = stub.Maximize(request, timeout=120)
        server.wait_metric("featviz_unread_streams_ended_total", 1, timeout=60)
        with pytest.raises(grpc.RpcError) as caught:
            list(unread)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "nothing was read for 1 s" in caught.value.details()
        again = list(stub.Maximize(request, timeout=120))
        assert again[-1].summary.cached  # the result waited in the cache
        assert server.metric("featviz_active_runs") == 0


# A client in a process of its own, killed (SIGKILL) once its run is under way. The lucid preset
# never stops early: the run is surely still going when the client dies.
KILLED_CLIENT = textwrap.dedent(
    """
    import sys
    import featviz

    with featviz.Client(sys.argv[1]) as client:
        run = client.stream_maximize(
            "block1_conv2", 14, size=64, steps=400, preset="lucid", preview_every=1
        )
        for update in run:
            if isinstance(update, featviz.Progress):
                print("running", flush=True)
    """
)


def test_a_client_killed_mid_stream_leaves_no_run_behind(server: ServerProcess) -> None:
    server.wait_metric("featviz_active_runs", 0.0)
    cancelled = 'featviz_runs_finished_total{status="cancelled"}'
    before = [server.metric(cancelled, 0.0), server.metric("featviz_runs_started_total")]
    client = subprocess.Popen(
        [sys.executable, "-c", KILLED_CLIENT, server.target], stdout=subprocess.PIPE, text=True
    )
    try:
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "running"
        assert server.metric("featviz_active_runs") == 1
    finally:
        client.send_signal(signal.SIGKILL)
        client.wait(10)
        client.stdout.close()
    server.wait_metric("featviz_active_runs", 0.0, timeout=10)
    after = [server.metric(cancelled), server.metric("featviz_runs_started_total")]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1]


# --- a result cache that heals itself ---------------------------------------------------------


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("results")


@pytest.fixture(scope="module")
def cache_server(cache_dir: Path) -> Iterator[ServerProcess]:
    env = {"FEATVIZ_RESULT_CACHE_MB": "64", "FEATVIZ_RESULT_CACHE_DIR": str(cache_dir)}
    with start_server("--metrics-port", "0", env=env) as process:
        yield process


def tiny(seed: int) -> pb.MaximizeRequest:
    return pb.MaximizeRequest(
        layer="block1_conv2", channels=[4, 9], size=32, steps=3, seed=seed, no_preview_images=True
    )


def without_activation(header: dict, images: np.ndarray) -> tuple[dict, np.ndarray]:
    return {
        **header,
        "facts": {k: v for k, v in header["facts"].items() if k != "activation"},
    }, images


def half_size(header: dict, images: np.ndarray) -> tuple[dict, np.ndarray]:
    n, side = header["shape"][0], header["shape"][1] // 2
    return {**header, "shape": [n, side, side, 3]}, images[: n * side * side * 3]


def flipped(data: bytes) -> bytes:
    middle = len(data) - 100  # inside the images
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


DAMAGE = {
    "empty": lambda entry, other: b"",
    "truncated": lambda entry, other: entry.read_bytes()[: entry.stat().st_size // 2],
    "garbled": lambda entry, other: flipped(entry.read_bytes()),
    "missing_keys": lambda entry, other: resealed(entry, without_activation),
    "wrong_shapes": lambda entry, other: resealed(entry, half_size),
    "wrong_job": lambda entry, other: other.read_bytes(),
}


def contents(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def damaged_entries(server: ServerProcess) -> float:
    return sum(
        server.metric(f'featviz_result_cache_damaged_total{{reason="{reason}"}}', 0.0)
        for reason in ("unreadable", "size", "format", "checksum", "key", "job", "shape", "facts")
    )


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_cache_entry_is_recomputed_and_replaced_never_served(
    kind: str, cache_server: ServerProcess, cache_dir: Path, server: ServerProcess
) -> None:
    seed = 100 + list(DAMAGE).index(kind)
    with cache_server.channel() as channel:
        stub = pb_grpc.FeatureVisualizationServiceStub(channel)
        other_before = set(cache_dir.glob("*.result"))
        list(stub.Maximize(tiny(seed + 50), timeout=120))
        other = entry_after(cache_dir, other_before)
        before = set(cache_dir.glob("*.result"))
        first = list(stub.Maximize(tiny(seed), timeout=120))
        entry = entry_after(cache_dir, before)
        damaged = damaged_entries(cache_server)
        planted = DAMAGE[kind](entry, other)
        entry.write_bytes(planted)

        repeat = list(stub.Maximize(tiny(seed), timeout=120))  # no INTERNAL: this raises if so
        assert not repeat[-1].summary.cached  # computed again, not served
        deadline = time.monotonic() + 30
        while contents(entry) in (planted, None):  # deleted, then replaced after it is sent
            assert time.monotonic() < deadline, "the damaged entry was not replaced"
            time.sleep(0.05)
        third = list(stub.Maximize(tiny(seed), timeout=120))
        assert third[-1].summary.cached
    with server.channel() as channel:  # a server without a result cache
        clean = list(pb_grpc.FeatureVisualizationServiceStub(channel).Maximize(tiny(seed)))
    assert final_pngs(repeat) == final_pngs(third) == final_pngs(clean) == final_pngs(first)
    assert list(repeat[-1].summary.activation) == list(clean[-1].summary.activation)
    assert damaged_entries(cache_server) == damaged + 1


def cache_job(seed: int) -> engine.Job:
    return engine.Job("block1_conv1", (0,), engine.recipe("fast", size=32, steps=2), seed=seed)


def cache_result(seed: int) -> engine.RenderResult:
    pixels = np.random.default_rng(seed).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    return engine.RenderResult(pixels, [1.0], [2.0], 2, 0.1, "cpu", [1.5], [0.25])


def test_leftover_partial_files_count_in_the_bound_and_go_once_stale_and_others_stay(
    tmp_path: Path,
) -> None:
    entry_bytes = cache_job(0).recipe.size ** 2 * 3 + 2000
    stale, fresh = tmp_path / "killed.result.part", tmp_path / "writing.result.part"
    others = [tmp_path / "notes.txt", tmp_path / "download.part"]  # not the cache's: kept
    hour_ago = time.time() - 3600
    for path in (stale, *others):
        path.write_bytes(b"x" * 10_000)
        os.utime(path, (hour_ago, hour_ago))
    fresh.write_bytes(b"x" * 2 * entry_bytes)  # a write in progress, by another replica
    metrics = Metrics()
    cache = ResultCache(tmp_path, 3 * entry_bytes, "sha", metrics)  # start-up
    assert not stale.exists() and fresh.exists()
    assert all(path.exists() for path in others)
    partial = {"reason": "partial"}
    assert metrics.registry.get_sample_value("featviz_result_cache_damaged_total", partial) == 1
    for seed in (1, 2):
        cache.put(cache_job(seed), cache_result(seed))
    assert cache.get(cache_job(1)) is None  # evicted: the partial file takes its room
    stored = cache.get(cache_job(2))
    assert stored is not None
    np.testing.assert_array_equal(stored.images, cache_result(2).images)


def test_a_stored_entry_names_its_key_and_job_and_reads_back_exactly(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path, 1 << 20, "sha")
    cache.put(cache_job(1), cache_result(1))
    header, images = result_cache.decode(cache.path(cache_job(1)).read_bytes())
    assert header["key"] == cache.key(cache_job(1)) and header["job"]["seed"] == 1
    assert header["facts"] == {"objective": [1.0], "activation": [2.0], "steps": 2,
                               "duration_seconds": 0.1, "device": "cpu",
                               "robust_activation": [1.5], "saturated_fraction": [0.25],
                               "stop_reason": "step_limit"}  # fmt: skip
    assert len(images) == 32 * 32 * 3 and len(header["sha256"]) == 64
    stored = cache.get(cache_job(1))
    assert stored is not None and stored.activation == [2.0] and stored.device == "cpu"
    json.dumps(header)  # plain JSON throughout


# --- bounded echoes ---------------------------------------------------------------------------


def test_a_very_long_layer_name_is_refused_naming_the_field(server: ServerProcess) -> None:
    with server.channel() as channel:
        stub = pb_grpc.FeatureVisualizationServiceStub(channel)
        request = pb.MaximizeRequest(layer="é" * 6000 + "x" * 100_000, channels=[0])
        with pytest.raises(grpc.RpcError) as caught:
            next(stub.Maximize(request, timeout=30))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = caught.value.details()
    assert details.startswith("layer: unknown layer 'éééé") and "é…'" in details
    assert len(details.encode()) <= 512 and "valid layers: block1_conv1" in details
    (violation,) = bad_request(caught.value).field_violations
    assert violation.field == "layer" and len(violation.description) < 512
