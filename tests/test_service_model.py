"""DescribeModel, ExportOnnx, reflection and health against a real server subprocess."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from serverproc import UNKNOWN_FIELD_99, ServerProcess, bad_request

from featviz.v1 import featviz_pb2 as pb
from featviz.v1 import featviz_pb2_grpc as pb_grpc
from featviz_server.architecture import LAYERS
from featviz_server.weights import Weights, tensors_sha256

SERVICE = "featviz.v1.FeatureVisualizationService"


@pytest.fixture
def stub(server: ServerProcess) -> Iterator[pb_grpc.FeatureVisualizationServiceStub]:
    with server.channel() as channel:
        yield pb_grpc.FeatureVisualizationServiceStub(channel)


def test_describe_model_at_224_reports_the_loaded_network(stub, weights: Weights) -> None:
    response = stub.DescribeModel(pb.DescribeModelRequest())
    assert response.model_name == "vgg16"
    assert response.input_size == 224
    assert response.weights.sha256 == tensors_sha256(weights.tensors)
    assert response.weights.source == weights.source
    assert response.device == "cpu"
    assert response.input.channel_order == "RGB" and response.input.min_size == 32
    counted = {
        name.split(".")[0]: 0 for name in weights.tensors
    }  # parameters counted from the tensors themselves, not from the architecture table
    for name, array in weights.tensors.items():
        counted[name.split(".")[0]] += array.size
    assert response.total_parameters == sum(counted.values()) == 14_714_688
    layers = {layer.name: layer for layer in response.layers}
    assert [layer.name for layer in response.layers] == [layer.name for layer in LAYERS]
    for name, layer in layers.items():
        assert layer.parameters == counted.get(name, 0)
    assert layers["block1_conv2"].parameters == 36_928
    assert layers["block5_conv2"].parameters == 2_359_808
    assert layers["block5_pool"].kind == pb.LAYER_KIND_POOL
    assert (layers["block1_conv2"].output_height, layers["block1_conv2"].output_width) == (224, 224)
    assert (layers["block5_conv3"].output_height, layers["block5_conv3"].channels) == (14, 512)
    assert (layers["block5_pool"].output_width, layers["block5_pool"].stride) == (7, 32)
    assert layers["block1_conv1"].receptive_field == 3
    assert layers["block5_conv3"].receptive_field == 196


def test_describe_model_gives_the_layers_output_shapes_at_the_requested_size(stub) -> None:
    response = stub.DescribeModel(pb.DescribeModelRequest(input_size=100))
    shapes = {layer.name: (layer.output_height, layer.output_width) for layer in response.layers}
    assert response.input_size == 100
    assert shapes["block1_conv1"] == (100, 100)
    assert shapes["block2_conv1"] == (50, 50)
    assert shapes["block3_pool"] == (12, 12)
    assert shapes["block4_conv3"] == (12, 12)
    assert shapes["block5_pool"] == (3, 3)


@pytest.mark.parametrize("size", [1, 31, 257])
def test_describe_model_refuses_sizes_the_network_or_server_cannot_take(stub, size: int) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.DescribeModel(pb.DescribeModelRequest(input_size=size))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("input_size:")
    assert "32..256" in caught.value.details()  # the test server's --max-size 256
    (violation,) = bad_request(caught.value).field_violations
    assert violation.field == "input_size"


def test_describe_model_refuses_unknown_fields(stub) -> None:
    request = pb.DescribeModelRequest.FromString(
        pb.DescribeModelRequest(input_size=64).SerializeToString() + UNKNOWN_FIELD_99
    )
    with pytest.raises(grpc.RpcError) as caught:
        stub.DescribeModel(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown field number 99" in caught.value.details()


def test_every_response_carries_a_request_id(stub) -> None:
    _, call = stub.DescribeModel.with_call(
        pb.DescribeModelRequest(), metadata=(("x-request-id", "test-req-42"),)
    )
    assert ("x-request-id", "test-req-42") in tuple(call.initial_metadata())
    _, call = stub.DescribeModel.with_call(pb.DescribeModelRequest())
    generated = dict(call.initial_metadata())["x-request-id"]
    assert len(generated) == 32


def test_reflection_lists_the_services(server: ServerProcess) -> None:
    with server.channel() as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (response,) = stub.ServerReflectionInfo(iter([request]))
    names = {service.name for service in response.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health"} <= names


def test_health_is_serving_for_the_server_and_the_service(server: ServerProcess) -> None:
    assert server.health() == health_pb2.HealthCheckResponse.SERVING
    assert server.health(SERVICE) == health_pb2.HealthCheckResponse.SERVING


def test_export_onnx_streams_the_file_in_chunks_with_its_sha256(stub) -> None:
    chunks = list(stub.ExportOnnx(pb.ExportOnnxRequest(), timeout=600))
    first = chunks[0]
    data = b"".join(chunk.data for chunk in chunks)
    assert first.total_bytes == len(data) > 50_000_000
    assert first.sha256 == hashlib.sha256(data).hexdigest()
    assert first.file_name.endswith(".onnx")
    assert all(0 < len(chunk.data) <= 1 << 20 for chunk in chunks)
    assert all(not chunk.sha256 and not chunk.total_bytes for chunk in chunks[1:])


@pytest.mark.parametrize(
    ("method", "streaming"), [("DescribeModel", False), ("Maximize", True), ("ExportOnnx", True)]
)
def test_undecodable_bytes_are_an_invalid_argument(server: ServerProcess, method, streaming):
    with server.channel() as channel:
        path = f"/{SERVICE}/{method}"
        call = (channel.unary_stream if streaming else channel.unary_unary)(path)
        with pytest.raises(grpc.RpcError) as caught:
            response = call(b"\x0a\x05ab", timeout=30)  # field 1 claims 5 bytes, 2 follow
            if streaming:
                list(response)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("malformed request: Error parsing message")
