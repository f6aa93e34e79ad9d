"""Objective expressions end to end: over the wire, through the SDK (blocking and asyncio) and
the CLI, against a real server; the reported objective is the expression evaluated on the PNG by
the engine's own forward; every bad expression is refused naming its part."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from serverproc import ServerProcess, bad_request
from test_cli import _assert_one_clear_line, _rows, featviz

import featviz as sdk
from featviz.v1 import featviz_pb2 as pb
from featviz.v1 import featviz_pb2_grpc as pb_grpc
from featviz_server import engine
from featviz_server.engine.objectives import objective
from featviz_server.model import VGG16

SMALL = {"size": 48, "steps": 8}
INTERACTION = sdk.channel("block4_conv3", 12) - 0.5 * sdk.channel("block3_conv3", 40)


@pytest.fixture
def client(server: ServerProcess) -> Iterator[sdk.Client]:
    with sdk.Client(server.target) as client:
        yield client


def engine_objective(model: VGG16, result: sdk.Result, expression: sdk.Objective) -> list[float]:
    """The expression evaluated on the result's 8-bit images by the engine's own forward."""
    terms = tuple(
        (weight, engine.Term(t.kind, t.layer, t.channel, t.neuron, t.vector))
        for weight, t in expression.terms
    )
    job = engine.Job("", (), engine.recipe("fast", **SMALL), expression=engine.Expression(terms))
    pixels = torch.from_numpy(result.to_numpy()).permute(0, 3, 1, 2).float() / 255
    return objective(job)(engine.Run(job, model).read(pixels)).tolist()


def test_the_interaction_example_through_the_sdk_reports_the_engines_objective(
    client: sdk.Client, model: VGG16
) -> None:
    result = client.maximize(objective=INTERACTION, seed=3, **SMALL)
    assert result.layer == "" and result.file_names() == ["objective_s3.png"]
    assert result.objectives == pytest.approx(engine_objective(model, result, INTERACTION))
    assert result.objectives[0] > 0


def test_a_direction_objective_through_the_sdk_reports_the_engines_objective(
    client: sdk.Client, model: VGG16
) -> None:
    vector = [0.0] * 512
    vector[12], vector[40] = 1.0, 1.0
    direction = sdk.direction("block4_conv3", vector)
    result = client.maximize(objective=direction, **SMALL)
    assert result.objectives == pytest.approx(engine_objective(model, result, direction), rel=1e-5)
    assert result.activations == pytest.approx(result.objectives)  # no penalties: units only


async def test_the_async_sdk_interpolates_6_frames_each_nearer_the_next_than_the_ends_are(
    server: ServerProcess,
) -> None:
    start, end = sdk.channel("block3_conv1", 11), sdk.channel("block3_conv1", 40)
    async with sdk.AsyncClient(server.target) as client:
        result = await client.maximize(
            objective=start, interpolate_to=end, images_per_channel=6, seed=1, **SMALL
        )
    assert len(result.images) == 6 and [image.seed for image in result.images] == [*range(1, 7)]
    pixels = result.to_numpy().astype(float)
    # neighbours share a layout: each is closer to the next than the ends are to each other
    steps = [np.abs(pixels[k + 1] - pixels[k]).mean() for k in range(5)]
    assert max(steps) < np.abs(pixels[5] - pixels[0]).mean()


def test_the_cli_takes_an_expression_and_an_interpolation(
    server: ServerProcess, tmp_path: Path
) -> None:
    out = tmp_path / "both.png"
    run = featviz(
        "maximize", "block4_conv3:12 - 0.5*block3_conv3:40", "--size", "48", "--steps", "8",
        "-q", "-o", str(out), target=server.target,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    (row,) = _rows(run.stdout)
    assert row["file"] == str(out) and out.exists() and float(row["objective"]) > 0

    frames = featviz(
        "maximize", "block3_conv1:11", "--interpolate-to", "block3_conv1:{40=1,41=1}",
        "--images-per-channel", "3", "--size", "40", "--steps", "4", "-q", "-o", str(tmp_path),
        target=server.target,
    )  # fmt: skip
    assert frames.returncode == 0, frames.stderr
    assert [Path(row["file"]).name for row in _rows(frames.stdout)] == [
        "objective_s0.png",
        "objective_s1.png",
        "objective_s2.png",
    ]


@pytest.mark.parametrize(
    ("objective", "fragments"),
    [
        ("block4_conv3:12 -", ("expected a term", "found the end")),
        ("block4_conv3:12 0.5", ("expected + or - between terms", "'0.5' at position 17")),
        ("block4_conv3 + block1_conv1:1", ("expected ':' after the layer name 'block4_conv3'",)),
        ("block4_conv3", ("block4_conv3 needs CHANNELS", "an objective such as block4_conv3:0")),
        ("block9_conv1:{1=1}", ("unknown layer 'block9_conv1'",)),
    ],
)
def test_an_unparsable_cli_expression_is_a_one_line_usage_error(
    server: ServerProcess, objective: str, fragments: tuple[str, ...]
) -> None:
    run = featviz("maximize", objective, target=server.target)
    assert run.returncode == 2
    _assert_one_clear_line(run.stderr, *fragments)


@pytest.fixture
def stub(server: ServerProcess) -> Iterator[pb_grpc.FeatureVisualizationServiceStub]:
    with server.channel() as channel:
        yield pb_grpc.FeatureVisualizationServiceStub(channel)


def terms(*terms: pb.ObjectiveTerm) -> pb.ObjectiveExpression:
    return pb.ObjectiveExpression(terms=terms)


CHANNEL = pb.ObjectiveTerm(kind=pb.TERM_KIND_CHANNEL, layer="block1_conv1", channel=3)
# fmt: off
BAD = [
    ({"expression": terms(pb.ObjectiveTerm(kind=pb.TERM_KIND_CHANNEL, layer="block9_conv1"))},
     "expression.terms[0].layer", "unknown layer 'block9_conv1'"),
    ({"expression": terms(CHANNEL, pb.ObjectiveTerm(kind=1, layer="block2_conv1", channel=128))},
     "expression.terms[1].channel", "128 is not a block2_conv1 channel (0..127)"),
    ({"expression": terms(pb.ObjectiveTerm(kind=pb.TERM_KIND_DIRECTION, layer="block1_conv1",
                                           vector=[1.0] * 63))},
     "expression.terms[0].vector", "has 63 values; block1_conv1 has 64 channels"),
    ({"expression": terms(CHANNEL, pb.ObjectiveTerm(kind=1, layer="block1_conv1",
                                                    weight=math.nan))},
     "expression.terms[1].weight", "finite"),
    ({"expression": terms(pb.ObjectiveTerm(layer="block1_conv1"))},
     "expression.terms[0].kind", "TERM_KIND_CHANNEL (1)"),
    ({"expression": terms(pb.ObjectiveTerm(kind=1, layer="block1_conv1", neuron_x=1))},
     "expression.terms[0].neuron_x", "only for TERM_KIND_NEURON"),
    ({"expression": terms(pb.ObjectiveTerm(kind=1, layer="block1_conv1", neuron_y=1))},
     "expression.terms[0].neuron_y", "only for TERM_KIND_NEURON"),
    ({"expression": terms(pb.ObjectiveTerm(kind=pb.TERM_KIND_NEURON, layer="block1_conv1",
                                           neuron_x=1))},
     "expression.terms[0].neuron_y", "give neuron_x and neuron_y"),
    ({"expression": terms(pb.ObjectiveTerm(kind=pb.TERM_KIND_NEURON, layer="block5_pool",
                                           neuron_x=2, neuron_y=0))},
     "expression.terms[0].neuron_x", "outside 0..0"),
    ({"expression": terms(pb.ObjectiveTerm(kind=pb.TERM_KIND_L1))},
     "expression.terms", "reads no unit"),
    ({"expression": terms(pb.ObjectiveTerm(kind=pb.TERM_KIND_DIVERSITY, layer="block1_conv1")),
      "images_per_channel": 2},
     "expression.terms", "reads no unit"),
    ({"expression": terms()}, "expression.terms", "reads no unit"),
    ({"expression": terms(CHANNEL), "layer": "block1_conv1"}, "layer", "must be empty"),
    ({"expression": terms(CHANNEL), "images_per_channel": 9}, "images_per_channel", "1..8"),
    ({"expression": terms(CHANNEL),
      "interpolate_to": terms(pb.ObjectiveTerm(kind=1, layer="block1_conv1", channel=64))},
     "interpolate_to.terms[0].channel", "64 is not a block1_conv1 channel"),
    ({"layer": "block1_conv1", "channels": [1], "interpolate_to": terms(CHANNEL)},
     "interpolate_to", "needs an objective expression to start from, such as block1_conv1:1"),
]
# fmt: on


@pytest.mark.parametrize(("fields", "field", "detail"), BAD)
def test_a_bad_expression_is_refused_naming_its_part(stub, fields, field, detail) -> None:
    request = pb.MaximizeRequest(size=40, steps=2, **fields)
    with pytest.raises(grpc.RpcError) as caught:
        next(stub.Maximize(request, timeout=30))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    (violation,) = bad_request(caught.value).field_violations
    assert violation.field == field and detail in violation.description


def test_the_sdk_refuses_a_layer_and_an_expression_together(client: sdk.Client) -> None:
    with pytest.raises(TypeError, match="not both"):
        client.maximize("block1_conv1", 3, objective=INTERACTION)
    with pytest.raises(TypeError, match=r"objective=featviz\.channel"):
        client.maximize(size=48)
