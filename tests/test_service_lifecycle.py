"""Health transitions, SIGTERM drain, internal errors, bearer-token auth and TLS."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from conftest import TOKEN, small_scheduler
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serverproc import ServerProcess, start_server

from featviz.v1 import featviz_pb2 as pb
from featviz.v1 import featviz_pb2_grpc as pb_grpc
from featviz_server import engine
from featviz_server.config import Settings
from featviz_server.model import VGG16
from featviz_server.service.scheduler import ShuttingDown
from featviz_server.service.server import Server
from featviz_server.weights import Weights

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
TINY = {"layer": "block1_conv1", "channels": [0], "size": 32, "steps": 2}
# The lucid preset never stops before its step count: a run that is surely still going.
LONG = {"layer": "block2_conv1", "channels": [5], "size": 64, "steps": 400, "preview_every": 1,
        "no_preview_images": True, "preset": pb.PRESET_LUCID}  # fmt: skip


# --- in-process servers (the loader and the engine can be replaced) --------------------------


async def test_a_request_for_a_run_that_the_drain_ended_is_sent_elsewhere(
    model: VGG16, monkeypatch: pytest.MonkeyPatch
) -> None:
    held, steps = threading.Event(), []

    def advance(runs: list[engine.Run]) -> None:  # the second step waits until released
        steps.append(len(runs))
        if len(steps) > 1:
            held.wait(30)
        real_advance(runs)

    real_advance = engine.advance
    monkeypatch.setattr(engine, "advance", advance)
    scheduler = small_scheduler(model)
    job = engine.Job("block1_conv1", (0,), engine.recipe("lucid", size=32, steps=1000))
    async with contextlib.aclosing(scheduler.run(job, progress_every=1)) as first:
        await anext(first)  # under way; this client reads nothing more for now
        draining = asyncio.create_task(scheduler.drain(grace=0))
        await asyncio.sleep(0.5)  # the grace is over: the run is told to end, and cannot yet
        with pytest.raises(ShuttingDown):  # not joined to the ending run, to wait for nothing
            await asyncio.wait_for(anext(scheduler.run(job, progress_every=1)), 10)
        held.set()
        with pytest.raises(ShuttingDown):
            async for _ in first:
                pass
    await draining


async def health_status(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        return response.status


async def test_health_is_not_serving_until_the_model_is_loaded(weights: Weights, model: VGG16):
    gate = threading.Event()

    def gated_loader() -> tuple[Weights, VGG16]:
        gate.wait(60)
        return weights, model

    server = Server(Settings(host="127.0.0.1", port=0, result_cache_mb=0), loader=gated_loader)
    try:
        port = await server.start()
        assert await health_status(port) == NOT_SERVING
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.FeatureVisualizationServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.DescribeModel(pb.DescribeModelRequest())
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "loading" in caught.value.details()
            gate.set()
            await server.loading
            assert await health_status(port) == SERVING
            description = await stub.DescribeModel(pb.DescribeModelRequest())
            assert description.total_parameters == 14_714_688
    finally:
        gate.set()
        await server.stop()


async def test_internal_errors_reach_the_client_without_details(
    weights: Weights,
    model: VGG16,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken_advance(*args: object) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(engine, "advance", broken_advance)
    server = Server(
        Settings(host="127.0.0.1", port=0, result_cache_mb=0), loader=lambda: (weights, model)
    )
    try:
        port = await server.start()
        await server.loading
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.FeatureVisualizationServiceStub(channel)
            call = stub.Maximize(pb.MaximizeRequest(**TINY), metadata=(("x-request-id", "r-9"),))
            with pytest.raises(grpc.aio.AioRpcError) as caught, caplog.at_level(logging.ERROR):
                async for _ in call:
                    pass
    finally:
        await server.stop()
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert caught.value.details() == "internal server error (request id r-9)"
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.exc_info is not None and "secret internal detail" in str(record.exc_info[1])


# --- SIGTERM drain on a subprocess ------------------------------------------------------------


def test_sigterm_drains_finishing_short_runs_and_ending_long_ones() -> None:
    """A 4000-step run (minutes on a CPU) cannot finish in the 3 s grace; 20 tiny steps do."""
    with start_server("--drain-grace", "3", "--max-concurrent-runs", "2") as server:
        with server.channel() as channel:
            stub = pb_grpc.FeatureVisualizationServiceStub(channel)
            long = stub.Maximize(pb.MaximizeRequest(**{**LONG, "steps": 4000}, seed=1))
            assert next(long).HasField("progress")  # one at a time: arrival order is the test's
            short = stub.Maximize(pb.MaximizeRequest(**{**TINY, "steps": 20, "preview_every": 1}))
            assert next(short).HasField("progress")
            queued = stub.Maximize(pb.MaximizeRequest(**LONG, seed=2))
            assert next(queued).queued.position == 1

            server.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 30
            while server.health() != NOT_SERVING and time.monotonic() < deadline:
                time.sleep(0.05)
            assert server.health() == NOT_SERVING
            with pytest.raises(grpc.RpcError) as refused:
                next(stub.Maximize(pb.MaximizeRequest(**TINY)))
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            with pytest.raises(grpc.RpcError) as dropped:
                list(queued)
            assert dropped.value.code() == grpc.StatusCode.UNAVAILABLE

            assert list(short)[-1].HasField("summary")  # finished within the grace period
            with pytest.raises(grpc.RpcError) as ended:
                list(long)
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "shut down" in ended.value.details()
        assert server.process.wait(30) == 0
    assert '"run unavailable"' in server.log()


# --- bearer token and TLS ---------------------------------------------------------------------


@pytest.fixture
def secure_stub(secure_server: ServerProcess) -> Iterator[pb_grpc.FeatureVisualizationServiceStub]:
    with secure_server.channel() as channel:
        yield pb_grpc.FeatureVisualizationServiceStub(channel)


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def test_with_the_token_over_tls_everything_works(secure_stub) -> None:
    response = secure_stub.DescribeModel(pb.DescribeModelRequest(), metadata=bearer(TOKEN))
    assert response.total_parameters == 14_714_688
    updates = list(secure_stub.Maximize(pb.MaximizeRequest(**TINY), metadata=bearer(TOKEN)))
    assert updates[-1].summary.steps == 2


@pytest.mark.parametrize(
    ("metadata", "message"),
    [((), "missing `authorization: Bearer <token>`"), (bearer("wrong"), "invalid bearer token")],
)
def test_without_the_right_token_nothing_runs(
    secure_server: ServerProcess, secure_stub, metadata, message: str
) -> None:
    started = secure_server.metric("featviz_runs_started_total")
    for call in (
        lambda: secure_stub.DescribeModel(pb.DescribeModelRequest(), metadata=metadata),
        lambda: next(secure_stub.Maximize(pb.MaximizeRequest(**TINY), metadata=metadata)),
        lambda: next(secure_stub.ExportOnnx(pb.ExportOnnxRequest(), metadata=metadata)),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert message in caught.value.details()
    assert secure_server.metric("featviz_runs_started_total") == started


def test_health_needs_no_token(secure_server: ServerProcess) -> None:
    assert secure_server.health() == SERVING


def test_plaintext_clients_cannot_talk_to_a_tls_server(secure_server: ServerProcess) -> None:
    with grpc.insecure_channel(secure_server.target) as channel:
        stub = pb_grpc.FeatureVisualizationServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.DescribeModel(pb.DescribeModelRequest(), metadata=bearer(TOKEN), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_without_a_configured_token_no_token_is_needed(server: ServerProcess) -> None:
    with server.channel() as channel:
        stub = pb_grpc.FeatureVisualizationServiceStub(channel)
        assert stub.DescribeModel(pb.DescribeModelRequest()).total_parameters == 14_714_688
