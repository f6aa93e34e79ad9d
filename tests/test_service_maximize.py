"""Maximize over real gRPC: stream order and contents, message sizes, validation, cancellation,
deadlines and admission, against real server subprocesses and the real VGG16."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from PIL import Image
from serverproc import UNKNOWN_FIELD_99, ServerProcess, bad_request, start_server

from featviz.v1 import featviz_pb2 as pb
from featviz.v1 import featviz_pb2_grpc as pb_grpc
from featviz_server import engine
from featviz_server.service import messages

FOUR_MIB = 4 * 1024 * 1024
# A job that would run for tens of seconds here (400 steps), to be cut short.
# The lucid preset never stops before its step count: a run that is surely still going.
LONG = {"layer": "block2_conv1", "channels": [5], "size": 64, "steps": 400, "preview_every": 1,
        "no_preview_images": True, "preset": pb.PRESET_LUCID}  # fmt: skip


@pytest.fixture
def stub(server: ServerProcess) -> Iterator[pb_grpc.FeatureVisualizationServiceStub]:
    with server.channel() as channel:
        yield pb_grpc.FeatureVisualizationServiceStub(channel)


def kinds(responses: list[pb.MaximizeResponse]) -> list[str]:
    return [response.WhichOneof("update") for response in responses]


def decode(image: pb.Image) -> np.ndarray:
    picture = Image.open(io.BytesIO(image.png))
    assert picture.format == "PNG" and picture.mode == "RGB"
    assert picture.size == (image.width, image.height)
    return np.asarray(picture)


def test_stream_sends_previews_then_final_images_then_the_summary(stub) -> None:
    request = pb.MaximizeRequest(
        layer="block1_conv2", channels=[14, 3], images_per_channel=2, size=48, steps=8,
        preview_every=3, preview_size=24, seed=7,
    )  # fmt: skip
    responses = list(stub.Maximize(request, timeout=120))

    assert kinds(responses) == ["progress", "progress", "final_images", "summary"]
    order = [(14, 7), (14, 8), (3, 7), (3, 8)]  # channel-major, then seed
    for response, step in zip(responses[:2], (3, 6), strict=True):
        progress = response.progress
        assert (progress.step, progress.total_steps) == (step, 8)
        assert len(progress.objective) == 4 and all(map(math.isfinite, progress.objective))
        assert [(p.channel, p.seed) for p in progress.previews] == order
        assert all(decode(p).shape == (24, 24, 3) for p in progress.previews)
    finals = responses[2].final_images.images
    assert [(i.index, i.channel, i.seed) for i in finals] == [(k, *o) for k, o in enumerate(order)]
    pixels = [decode(image) for image in finals]
    assert all(p.shape == (48, 48, 3) for p in pixels)
    assert not np.array_equal(pixels[0], pixels[1])  # two seeds, two images
    summary = responses[3].summary
    assert summary.steps == 8 and summary.device == "cpu" and not summary.cached
    assert summary.duration_seconds > 0 and summary.steps_per_second > 0
    assert len(summary.activation) == len(summary.objective) == 4
    assert all(value > 0 for value in summary.activation)  # the ascent excited each channel
    assert len(summary.robust_activation) == len(summary.saturated_fraction) == 4
    assert all(value > 0 for value in summary.robust_activation)
    assert all(0 <= share <= 1 for share in summary.saturated_fraction)
    assert summary.stop_reason == pb.STOP_REASON_STEP_LIMIT


def test_default_previews_come_about_ten_times_and_can_omit_images(stub) -> None:
    request = pb.MaximizeRequest(
        layer="block1_conv1", channels=[0], size=32, steps=20, no_preview_images=True
    )
    responses = list(stub.Maximize(request, timeout=120))
    progress = [r.progress for r in responses if r.HasField("progress")]
    assert [p.step for p in progress] == list(range(2, 21, 2))
    assert all(not p.previews and len(p.objective) == 1 for p in progress)
    assert kinds(responses)[-2:] == ["final_images", "summary"]


def test_a_request_without_steps_runs_the_presets_steps_for_its_deepest_layer(stub) -> None:
    quick = {"size": 32, "preview_every": 1, "no_preview_images": True}
    terms = [pb.ObjectiveTerm(kind=pb.TERM_KIND_CHANNEL, layer=name, channel=3)
             for name in ("block1_conv2", "block4_conv1")]  # fmt: skip
    requests = {
        192: pb.MaximizeRequest(layer="block1_conv2", channels=[3], **quick),  # twice block5's
        144: pb.MaximizeRequest(expression=pb.ObjectiveExpression(terms=terms), **quick),
        40: pb.MaximizeRequest(layer="block1_conv2", channels=[3], steps=40, **quick),
    }
    for steps, request in requests.items():
        call = stub.Maximize(request, timeout=60)
        first = next(response for response in call if response.HasField("progress"))
        call.cancel()
        assert first.progress.total_steps == steps


def test_a_batch_over_4_mib_streams_in_several_messages_within_default_limits(stub) -> None:
    # Classic-preset images after one step are noise: ~180 kB of PNG each, ~4.3 MB in all.
    request = pb.MaximizeRequest(
        layer="block1_conv1", channels=range(24), size=256, steps=1, preset=pb.PRESET_CLASSIC,
        no_preview_images=True,
    )  # fmt: skip
    responses = list(stub.Maximize(request, timeout=300))  # default 4 MiB receive limit
    finals = [r.final_images for r in responses if r.HasField("final_images")]
    assert len(finals) >= 2
    assert sum(len(i.png) for f in finals for i in f.images) > FOUR_MIB
    assert [i.index for f in finals for i in f.images] == list(range(24))
    assert all(r.ByteSize() <= FOUR_MIB for r in responses)


def test_512_channels_at_224_px_fit_the_message_limit() -> None:
    """The packing itself, at the brief's scale: 512 block5_conv2-sized images of incompressible
    noise (the worst case for PNG; too costly to optimize on a CPU in a test)."""
    rng = np.random.default_rng(0)
    job = engine.Job("block5_conv2", tuple(range(512)), engine.recipe("fast", size=224, steps=1))
    images = rng.integers(0, 256, (512, 224, 224, 3), dtype=np.uint8)
    ones = [1.0] * 512
    result = engine.RenderResult(images, ones, ones, 1, 1.0, "cpu", ones, [0.0] * 512)
    final = messages.final(result, job, 0.0)
    progress = messages.progress(engine.Progress(1, 1, [1.0] * 512, images), job, 0, True)
    for stream in (final, progress):
        assert all(message.ByteSize() <= FOUR_MIB for message in stream)
    assert [i.index for m in final[:-1] for i in m.final_images.images] == list(range(512))
    assert [i.index for m in progress for i in m.progress.previews] == list(range(512))
    assert final[-1].HasField("summary")


# --- validation -----------------------------------------------------------------------------

VALID = {"layer": "block1_conv2", "channels": [3], "size": 64, "steps": 10}
# (changes to a valid request, the field named, a fragment of the allowed range or reason);
# the test server runs with --max-size 256 --max-steps 400.
# fmt: off
INVALID = [
    ({"layer": "block9_conv1"}, "layer", "valid layers: block1_conv1, block1_conv2"),
    ({"layer": ""}, "layer", "valid layers"),
    ({"channels": []}, "channels", "0..63"),
    ({"channels": [64]}, "channels[0]", "0..63"),
    ({"channels": [1, 2, 1]}, "channels", "listed twice"),
    ({"layer": "block5_conv2", "channels": [*range(512), 0]}, "channels", "1..512"),
    ({"layer": "block5_conv2", "channels": range(300), "images_per_channel": 2},
     "images_per_channel", "at most 512"),
    ({"images_per_channel": 9}, "images_per_channel", "1..8"),
    ({"size": 31}, "size", "32..256"),
    ({"size": 257}, "size", "32..256"),
    ({"steps": 401}, "steps", "1..400"),
    ({"preset": 9}, "preset", "PRESET_CLASSIC (1)"),
    ({"objective": pb.Objective(kind=5)}, "objective.kind", "OBJECTIVE_KIND_NEURON (2)"),
    ({"objective": pb.Objective(neuron_x=3)}, "objective.neuron_x", "only allowed"),
    ({"objective": pb.Objective(kind=2, neuron_x=64)}, "objective.neuron_x", "0..63"),
    ({"layer": "block5_conv2", "objective": pb.Objective(kind=2, neuron_y=4)},
     "objective.neuron_y", "0..3"),
    ({"objective": pb.Objective(diversity=-1)}, "objective.diversity", "0.0..1000.0"),
    ({"objective": pb.Objective(diversity=math.inf)}, "objective.diversity", "inf"),
    ({"options": pb.MaximizeOptions(parameterization=3)}, "options.parameterization", "(2)"),
    ({"preset": pb.PRESET_CLASSIC,
      "options": pb.MaximizeOptions(parameterization=pb.PARAMETERIZATION_FOURIER)},
     "options.parameterization", "classic preset's value_range is not allowed here; 'raw' needs"),
    ({"options": pb.MaximizeOptions(optimizer=7)}, "options.optimizer", "OPTIMIZER_ADAM (1)"),
    ({"options": pb.MaximizeOptions(learning_rate=math.nan)}, "options.learning_rate", "nan"),
    ({"options": pb.MaximizeOptions(learning_rate=0)}, "options.learning_rate", "1e-06..1000"),
    ({"options": pb.MaximizeOptions(l1=-0.5)}, "options.l1", "0.0..1000.0"),
    ({"options": pb.MaximizeOptions(l2=math.inf)}, "options.l2", "0.0..1000.0"),
    ({"options": pb.MaximizeOptions(total_variation=1e9)}, "options.total_variation", "1000"),
    ({"options": pb.MaximizeOptions(blur_sigma=0)}, "options.blur_sigma", "0.001..10.0"),
    ({"options": pb.MaximizeOptions(blur_every=401)}, "options.blur_every", "0..400"),
    ({"options": pb.MaximizeOptions(redirect_relu_steps=401)}, "options.redirect_relu_steps",
     "0..400"),
    ({"options": pb.MaximizeOptions(transforms=pb.Transforms(pad=33))},
     "options.transforms.pad", "0..32"),
    ({"options": pb.MaximizeOptions(transforms=pb.Transforms(jitter=65))},
     "options.transforms.jitter", "0..64"),
    ({"options": pb.MaximizeOptions(transforms=pb.Transforms(scale_min=2, scale_max=1.5))},
     "options.transforms.scale_min", "larger than scale_max"),
    ({"options": pb.MaximizeOptions(transforms=pb.Transforms(scale_max=100))},
     "options.transforms.scale_max", "0.1..10.0"),
    ({"options": pb.MaximizeOptions(transforms=pb.Transforms(rotate_degrees=math.nan))},
     "options.transforms.rotate_degrees", "0.0..180.0"),
    ({"preview_every": 11}, "preview_every", "1..10"),
    ({"preview_size": 4}, "preview_size", "8..256"),
    ({"preview_size": 300}, "preview_size", "8..256"),
    ({"seed": 2**64 - 1, "images_per_channel": 2}, "seed", "0..18446744073709551614"),
]
# fmt: on


@pytest.mark.parametrize(("changes", "field", "allowed"), INVALID)
def test_invalid_requests_are_refused_naming_the_field(stub, changes, field, allowed) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        next(stub.Maximize(pb.MaximizeRequest(**{**VALID, **changes}), timeout=30))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(f"{field}: ")
    assert allowed in caught.value.details()
    (violation,) = bad_request(caught.value).field_violations
    assert violation.field == field
    assert allowed in violation.description


@pytest.mark.parametrize("where", ["", "options", "objective", "options.transforms"])
def test_unknown_fields_are_refused_naming_the_field_number(stub, where: str) -> None:
    request = pb.MaximizeRequest(**VALID, options=pb.MaximizeOptions(transforms=pb.Transforms()))
    target = request
    for name in filter(None, where.split(".")):
        target = getattr(target, name)
    target.MergeFromString(UNKNOWN_FIELD_99)
    with pytest.raises(grpc.RpcError) as caught:
        next(stub.Maximize(request, timeout=30))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown field number 99" in caught.value.details()
    (violation,) = bad_request(caught.value).field_violations
    assert violation.field == (where or "MaximizeRequest")


def test_invalid_requests_start_no_run(server: ServerProcess, stub) -> None:
    started = server.metric("featviz_runs_started_total")
    with pytest.raises(grpc.RpcError):
        next(stub.Maximize(pb.MaximizeRequest(**{**VALID, "steps": 10_000})))
    assert server.metric("featviz_runs_started_total") == started


# --- cancellation and deadlines --------------------------------------------------------------


def cancelled_runs(server: ServerProcess) -> float:
    return server.metric('featviz_runs_finished_total{status="cancelled"}', 0.0)


def test_a_client_cancel_stops_the_run_within_a_few_steps_of_the_last_progress_it_saw(
    server: ServerProcess, stub
) -> None:
    before = cancelled_runs(server)
    call = stub.Maximize(pb.MaximizeRequest(**LONG, seed=101))
    seen = 0
    for response in call:
        seen = response.progress.step
        if seen >= 5:
            break
    assert seen >= 5 and server.metric("featviz_active_runs") == 1  # running
    call.cancel()
    server.wait_metric("featviz_active_runs", 0)
    assert cancelled_runs(server) == before + 1
    line = [line for line in server.log().splitlines() if '"run cancelled"' in line][-1]
    stopped_at = int(line.split("cancelled at step ")[1].split()[0])
    # The batcher looks for a cancel before every step, so the run ends with the step under way
    # when the cancel lands: seen + 1 unless the client or the cancel lags a step or more behind.
    assert seen <= stopped_at <= seen + 5


def test_a_deadline_stops_the_run_and_is_told_apart_from_a_cancel(
    server: ServerProcess, stub
) -> None:
    timed_out = 'featviz_runs_finished_total{status="deadline_exceeded"}'
    before, cancelled = server.metric(timed_out, 0.0), cancelled_runs(server)
    with pytest.raises(grpc.RpcError) as caught:
        for _ in stub.Maximize(pb.MaximizeRequest(**LONG, seed=102), timeout=2):
            pass
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    server.wait_metric("featviz_active_runs", 0)
    assert server.metric(timed_out) == before + 1
    assert cancelled_runs(server) == cancelled
    log = server.log().splitlines()
    assert '"run deadline_exceeded"' in [line for line in log if '"run ' in line][-1]
    rpc = [line for line in log if "/Maximize" in line and '"rpc ' in line][-1]
    assert '"code": "DEADLINE_EXCEEDED"' in rpc


# --- admission -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_slot_server() -> Iterator[ServerProcess]:
    """One run at a time, two more may wait."""
    with start_server(
        "--max-concurrent-runs", "1", "--queue-size", "2", "--retry-after", "3",
        "--metrics-port", "0",
    ) as process:  # fmt: skip
        yield process


def test_admission_queues_then_refuses_with_a_retry_hint(one_slot_server: ServerProcess) -> None:
    server = one_slot_server
    with server.channel() as channel:
        stub = pb_grpc.FeatureVisualizationServiceStub(channel)
        running = stub.Maximize(pb.MaximizeRequest(**LONG, seed=1))
        assert next(running).HasField("progress")
        first = stub.Maximize(pb.MaximizeRequest(**LONG, seed=2))
        assert next(first).queued.position == 1
        second = stub.Maximize(pb.MaximizeRequest(**LONG, seed=3))
        assert next(second).queued.position == 2
        assert server.metric("featviz_queue_depth") == 2

        with pytest.raises(grpc.RpcError) as caught:
            next(stub.Maximize(pb.MaximizeRequest(**LONG, seed=4)))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "queue is full" in caught.value.details()
        retry = error_details_pb2.RetryInfo()
        assert rpc_status.from_call(caught.value).details[0].Unpack(retry)
        assert retry.retry_delay.ToTimedelta().total_seconds() == 3

        first.cancel()  # leaving the queue moves the next one up
        assert next(second).queued.position == 1
        running.cancel()  # a free slot starts it
        assert next(second).HasField("progress")
        second.cancel()
        server.wait_metric("featviz_active_runs", 0)
        assert server.metric("featviz_queue_depth") == 0
