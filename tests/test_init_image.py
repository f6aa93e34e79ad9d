"""Starting from a photo (feature accentuation): the start image is the photo, fitted to the size;
the keep-close weight keeps the result recognisable, without it the image drifts; a bad picture
is refused naming the field. Through the engine, the SDK and the CLI."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image, ImageOps
from serverproc import ServerProcess, bad_request
from skimage import data
from test_cli import _rows, featviz

import featviz as sdk
from featviz.v1 import featviz_pb2 as pb
from featviz.v1 import featviz_pb2_grpc as pb_grpc
from featviz_server import engine
from featviz_server.model import VGG16


def encoded(array: np.ndarray, format: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format)
    return buffer.getvalue()


CAT = data.chelsea()  # (300, 451, 3): not square, not the image size
CAT_JPEG = encoded(CAT, "JPEG")


def fitted(size: int) -> np.ndarray:
    """The cat as the server fits it: shorter side scaled to `size`, centre-cropped."""
    picture = Image.fromarray(CAT)
    return np.asarray(ImageOps.fit(picture, (size, size), Image.Resampling.LANCZOS))


def distance(images: np.ndarray, picture: np.ndarray) -> float:
    """Mean absolute difference in 8-bit levels."""
    return float(np.abs(images.astype(float) - picture.astype(float)).mean())


@pytest.mark.parametrize("preset", ["fast", "classic"])
def test_the_start_image_is_the_picture(model: VGG16, preset: str) -> None:
    size = 48
    picture = fitted(size)
    start_recipe = engine.recipe(preset, size=size, steps=4)
    if preset == "classic":  # its display standardizes: compare what the network sees
        start_recipe = engine.recipe(preset, size=size, steps=4, display="clip")
    init = engine.InitImage(picture.tobytes())
    run = engine.Run(engine.Job("block3_conv1", (11,), start_recipe, init=init), model)
    start = run.result().images[0]
    noise = 10 if preset == "classic" else 0  # the classic start adds U(0, 20) levels
    assert distance(start, picture) < noise + 2


@pytest.fixture
def client(server: ServerProcess) -> Iterator[sdk.Client]:
    with sdk.Client(server.target) as client:
        yield client


def test_keep_close_keeps_the_photo_recognisable_and_without_it_the_image_drifts(
    client: sdk.Client,
) -> None:
    common = {"size": 64, "steps": 24, "init": CAT_JPEG}
    drifted = client.maximize("block3_conv1", 11, keep_close=0.0, **common).to_numpy()[0]
    kept = client.maximize("block3_conv1", 11, keep_close=10.0, **common).to_numpy()[0]
    picture = fitted(64)
    assert distance(kept, picture) < 12 < 40 < distance(drifted, picture)
    correlation = np.corrcoef(kept.ravel().astype(float), picture.ravel().astype(float))[0, 1]
    assert correlation > 0.9


def test_the_cli_starts_from_a_photo_file(server: ServerProcess, tmp_path: Path) -> None:
    photo = tmp_path / "cat.jpg"
    photo.write_bytes(CAT_JPEG)
    out = tmp_path / "cat_12.png"
    run = featviz(
        "maximize", "block3_conv1:11", "--init", str(photo), "--keep-close", "10", "--size",
        "48", "--steps", "8", "-q", "-o", str(out), target=server.target,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert _rows(run.stdout)[0]["file"] == str(out)
    assert distance(np.asarray(Image.open(out)), fitted(48)) < 12

    missing = featviz("maximize", "block3_conv1:11", "--init", str(tmp_path / "nope.jpg"))
    assert missing.returncode == 2  # a usage error, before any call
    assert "init: cannot read" in missing.stderr and "nope.jpg" in missing.stderr


@pytest.fixture
def stub(server: ServerProcess) -> Iterator[pb_grpc.FeatureVisualizationServiceStub]:
    with server.channel() as channel:
        yield pb_grpc.FeatureVisualizationServiceStub(channel)


@pytest.mark.parametrize(
    ("init", "field", "detail"),
    [
        (pb.InitImage(data=b"not a picture"), "init_image.data", "is not a PNG or JPEG"),
        (
            pb.InitImage(keep_close=9),
            "init_image.data",
            "is empty; give a PNG or JPEG picture (keep",
        ),
        (pb.InitImage(data=encoded(CAT, "GIF")), "init_image.data", "is GIF; give a PNG"),
        (pb.InitImage(data=CAT_JPEG[: len(CAT_JPEG) // 3]), "init_image.data", "cannot be"),
        (
            pb.InitImage(data=encoded(np.zeros((8, 5000, 3), np.uint8), "PNG")),
            "init_image.data",
            "is 5000x8 px; at most 4096 a side",
        ),
        (pb.InitImage(data=b"x" * 3_500_001), "init_image.data", "at most 3500000 bytes"),
        (pb.InitImage(data=CAT_JPEG, keep_close=float("nan")), "init_image.keep_close", "nan"),
        (pb.InitImage(data=CAT_JPEG, keep_close=-1), "init_image.keep_close", "0.0..1000.0"),
    ],
)
def test_a_bad_picture_is_refused_naming_the_field(stub, init, field, detail) -> None:
    request = pb.MaximizeRequest(
        layer="block1_conv1", channels=[1], size=40, steps=2, init_image=init
    )
    with pytest.raises(grpc.RpcError) as caught:
        next(stub.Maximize(request, timeout=30))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    (violation,) = bad_request(caught.value).field_violations
    assert violation.field == field and detail in violation.description
    assert "object at 0x" not in violation.description  # no Python repr leaks out
