"""Abuse: six hundred random and malformed requests, structured and as raw bytes, each answered with
a proper status (never UNKNOWN, INTERNAL or a crash); after each kind, the server is healthy
and idle.

The fuzzed server's limits are tiny, so that the requests which pass validation cost milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from serverproc import ServerProcess, start_server

from featviz.v1 import featviz_pb2 as pb
from featviz_server.architecture import LAYERS

SERVICE = "/featviz.v1.FeatureVisualizationService"
LIMITS = ("--max-size", "32", "--max-steps", "3", "--max-channels", "4", "--max-images", "4")
PROPER = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}
CALL_TIMEOUT = 30.0
FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

UINT32 = st.integers(0, 2**32 - 1)
UINT64 = st.integers(0, 2**64 - 1)
ENUM = st.integers(-(2**31), 2**31 - 1)  # proto3 enums are open: unknown numbers are sent as is
SMALL = st.integers(0, 40)
FLOAT = st.floats(width=32)  # NaN, infinities, subnormals and huge values included
NUMBER = st.one_of(SMALL, UINT32)
LAYER = st.one_of(st.sampled_from([layer.name for layer in LAYERS]), st.text(max_size=40))
CHANNELS = st.one_of(st.lists(NUMBER, max_size=6), st.lists(UINT32, min_size=500, max_size=5000))


def optional(strategy: st.SearchStrategy) -> st.SearchStrategy:
    """The value, or the field left unset."""
    return st.one_of(st.none(), strategy)


def message(cls: type, **fields: st.SearchStrategy) -> st.SearchStrategy:
    """A protobuf message with any subset of the given fields set."""
    values = st.fixed_dictionaries({}, optional={name: s for name, s in fields.items()})
    return values.map(lambda kwargs: cls(**kwargs))


TRANSFORMS = message(
    pb.Transforms,
    pad=NUMBER, jitter=NUMBER, scale_min=FLOAT, scale_max=FLOAT, rotate_degrees=FLOAT,
    final_jitter=NUMBER,
)  # fmt: skip
OPTIONS = message(
    pb.MaximizeOptions,
    parameterization=ENUM, decorrelate=st.booleans(), optimizer=ENUM, learning_rate=FLOAT,
    transforms=TRANSFORMS, l1=FLOAT, l2=FLOAT, total_variation=FLOAT, blur_every=NUMBER,
    blur_sigma=FLOAT, redirect_relu_steps=NUMBER,
)  # fmt: skip
OBJECTIVE = message(
    pb.Objective, kind=ENUM, neuron_x=NUMBER, neuron_y=NUMBER, negate=st.booleans(),
    diversity=FLOAT,
)  # fmt: skip
MAXIMIZE = message(
    pb.MaximizeRequest,
    layer=LAYER, channels=CHANNELS, objective=OBJECTIVE, size=NUMBER, steps=NUMBER, preset=ENUM,
    options=OPTIONS, seed=UINT64, images_per_channel=NUMBER, preview_every=NUMBER,
    preview_size=NUMBER, no_preview_images=st.booleans(),
)  # fmt: skip
DESCRIBE = message(pb.DescribeModelRequest, input_size=NUMBER)

# Hand-made malformed wire bytes (field 2 is `channels`, field 4 `size`, field 1 `layer`).
NEGATIVE_CHANNEL = bytes.fromhex("0a0c626c6f636b315f636f6e7632") + bytes.fromhex(
    "10ffffffffffffffffff01"
)  # layer "block1_conv2", channels [-1] as a 64-bit varint
SIZE_AS_STRING = bytes.fromhex("0a0c626c6f636b315f636f6e7632100e220234ff")  # size: bytes, not int
LAYER_NOT_UTF8 = bytes.fromhex("0a02fffe100e")  # layer is not valid UTF-8
TRUNCATED = pb.MaximizeRequest(layer="block1_conv2", channels=[14]).SerializeToString()[:-1]


def mutated(serialized: bytes, edits: list[tuple[int, int]]) -> bytes:
    """`serialized` with some bytes overwritten: almost-valid messages reach deeper checks."""
    data = bytearray(serialized)
    for position, value in edits:
        if data:
            data[position % len(data)] = value
    return bytes(data)


RAW = st.one_of(
    st.binary(max_size=300),
    st.builds(
        mutated,
        MAXIMIZE.map(lambda request: request.SerializeToString()),
        st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    ),
)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with start_server("--metrics-port", "0", *LIMITS) as server:
        yield server


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with server.channel() as channel:
        yield channel


def outcome(receive: Callable[[], list[object]]) -> tuple[grpc.StatusCode, str, list[object]]:
    """A call's status code, details and responses."""
    try:
        return grpc.StatusCode.OK, "", receive()
    except grpc.RpcError as error:
        return error.code(), error.details() or "", []


def check_maximize(channel: grpc.Channel, request: bytes) -> None:
    call = channel.unary_stream(
        f"{SERVICE}/Maximize",
        request_serializer=None,  # the bytes go out exactly as given
        response_deserializer=pb.MaximizeResponse.FromString,
    )
    code, details, responses = outcome(lambda: list(call(request, timeout=CALL_TIMEOUT)))
    assert code in PROPER, f"{code.name}: {details}"
    if code == grpc.StatusCode.OK:
        assert responses[-1].WhichOneof("update") == "summary"


def check_describe(channel: grpc.Channel, request: bytes) -> None:
    call = channel.unary_unary(
        f"{SERVICE}/DescribeModel",
        request_serializer=None,
        response_deserializer=pb.DescribeModelResponse.FromString,
    )
    code, details, _ = outcome(lambda: [call(request, timeout=CALL_TIMEOUT)])
    assert code in PROPER, f"{code.name}: {details}"


def assert_healthy_and_idle(server: ServerProcess) -> None:
    """The server is alive, SERVING, runs nothing, queues nothing, and has logged no traceback."""
    assert server.process.poll() is None, "the server died"
    assert server.health() == health_pb2.HealthCheckResponse.SERVING
    server.wait_metric("featviz_active_runs", 0.0, timeout=10)
    server.wait_metric("featviz_queue_depth", 0.0, timeout=10)
    assert '"traceback"' not in server.log()


# Each test runs one fuzzer (hypothesis calls it with up to 200 requests), then checks the server:
# whatever tests run, and in whatever order, each one's requests leave the server sound.


@settings(FUZZ, max_examples=200)
@given(request=MAXIMIZE)
def fuzz_maximize_requests(channel: grpc.Channel, request: pb.MaximizeRequest) -> None:
    check_maximize(channel, request.SerializeToString())


@settings(FUZZ, max_examples=200)
@given(raw=RAW)
@example(raw=NEGATIVE_CHANNEL)
@example(raw=SIZE_AS_STRING)
@example(raw=LAYER_NOT_UTF8)
@example(raw=TRUNCATED)
def fuzz_maximize_bytes(channel: grpc.Channel, raw: bytes) -> None:
    check_maximize(channel, raw)


@settings(FUZZ, max_examples=200)
@given(raw=st.one_of(DESCRIBE.map(lambda r: r.SerializeToString()), st.binary(max_size=64)))
def fuzz_describe_requests(channel: grpc.Channel, raw: bytes) -> None:
    check_describe(channel, raw)


def test_random_maximize_requests_get_proper_statuses_and_leave_the_server_healthy_and_idle(
    server: ServerProcess, channel: grpc.Channel
) -> None:
    fuzz_maximize_requests(channel)
    assert_healthy_and_idle(server)


def test_malformed_maximize_bytes_get_proper_statuses_and_leave_the_server_healthy_and_idle(
    server: ServerProcess, channel: grpc.Channel
) -> None:
    fuzz_maximize_bytes(channel)
    assert_healthy_and_idle(server)


def test_random_describe_requests_get_proper_statuses_and_leave_the_server_healthy_and_idle(
    server: ServerProcess, channel: grpc.Channel
) -> None:
    fuzz_describe_requests(channel)
    assert_healthy_and_idle(server)
