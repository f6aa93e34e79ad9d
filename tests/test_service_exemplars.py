"""FindExemplars over real gRPC: the scan of a photo directory (progress, an unreadable file
skipped and counted, the cache), exemplars checked against the real VGG16 recomputed here
independently, the default collection of scikit-image photos, and bad requests."""

from __future__ import annotations

import io
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from conftest import TEST_SERVER_ARGS
from PIL import Image
from serverproc import ServerProcess, bad_request, start_server
from skimage import data

import featviz
from featviz.exemplars import ExemplarsAssembler
from featviz.v1 import featviz_pb2 as pb
from featviz.v1 import featviz_pb2_grpc as pb_grpc
from featviz_server.exemplars import (
    Crop,
    EmptyCollection,
    Exemplar,
    Scanner,
    ScanProgress,
    crop_boxes,
    directory,
)
from featviz_server.model import VGG16
from featviz_server.service import messages
from featviz_server.service.exemplar_search import ChannelExemplars

CROP = 64  # px: the exemplar size of every test server


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four photos (one in a subfolder), a corrupt JPEG and a text file."""
    folder = tmp_path_factory.mktemp("photos")
    skimage = Path(data.__file__).parent
    for name in ("chelsea.png", "coffee.png", "rocket.jpg"):
        shutil.copy(skimage / name, folder / name)
    (folder / "more").mkdir()
    shutil.copy(skimage / "camera.png", folder / "more" / "camera.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    (folder / "notes.txt").write_text("not an image, not counted")
    return folder


@pytest.fixture(scope="module")
def photo_server(photos: Path) -> Iterator[ServerProcess]:
    with start_server(*TEST_SERVER_ARGS, "--exemplars-dir", str(photos)) as process:
        yield process


def test_a_scan_streams_progress_skips_an_unreadable_photo_and_is_cached(
    photo_server: ServerProcess,
) -> None:
    updates: list[object] = []
    with featviz.Client(photo_server.target) as client:
        found = client.find_exemplars("block1_conv1", [0, 5], count=3, on_progress=updates.append)
        again = client.find_exemplars("block1_conv1", [5], count=3, on_progress=updates.append)

    progress = [u for u in updates if isinstance(u, featviz.ScanProgress)]
    assert [p.photos_done for p in progress] == [1, 2, 3, 4, 5]  # the first call only
    assert {p.photos_total for p in progress} == {5}
    assert progress[-1].skipped == 1
    assert (found.photos, found.skipped, found.crop_size, found.cached) == (5, 1, CROP, False)
    assert again.cached and again.crops == found.crops > 50
    assert [c.channel for c in found.channels] == [0, 5]
    assert again.channel(5) == found.channel(5)
    for channel in found.channels:
        assert len(channel.top) == len(channel.bottom) == 3
        sources = {e.source for e in channel.top + channel.bottom}
        assert sources <= {"chelsea.png", "coffee.png", "rocket.jpg", "more/camera.png"}
    assert "broken.jpg" in photo_server.log()  # named in the warning


def _crop(photos: Path, source: str, x: int, y: int, side: int) -> np.ndarray:
    with Image.open(photos / source) as photo:
        rgb = photo.convert("RGB")
    return np.asarray(
        rgb.resize((CROP, CROP), Image.Resampling.BICUBIC, box=(x, y, x + side, y + side))
    )


def _means(model: VGG16, layer: str, crops: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(post-ReLU, pre-ReLU) channel means of `layer` on (n, h, w, 3) uint8 crops, (n, c)."""
    network = model.cut(layer)
    x = torch.from_numpy(crops.copy()).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        pre = network[-1].conv(network[:-1](x))
        post = network(x)
    return post.mean((2, 3)), pre.mean((2, 3))


@pytest.mark.parametrize(
    ("layer", "channels"), [("block1_conv2", [14, 0, 33]), ("block3_conv1", [5, 100])]
)
def test_the_top_exemplar_is_the_best_crop_of_the_collection_recomputed_independently(
    photo_server: ServerProcess, photos: Path, model: VGG16, layer: str, channels: list[int]
) -> None:
    with featviz.Client(photo_server.target) as client:
        found = client.find_exemplars(layer, channels, count=4)

    every_crop = []
    for path in sorted(p for p in photos.rglob("*") if p.suffix in (".png", ".jpg")):
        try:
            size = Image.open(path).size
        except OSError:
            continue  # the corrupt JPEG
        source = path.relative_to(photos).as_posix()
        every_crop += [(source, *box) for box in crop_boxes(*size)]
    assert len(every_crop) == found.crops
    post, pre = _means(model, layer, np.stack([_crop(photos, *crop) for crop in every_crop]))

    for channel in channels:
        top, bottom = found.channel(channel).top, found.channel(channel).bottom
        best = top[0]
        pixels = np.asarray(Image.open(io.BytesIO(best.png)).convert("RGB"))
        assert np.array_equal(pixels, _crop(photos, best.source, best.x, best.y, best.side))
        alone = _means(model, layer, pixels[None])[0][0, channel].item()
        assert best.activation == pytest.approx(alone, rel=1e-4)
        assert best.activation == pytest.approx(post[:, channel].max().item(), rel=1e-4)
        assert [e.activation for e in top] == sorted((e.activation for e in top), reverse=True)
        assert bottom[0].pre_activation == pytest.approx(
            pre[:, channel].min().item(), rel=1e-4, abs=1e-3
        )
        assert [e.pre_activation for e in bottom] == sorted(e.pre_activation for e in bottom)
        assert bottom[0].pre_activation < best.pre_activation


def test_by_default_the_photos_bundled_with_scikit_image_are_scanned(server: ServerProcess) -> None:
    with featviz.Client(server.target) as client:
        found = client.find_exemplars("block1_conv1", [3], count=4)
    assert (found.collection, found.photos, found.skipped) == ("scikit-image photos", 18, 0)
    top = found.channel(3).top
    assert len(top) == 4 and all(e.source.startswith("scikit-image/") for e in top)
    assert all(e.width == e.height == CROP for e in top)


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"layer": "block9_conv1", "channels": [0]}, "layer"),
        ({"layer": "block1_conv1", "channels": [64]}, "channels[0]"),
        ({"layer": "block1_conv1", "channels": []}, "channels"),
        ({"layer": "block1_conv1", "channels": [1], "count": 17}, "count"),
    ],
)
def test_bad_exemplar_requests_name_the_field(
    server: ServerProcess, request_fields: dict, field: str
) -> None:
    with server.channel() as channel:
        stub = pb_grpc.FeatureVisualizationServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.FindExemplars(pb.FindExemplarsRequest(**request_fields), timeout=30))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request(caught.value).field_violations[0].field == field


def test_a_channel_whose_crops_exceed_one_message_is_split_and_joined_again() -> None:
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    crop = Crop("noise.png", 0, 0, 256)
    sides = [tuple((Exemplar(crop, float(i), -float(i)), noise) for i in range(16))] * 2
    responses = messages.exemplar_update(ChannelExemplars(7, *sides))

    assert len(responses) > 1 and all(r.ByteSize() < 4 * 1024 * 1024 for r in responses)
    assembler = ExemplarsAssembler("block1_conv1")
    for response in responses:
        assembler.feed(response)
    assembler.feed(pb.FindExemplarsResponse(summary=pb.ExemplarsSummary(collection="noise")))
    (joined,) = assembler.finish().channels
    assert joined.channel == 7
    assert (
        [e.activation for e in joined.top]
        == [e.activation for e in joined.bottom]
        == [float(i) for i in range(16)]
    )


def test_a_collection_without_a_readable_photo_is_refused_by_name(
    model: VGG16, tmp_path: Path
) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "broken.png").write_bytes(b"\x89PNG truncated")
    scanner = Scanner(model, lambda: directory(tmp_path / "photos"), CROP, tmp_path / "c", "w")
    with pytest.raises(EmptyCollection, match=r"photos \(1 files, 1 unreadable\)"):
        scanner.layer("block1_conv1")
    gone = Scanner(model, lambda: directory(tmp_path / "gone"), CROP, tmp_path / "c", "w")
    with pytest.raises(EmptyCollection, match="gone is not a directory"):
        gone.is_cached("block1_conv1")


def test_a_cached_layer_and_its_crops_are_read_while_another_layer_is_being_scanned(
    model: VGG16, photos: Path, tmp_path: Path
) -> None:
    scanner = Scanner(model, lambda: directory(photos), CROP, tmp_path, "w")
    (top, _) = scanner.layer("block1_conv1").exemplars(0, 1)
    scanning, release = threading.Event(), threading.Event()

    def held(progress: ScanProgress) -> None:  # the other scan stays under way meanwhile
        scanning.set()
        release.wait(120)

    with ThreadPoolExecutor(2) as pool:
        other = pool.submit(scanner.layer, "block2_conv1", held)
        try:
            assert scanning.wait(120)
            reading = pool.submit(
                lambda: (scanner.layer("block1_conv1"), scanner.pixels(top[0].crop))
            )
            cached, pixels = reading.result(timeout=30)
            assert not other.done()
        finally:
            release.set()
        assert other.result(timeout=120).layer == "block2_conv1"
    assert cached.layer == "block1_conv1" and pixels.shape == (CROP, CROP, 3)
