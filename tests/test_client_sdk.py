"""The SDK, blocking and asyncio, against a real featviz server on loopback (real weights, small
sizes and few steps)."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TOKEN
from serverproc import ServerProcess, start_server

import featviz
from featviz_server.architecture import LAYERS_BY_NAME, TOTAL_PARAMETERS, geometry

FAST_RETRIES = featviz.RetryPolicy(retries=20, initial_backoff=0.1, max_backoff=0.4)


@pytest.fixture
def client(server: ServerProcess) -> Iterator[featviz.Client]:
    with featviz.Client(server.target) as client:
        yield client


@pytest.fixture(scope="module")
def one_slot_server() -> Iterator[ServerProcess]:
    """A server that runs one job and queues one: a third caller gets RESOURCE_EXHAUSTED."""
    args = ("--max-concurrent-runs", "1", "--queue-size", "1", "--retry-after", "0.3")
    with start_server(*args, "--metrics-port", "0") as process:
        yield process


def _wait_for(condition: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# Blocking client


def test_describe_model_reports_the_network(client: featviz.Client) -> None:
    description = client.describe_model(input_size=64)
    assert description.model_name == "vgg16"
    assert description.total_parameters == TOTAL_PARAMETERS == 14_714_688
    assert description.layer("block1_conv2").parameters == 36_928
    assert description.layer("block5_conv2").parameters == 2_359_808
    assert [layer.name for layer in description.layers] == list(LAYERS_BY_NAME)
    for layer, expected in zip(description.layers, geometry(64), strict=True):
        assert layer.output_shape == (expected.output_height, expected.output_width,
                                      expected.layer.channels)  # fmt: skip
        assert (layer.receptive_field, layer.stride) == (expected.receptive_field, expected.stride)
    assert len(description.weights.sha256) == 64
    assert description.input.channel_order == "RGB"


def test_maximize_reports_progress_and_returns_decodable_images(client: featviz.Client) -> None:
    updates: list[featviz.Update] = []
    result = client.maximize(
        "block1_conv2", [14, 15], size=48, steps=12, preview_every=4, on_progress=updates.append
    )
    progress = [u for u in updates if isinstance(u, featviz.Progress)]
    assert [p.step for p in progress] == [4, 8, 12]
    assert all(p.total_steps == 12 and len(p.objective) == 2 for p in progress)
    assert [image.channel for image in progress[-1].previews] == [14, 15]
    assert progress[-1].previews[0].to_pil().mode == "RGB"

    assert result.layer == "block1_conv2"
    assert result.channels == (14, 15)
    assert result.to_numpy().shape == (2, 48, 48, 3)
    assert all(activation > 0 for activation in result.activations)
    assert len(result.objectives) == 2
    assert result.statistics.steps == 12
    assert result.statistics.device == "cpu"
    assert result.statistics.steps_per_second > 0


def test_stream_ends_with_the_result_and_leaving_it_cancels_the_run(
    client: featviz.Client, server: ServerProcess
) -> None:
    updates = list(client.stream_maximize("block1_conv2", 3, size=32, steps=4, preview_every=2))
    assert [type(u) for u in updates] == [featviz.Progress, featviz.Progress, featviz.Finished]
    assert isinstance(updates[-1], featviz.Finished)
    assert updates[-1].result.images[0].png.startswith(b"\x89PNG")

    cancelled = 'featviz_runs_finished_total{status="cancelled"}'
    cancelled_before = server.metric(cancelled, 0.0)
    for update in client.stream_maximize("block1_conv2", 3, size=64, steps=400, preview_every=1):
        if isinstance(update, featviz.Progress):
            break  # leaving the loop cancels the run on the server
    server.wait_metric(cancelled, cancelled_before + 1)
    server.wait_metric("featviz_active_runs", 0)


def test_export_onnx_downloads_and_verifies_the_file(
    client: featviz.Client, tmp_path: Path
) -> None:
    received: list[int] = []
    path, sha256 = client.export_onnx(
        tmp_path, on_progress=lambda done, total: received.append(done)
    )
    assert path.parent == tmp_path and path.suffix == ".onnx"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256
    assert received[-1] == path.stat().st_size > 50_000_000
    chunks = [b - a for a, b in zip([0, *received], received, strict=False)]
    assert max(chunks) <= 1024 * 1024
    assert list(tmp_path.iterdir()) == [path]  # no .part file left behind


def test_bad_requests_raise_invalid_argument_naming_the_field(client: featviz.Client) -> None:
    with pytest.raises(featviz.InvalidArgument) as bad_layer:
        client.maximize("block9_conv1", 0)
    assert "block5_conv3" in bad_layer.value.message  # the message lists the valid layers
    assert [v.field for v in bad_layer.value.field_violations] == ["layer"]

    with pytest.raises(featviz.InvalidArgument) as bad_size:
        client.maximize("block1_conv2", 0, size=100_000)
    assert [v.field for v in bad_size.value.field_violations] == ["size"]
    assert "32" in bad_size.value.message  # the allowed range

    with pytest.raises(featviz.InvalidArgument, match="input_size"):
        client.describe_model(input_size=8)


def test_an_error_carries_the_request_id_the_server_logged(
    client: featviz.Client, server: ServerProcess
) -> None:
    with pytest.raises(featviz.InvalidArgument) as bad:
        client.maximize("block1_conv2", 64)
    request_id = bad.value.request_id
    assert request_id is not None and len(request_id) == 32
    _wait_for(lambda: f'"request_id": "{request_id}"' in server.log())


def test_keyword_typos_fail_before_any_call(client: featviz.Client) -> None:
    with pytest.raises(TypeError, match="did you mean 'size'"):
        client.maximize("block1_conv2", 0, sise=64)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="did you mean 'preview_every'"):
        client.stream_maximize("block1_conv2", 0, preview_evry=2)  # type: ignore[call-arg]


def test_a_timeout_ends_the_call_with_deadline_exceeded(server: ServerProcess) -> None:
    with (
        featviz.Client(server.target, timeout=0.5) as client,
        pytest.raises(featviz.DeadlineExceeded),
    ):
        client.maximize("block1_conv2", 0, size=128, steps=400, preset="lucid")


def test_an_unreachable_server_is_retried_then_reported() -> None:
    policy = featviz.RetryPolicy(retries=2, initial_backoff=0.05)
    updates: list[featviz.Update] = []
    with (
        featviz.Client("127.0.0.1:1", retries=policy) as client,
        pytest.raises(featviz.Unavailable),
    ):
        client.maximize("block1_conv2", 0, on_progress=updates.append)
    assert [(u.attempt, u.restarted) for u in updates] == [(1, False), (2, False)]  # type: ignore[union-attr]


def test_the_bearer_token_is_required_and_accepted(
    secure_server: ServerProcess, certificate: tuple[Path, Path]
) -> None:
    target, ca = secure_server.target, certificate[0]
    for token in (None, "wrong"):
        with (
            featviz.Client(target, token=token, tls=ca) as client,
            pytest.raises(featviz.Unauthenticated),
        ):
            client.describe_model()
    with featviz.Client(target, token=TOKEN, tls=ca) as client:
        assert client.describe_model().total_parameters == TOTAL_PARAMETERS
        result = client.maximize("block1_conv2", 14, size=32, steps=2)
        assert result.activations[0] > 0


def test_a_queued_run_sees_its_place_and_a_turned_away_run_is_retried_after_the_hint(
    one_slot_server: ServerProcess,
) -> None:
    """One run holds the only slot and a second waits in the only queue place (seeing its
    position); a third is turned away with RESOURCE_EXHAUSTED + RetryInfo, and the SDK waits
    and retries until it gets in."""
    updates: dict[str, list[featviz.Update]] = {"running": [], "queued": [], "third": []}
    seen = {name: threading.Event() for name in updates}
    results: dict[str, featviz.Result] = {}

    def run(name: str, channel: int, **options: int) -> None:
        def on_progress(update: featviz.Update) -> None:
            updates[name].append(update)
            seen[name].set()

        with featviz.Client(one_slot_server.target) as client:
            results[name] = client.maximize("block1_conv2", channel, on_progress=on_progress,
                                            preview_every=1, **options)  # fmt: skip

    threads = [
        threading.Thread(target=run, args=("running", 0), kwargs={"size": 64, "steps": 150}),
        threading.Thread(target=run, args=("queued", 1), kwargs={"size": 32, "steps": 2}),
    ]
    threads[0].start()
    assert seen["running"].wait(60)
    threads[1].start()
    assert seen["queued"].wait(60)
    assert updates["queued"][0] == featviz.Queued(position=1)

    with (
        featviz.Client(one_slot_server.target, retries=0) as impatient,
        pytest.raises(featviz.Overloaded) as turned_away,
    ):
        impatient.maximize("block1_conv2", 2, size=32, steps=2)
    assert turned_away.value.retry_delay == pytest.approx(0.3)

    with featviz.Client(one_slot_server.target, retries=FAST_RETRIES) as patient:
        third = patient.maximize(
            "block1_conv2", 2, size=32, steps=2, on_progress=updates["third"].append
        )
    for thread in threads:
        thread.join()
    retries = [u for u in updates["third"] if isinstance(u, featviz.Retrying)]
    assert retries, "the third run was never turned away"
    assert all(isinstance(r.error, featviz.Overloaded) and not r.restarted for r in retries)
    assert all(r.delay >= 0.3 for r in retries)  # never sooner than the server asked
    assert all(r.activations[0] > 0 for r in (third, results["running"], results["queued"]))
    one_slot_server.wait_metric("featviz_active_runs", 0)


# ---------------------------------------------------------------------------------------------
# Asyncio client


async def test_async_client_describes_maximizes_streams_and_downloads(
    server: ServerProcess, tmp_path: Path
) -> None:
    async with featviz.AsyncClient(server.target) as client:
        description = await client.describe_model(input_size=128)
        assert description.total_parameters == TOTAL_PARAMETERS
        assert description.layer("block5_conv2").output_shape == (8, 8, 512)

        steps_seen: list[int] = []

        async def on_progress(update: featviz.Update) -> None:
            if isinstance(update, featviz.Progress):
                steps_seen.append(update.step)

        result = await client.maximize(
            "block1_conv2", 14, size=32, steps=6, preview_every=3, on_progress=on_progress
        )
        assert steps_seen == [3, 6]
        assert result.to_pil()[0].size == (32, 32)
        assert result.activations[0] > 0

        kinds = [type(u) async for u in client.stream_maximize("block1_conv2", 5, size=32, steps=2)]
        assert kinds[-1] is featviz.Finished and featviz.Progress in kinds

        path, sha256 = await client.export_onnx(tmp_path / "model.onnx")
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256

        with pytest.raises(featviz.InvalidArgument) as bad:
            await client.maximize("block1_conv2", 64)
        assert [v.field for v in bad.value.field_violations] == ["channels[0]"]
        assert bad.value.request_id is not None and len(bad.value.request_id) == 32


async def test_async_client_needs_the_token_too(
    secure_server: ServerProcess, certificate: tuple[Path, Path]
) -> None:
    target, ca = secure_server.target, certificate[0]
    async with featviz.AsyncClient(target, tls=ca) as client:
        with pytest.raises(featviz.Unauthenticated):
            await client.describe_model()
    async with featviz.AsyncClient(target, token=TOKEN, tls=ca) as client:
        assert (await client.describe_model()).model_name == "vgg16"
