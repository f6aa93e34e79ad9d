"""The SDK's parts that need no server: option checking, targets, retries, error details,
stream assembly, saving results and downloads, the progress bar and the CLI's flags."""

from __future__ import annotations

import hashlib
import io
import math
import subprocess
import sys
import typing
from pathlib import Path

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from PIL import Image as PILImage

import featviz
from featviz import cli
from featviz.connection import (
    call_metadata,
    channel_address,
    channel_credentials,
    split_targets,
)
from featviz.download import OnnxDownload
from featviz.errors import (
    ChecksumMismatch,
    FeatvizError,
    InvalidArgument,
    Overloaded,
    Unavailable,
    from_rpc_error,
)
from featviz.figures import robust_activations
from featviz.options import OPTIONS, MaximizeOptions, maximize_request, parse_channels
from featviz.progressbar import ProgressBar
from featviz.result import Finished, Progress, Queued, Retrying, RunAssembler
from featviz.retry import RetryPolicy
from featviz.v1 import featviz_pb2 as pb

# ---------------------------------------------------------------------------------------------
# Packaging


def test_the_sdk_and_cli_import_neither_numpy_nor_pillow_nor_the_server() -> None:
    """The client stays thin: grpcio + protobuf; arrays and images only when asked for."""
    code = (
        "import sys, featviz, featviz.cli; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'numpy', 'PIL', 'torch', 'tqdm', 'featviz_server'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_async_client_must_be_made_inside_its_event_loop() -> None:
    with pytest.raises(RuntimeError, match="inside a coroutine"):
        featviz.AsyncClient("127.0.0.1:1")


# ---------------------------------------------------------------------------------------------
# Options


def test_a_misspelt_keyword_is_named_with_the_closest_option() -> None:
    with pytest.raises(TypeError, match=r"'stpes'; did you mean 'steps'\?"):
        maximize_request("block1_conv2", 14, {"stpes": 10})
    with pytest.raises(TypeError, match=r"'jiter'; did you mean 'jitter'\?"):
        maximize_request("block1_conv2", 14, {"transforms": {"jiter": 4}})


def test_the_typed_keywords_and_the_option_table_name_the_same_options_and_words() -> None:
    hints = typing.get_type_hints(MaximizeOptions)
    assert set(hints) == set(OPTIONS)
    for name, option in OPTIONS.items():
        if option.enum is not None:  # the words the contract's enum accepts, and no others
            words = [
                word
                for arm in (hints[name], *typing.get_args(hints[name]))
                if typing.get_origin(arm) is typing.Literal
                for word in typing.get_args(arm)
            ]
            assert tuple(words) == option.choices, name


def test_options_land_in_their_request_fields() -> None:
    request = maximize_request(
        "block5_conv2",
        [410, 411],
        {
            "size": 96,
            "steps": 40,
            "preset": "lucid",
            "seed": 7,
            "neuron": (2, 3),
            "negate": True,
            "parameterization": "pixel",
            "optimizer": "normalized_ascent",
            "learning_rate": 1,  # an int is a fine float
            "transforms": {"jitter": 4},
            "preview_images": False,
            "l1": None,  # None: not given
        },
    )
    assert (request.layer, list(request.channels)) == ("block5_conv2", [410, 411])
    assert (request.size, request.steps, request.seed) == (96, 40, 7)
    assert request.preset == pb.PRESET_LUCID
    assert request.objective.kind == pb.OBJECTIVE_KIND_NEURON  # implied by neuron=
    assert (request.objective.neuron_x, request.objective.neuron_y) == (2, 3)
    assert request.objective.negate
    assert request.options.parameterization == pb.PARAMETERIZATION_PIXEL
    assert request.options.optimizer == pb.OPTIMIZER_NORMALIZED_ASCENT
    assert request.options.learning_rate == 1.0
    assert request.options.transforms == pb.Transforms(jitter=4)  # the rest 0: off
    assert request.no_preview_images
    assert not request.options.HasField("l1")


def test_transforms_false_means_no_augmentation() -> None:
    request = maximize_request("block1_conv2", 0, {"transforms": False})
    assert request.options.HasField("transforms")
    assert request.options.transforms == pb.Transforms()  # every one 0: off


@pytest.mark.parametrize(
    ("options", "error", "pattern"),
    [
        ({"size": "64"}, TypeError, "size must be int"),
        ({"size": True}, TypeError, "size must be int"),
        ({"size": -1}, ValueError, "size is out of range"),
        ({"negate": 1}, TypeError, "negate must be bool"),
        ({"preset": "quick"}, ValueError, "preset must be one of classic, lucid, fast"),
        ({"objective": 2}, ValueError, "objective must be one of channel, neuron"),
        ({"neuron": (1,)}, ValueError, r"neuron must be \(x, y\)"),
        ({"transforms": {"pad": 1.5}}, TypeError, r"transforms\['pad'\] must be int"),
        ({"transforms": "none"}, TypeError, "transforms must be a mapping or False"),
        ({"init": "/no/such/photo.jpg"}, ValueError, "init: cannot read /no/such/photo.jpg"),
    ],
)
def test_bad_option_values_are_refused_naming_the_option(
    options: dict, error: type[Exception], pattern: str
) -> None:
    with pytest.raises(error, match=pattern):
        maximize_request("block1_conv2", 14, options)


@pytest.mark.parametrize("option", [{"negate": True}, {"diversity": 0.5}, {"neuron": (1, 2)}])
def test_options_of_a_channel_objective_are_refused_with_an_expression_naming_them(
    option: dict,
) -> None:
    expression = featviz.channel("block4_conv3", 12)
    with pytest.raises(TypeError, match=f"{next(iter(option))} is for a layer and channels"):
        maximize_request(None, None, {"objective": expression, **option})


def test_channels_may_be_an_int_a_list_or_text() -> None:
    assert list(maximize_request("block1_conv2", 14, {}).channels) == [14]
    assert list(maximize_request("block1_conv2", (3, 7), {}).channels) == [3, 7]
    assert list(maximize_request("block1_conv2", "0-2,9", {}).channels) == [0, 1, 2, 9]
    assert parse_channels(" 3, 7 ,9-11") == [3, 7, 9, 10, 11]


def test_objectives_compose_print_and_build_the_request() -> None:
    both = featviz.channel("block4_conv3", 12) - 0.5 * featviz.channel("block3_conv3", 40)
    penalized = -both * 2 + featviz.neuron("block5_pool", 3, 1, 0) - 0.1 * featviz.l1()
    assert str(both) == "block4_conv3:12 - 0.5*block3_conv3:40"
    assert str(penalized) == "-2*block4_conv3:12 + block3_conv3:40 + block5_pool:3@1,0 - 0.1*l1"
    assert featviz.parse_objective(str(penalized)) == penalized
    request = maximize_request(None, None, {"objective": both, "interpolate_to": -both})
    assert not request.layer and not request.channels
    assert [(t.layer, t.channel, t.weight) for t in request.expression.terms] == [
        ("block4_conv3", 12, 1.0),
        ("block3_conv3", 40, -0.5),
    ]
    assert [t.weight for t in request.interpolate_to.terms] == [-1.0, 0.5]
    assert request.expression.terms[0].kind == pb.TERM_KIND_CHANNEL


def test_the_cli_reads_an_objective_in_place_of_layer_and_channels() -> None:
    args = cli._parser().parse_args(["maximize", "block4_conv3:12 - 0.5*block3_conv3:40"])
    assert args.channels is None and args.layer == "block4_conv3:12 - 0.5*block3_conv3:40"
    direction = featviz.parse_objective("2*block1_conv1:{1=0.5,3=-1}", lambda layer: 4)
    assert direction.terms[0][1].vector == (0.0, 0.5, 0.0, -1.0)
    assert str(featviz.parse_objective("l2 + tv*3 + block2_pool:diversity")) == (
        "l2 + 3*tv + block2_pool:diversity"
    )


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("block4_conv3", "expected ':' after the layer name 'block4_conv3', found the end"),
        ("block4_conv3:12 +", "expected a term such as block4_conv3:12 or l1, found the end"),
        ("block4_conv3:x", "expected a channel number.*found 'x' at position 14"),
        ("block4_conv3:1.5", "expected a channel number.*found '1.5' at position 14"),
        ("2 block4_conv3:1", r"expected \*, found 'block4_conv3' at position 3"),
        ("block1_conv1:3@1", "expected ',' between the neuron's column and row"),
        ("block1_conv1:{1=1}", "a direction needs the layer's channels"),
        ("nan*block1_conv1:0", "expected ':' after the layer name 'nan'"),
        ("block1_conv1:0 ; rm", "expected \\+ or - between terms, found ';'"),
    ],
)
def test_unparsable_objectives_say_where(text: str, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        featviz.parse_objective(text)


@pytest.mark.parametrize(
    ("channels", "error", "pattern"),
    [
        ("3-1", ValueError, "backwards"),
        ("a", ValueError, "not N or N-M"),
        ("1,,2", ValueError, "not N or N-M"),
        ([], ValueError, "at least one channel"),
        ([-1], ValueError, ">= 0"),
        ([True], TypeError, "integers"),
        ([1.0], TypeError, "integers"),
    ],
)
def test_bad_channels_are_refused(channels: object, error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        maximize_request("block1_conv2", channels, {})  # type: ignore[arg-type]


def test_every_cli_flag_reaches_the_request() -> None:
    argv = [
        "maximize", "block1_conv2", "3,5-6", "--size", "64", "--steps", "12",
        "--preset", "classic", "--seed", "3", "--objective", "neuron", "--neuron", "1,2",
        "--negate", "--diversity", "0.5", "--images-per-channel", "2", "--preview-every", "4",
        "--preview-size", "32", "--parameterization", "fourier", "--no-decorrelate",
        "--optimizer", "adam", "--learning-rate", "0.05", "--transforms", "pad=2,scale_max=1.2",
        "--l1", "0.1", "--l2", "0.2", "--total-variation", "0.3", "--blur-every", "4",
        "--blur-sigma", "0.7", "--redirect-relu-steps", "5",
    ]  # fmt: skip
    args = cli._parser().parse_args(argv)
    # (interpolate_to needs an objective expression, init a file: see the tests below)
    skipped = ("preview_images", "interpolate_to", "init", "keep_close")
    options = {name: getattr(args, name) for name in OPTIONS if name not in skipped}
    assert None not in options.values()  # every option has its flag, and it was read
    request = maximize_request(args.layer, args.channels, options)
    assert list(request.channels) == [3, 5, 6]
    assert request.preset == pb.PRESET_CLASSIC
    assert (request.objective.neuron_x, request.objective.neuron_y) == (1, 2)
    assert request.options.HasField("decorrelate") and not request.options.decorrelate
    assert request.options.transforms == pb.Transforms(pad=2, scale_max=1.2)
    assert request.options.redirect_relu_steps == 5


# ---------------------------------------------------------------------------------------------
# Targets and credentials


def test_targets_split_on_commas_unless_a_grpc_uri() -> None:
    assert split_targets("a:1, b:2") == ["a:1", "b:2"]
    assert split_targets(["a:1", "b:2,c:3"]) == ["a:1", "b:2", "c:3"]
    assert split_targets("ipv4:10.0.0.1:1,10.0.0.2:1") == ["ipv4:10.0.0.1:1,10.0.0.2:1"]
    assert split_targets("dns:///featviz-headless:50051") == ["dns:///featviz-headless:50051"]
    with pytest.raises(ValueError, match="at least one server"):
        split_targets(" , ")


def test_replicas_become_one_round_robin_address_list() -> None:
    address, options = channel_address(["127.0.0.1:5001", "localhost:5002"])
    assert address == "ipv4:127.0.0.1:5001,127.0.0.1:5002"
    assert ("grpc.lb_policy_name", "round_robin") in options
    assert channel_address(["[::1]:1", "[::1]:2"])[0] == "ipv6:[::1]:1,[::1]:2"
    single, options = channel_address(["dns:///featviz-headless:50051"])
    assert single == "dns:///featviz-headless:50051"
    assert ("grpc.lb_policy_name", "round_robin") in options


@pytest.mark.parametrize(
    ("targets", "pattern"),
    [
        (["127.0.0.1:1", "[::1]:2"], "mix IPv4 and IPv6"),
        (["127.0.0.1:1", "127.0.0.1"], "not HOST:PORT"),
        (["127.0.0.1:1", "no-such-host.invalid:2"], "cannot resolve"),
    ],
)
def test_bad_replica_lists_are_refused(targets: list[str], pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        channel_address(targets)


def test_tls_makes_credentials_and_the_token_goes_in_the_metadata(tmp_path: Path) -> None:
    assert channel_credentials(None) is None
    assert isinstance(channel_credentials(True), grpc.ChannelCredentials)
    with pytest.raises(FileNotFoundError):
        channel_credentials(tmp_path / "missing-ca.pem")
    assert call_metadata("s3cret") == (("authorization", "Bearer s3cret"),)
    assert call_metadata(None) == ()


# ---------------------------------------------------------------------------------------------
# Errors and retries


class FakeRpcError(grpc.RpcError):
    """What grpc raises for a failed call: code, details, the request id in the initial metadata
    (where the featviz server sends it) and the status details in the trailing metadata."""

    def __init__(self, code: grpc.StatusCode, details: str, *details_messages: object) -> None:
        self._code, self._details = code, details
        status = status_pb2.Status(code=code.value[0], message=details)
        for message in details_messages:
            packed = any_pb2.Any()
            packed.Pack(message)  # type: ignore[arg-type]
            status.details.append(packed)
        self._trailers = (("grpc-status-details-bin", status.SerializeToString()),)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple:
        return self._trailers

    def initial_metadata(self) -> tuple:
        return (("x-request-id", "req-42"),)


def test_rpc_errors_become_typed_exceptions_with_their_details() -> None:
    violation = error_details_pb2.BadRequest.FieldViolation(field="size", description="too big")
    bad = from_rpc_error(
        FakeRpcError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "size: too big",
            error_details_pb2.BadRequest(field_violations=[violation]),
        )
    )
    assert isinstance(bad, InvalidArgument)
    assert str(bad) == "INVALID_ARGUMENT: size: too big"
    assert [(v.field, v.description) for v in bad.field_violations] == [("size", "too big")]
    assert bad.request_id == "req-42"

    busy = from_rpc_error(
        FakeRpcError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "queue full",
            error_details_pb2.RetryInfo(
                retry_delay=duration_pb2.Duration(seconds=1, nanos=500_000_000)
            ),
        )
    )
    assert isinstance(busy, Overloaded)
    assert busy.retry_delay == 1.5

    other = from_rpc_error(FakeRpcError(grpc.StatusCode.ABORTED, "aborted"))
    assert type(other) is FeatvizError
    assert other.code == grpc.StatusCode.ABORTED


def test_retry_policy_retries_only_what_says_not_now() -> None:
    policy = RetryPolicy(retries=3, initial_backoff=0.1, max_backoff=0.3)
    busy, down = Overloaded("full", retry_delay=2.0), Unavailable("down")
    assert policy.delay(1, busy) >= 2.0  # type: ignore[operator]  # never sooner than asked
    too_large = Overloaded("does not fit the device's memory even alone")  # no RetryInfo
    assert policy.delay(1, too_large) is None
    assert policy.delay(1, down) is not None  # unreachable, or the replica died: resubmit
    assert policy.delay(1, InvalidArgument("bad")) is None
    assert policy.delay(4, down) is None  # out of retries
    assert policy.delay(1, down, time_left=0.05) is None  # past the deadline
    for attempt, backoff in ((1, 0.1), (2, 0.2), (3, 0.3)):  # doubling, capped, plus jitter
        assert backoff <= policy.delay(attempt, down) <= 1.5 * backoff  # type: ignore[operator]
    with pytest.raises(ValueError, match="multiplier"):
        RetryPolicy(multiplier=0.5)


# ---------------------------------------------------------------------------------------------
# Stream assembly, results and downloads


def _png(width: int = 8, height: int = 6, colour: tuple[int, int, int] = (200, 10, 10)) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _image(index: int, channel: int) -> pb.Image:
    return pb.Image(index=index, channel=channel, seed=0, png=_png(), width=8, height=6)


def _summary() -> pb.MaximizeResponse:
    return pb.MaximizeResponse(
        summary=pb.RunSummary(
            activation=[5.0, 6.0],
            objective=[4.0, 5.0],
            steps=10,
            device="cpu",
            cached=True,
            robust_activation=[4.5, 3.0],
            saturated_fraction=[0.25, 0.0],
            stop_reason=pb.STOP_REASON_CONVERGED,
        )
    )


def test_split_previews_and_final_images_are_joined() -> None:
    assembler = RunAssembler("block1_conv2")
    messages = [
        pb.MaximizeResponse(queued=pb.QueuePosition(position=1)),
        pb.MaximizeResponse(
            progress=pb.Progress(step=5, total_steps=10, objective=[1, 2], previews=[_image(0, 3)])
        ),
        pb.MaximizeResponse(progress=pb.Progress(step=5, total_steps=10, previews=[_image(1, 4)])),
        pb.MaximizeResponse(progress=pb.Progress(step=10, total_steps=10, objective=[3, 4])),
        pb.MaximizeResponse(final_images=pb.FinalImages(images=[_image(1, 4)])),
        pb.MaximizeResponse(final_images=pb.FinalImages(images=[_image(0, 3)])),
        _summary(),
    ]
    updates = [update for message in messages for update in assembler.feed(message)]
    assembler.finish()
    assert [type(u) for u in updates] == [Queued, Progress, Progress, Finished]
    first = updates[1]
    assert isinstance(first, Progress)
    assert (first.step, first.objective, [p.channel for p in first.previews]) == (5, (1, 2), [3, 4])
    finished = updates[-1]
    assert isinstance(finished, Finished)
    result = finished.result
    assert result.channels == (3, 4)
    assert result.activations == (5.0, 6.0)
    assert result.robust_activations == (4.5, 3.0) and result.robustness == (0.9, 0.5)
    assert result.saturated_fractions == (0.25, 0.0)
    assert result.statistics.cached and result.statistics.stop_reason == "converged"
    assert result.to_numpy().shape == (2, 6, 8, 3)
    assert result.to_pil()[0].getpixel((0, 0)) == (200, 10, 10)


def test_a_resubmitted_run_starts_over_and_a_broken_stream_is_an_error() -> None:
    assembler = RunAssembler("block1_conv2")
    assembler.feed(pb.MaximizeResponse(final_images=pb.FinalImages(images=[_image(0, 3)])))
    restart = Retrying(1, 0.1, Unavailable("replica died"), restarted=True)
    assert assembler.feed(restart) == [restart]
    with pytest.raises(FeatvizError, match="without its final summary"):
        assembler.finish()
    assembler.feed(pb.MaximizeResponse(final_images=pb.FinalImages(images=[_image(1, 4)])))
    with pytest.raises(FeatvizError, match="1 final images for 2 activations"):
        assembler.feed(_summary())  # image 0 went with the dead replica


def test_results_save_to_a_file_or_a_directory(tmp_path: Path) -> None:
    assembler = RunAssembler("block1_conv2")
    assembler.feed(
        pb.MaximizeResponse(final_images=pb.FinalImages(images=[_image(0, 3), _image(1, 4)]))
    )
    (finished,) = assembler.feed(_summary())
    assert isinstance(finished, Finished)
    paths = finished.result.save(tmp_path / "out")
    assert [p.name for p in paths] == ["block1_conv2_3.png", "block1_conv2_4.png"]
    assert paths[0].read_bytes() == _png()
    with pytest.raises(ValueError, match="2 images cannot go to one file"):
        finished.result.save(tmp_path / "one.png")


def _chunks(data: bytes, sha256: str) -> list[pb.ExportOnnxResponse]:
    first = pb.ExportOnnxResponse(
        total_bytes=len(data), sha256=sha256, file_name="model.onnx", data=data[:5]
    )
    return [first, pb.ExportOnnxResponse(data=data[5:])]


def test_a_download_appears_only_when_its_sha256_matches(tmp_path: Path) -> None:
    data = b"not really onnx, but bytes all the same"
    seen: list[tuple[int, int]] = []
    with OnnxDownload(tmp_path, lambda done, total: seen.append((done, total))) as download:
        for chunk in _chunks(data, hashlib.sha256(data).hexdigest()):
            download.feed(chunk)
        path, sha256 = download.finish()
    assert path == tmp_path / "model.onnx"
    assert path.read_bytes() == data
    assert sha256 == hashlib.sha256(data).hexdigest()
    assert seen == [(5, len(data)), (len(data), len(data))]

    with pytest.raises(ChecksumMismatch), OnnxDownload(tmp_path / "bad.onnx", None) as download:
        for chunk in _chunks(data, "0" * 64):
            download.feed(chunk)
        download.finish()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # nothing half-written


def test_a_call_that_fails_before_its_first_chunk_raises_its_own_error() -> None:
    with pytest.raises(Unavailable, match="server down"), OnnxDownload(".", None):
        raise Unavailable("server down")


def test_figures_the_server_did_not_report_are_nan_in_the_result_and_none_in_records() -> None:
    assembler = RunAssembler("block1_conv2")
    assembler.feed(
        pb.MaximizeResponse(final_images=pb.FinalImages(images=[_image(0, 3), _image(1, 4)]))
    )
    summary = _summary()
    summary.summary.ClearField("robust_activation")
    summary.summary.ClearField("saturated_fraction")
    (finished,) = assembler.feed(summary)
    assert isinstance(finished, Finished)
    result = finished.result
    for figures in (result.robust_activations, result.robustness, result.saturated_fractions):
        assert len(figures) == 2 and all(math.isnan(value) for value in figures)
    assert robust_activations(result) == [None, None]


# ---------------------------------------------------------------------------------------------
# Progress bar


def test_progress_bar_writes_plain_lines_to_a_log() -> None:
    stream = io.StringIO()
    bar = ProgressBar("block1_conv2 14", stream)
    bar.update(1, 10, "1/10 steps")
    bar.update(2, 10, "2/10 steps")  # too soon after the last line: skipped
    bar.message("queued, position 2")
    bar.update(10, 10, "10/10 steps")  # complete: always drawn
    bar.close()
    assert stream.getvalue().splitlines() == [
        "block1_conv2 14 |##......................| 1/10 steps",
        "block1_conv2 14: queued, position 2",
        "block1_conv2 14 |########################| 10/10 steps",
    ]
