"""The ONNX export: valid, one named output per layer, dynamic batch and size, equal to PyTorch
under onnxruntime, built once and cached, rebuilt (to the same bytes) when damaged."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from parity import float32_bound
from skimage import data
from skimage.transform import resize

from featviz_server.architecture import CONV_LAYERS, LAYERS, geometry
from featviz_server.model import VGG16
from featviz_server.onnx_export import EXPORT_FILE, OUTPUT_NAMES, OnnxExport, export_onnx
from featviz_server.weights import WEIGHTS_SHA256, file_sha256


@pytest.fixture(scope="module")
def export(model: VGG16, tmp_path_factory: pytest.TempPathFactory) -> OnnxExport:
    return export_onnx(model, tmp_path_factory.mktemp("onnx_cache"))


@pytest.fixture(scope="module")
def session(export: OnnxExport) -> ort.InferenceSession:
    return ort.InferenceSession(str(export.path), providers=["CPUExecutionProvider"])


def photos(batch: int, height: int, width: int) -> torch.Tensor:
    """scikit-image's cat, resized (and mirrored for a second image): RGB [0, 1] NCHW."""
    cat = resize(data.chelsea(), (height, width), anti_aliasing=True).astype(np.float32)
    images = [cat, cat[:, ::-1]][:batch]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def test_export_is_a_valid_onnx_file_with_its_sha256(export: OnnxExport) -> None:
    onnx.checker.check_model(str(export.path), full_check=True)
    assert export.path.name == EXPORT_FILE
    assert export.size_bytes == export.path.stat().st_size > 58_000_000  # the 14.7M floats
    assert export.sha256 == file_sha256(export.path)
    # No source paths (the exporter's stack traces): the bytes must not depend on the install.
    assert b"featviz_server" not in export.path.read_bytes()


def test_every_layer_is_a_named_output_of_a_dynamic_rgb_input(export: OnnxExport) -> None:
    exported = onnx.load(str(export.path))
    (image,) = exported.graph.input
    dims = [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim]
    assert (image.name, dims) == ("image", ["batch", 3, "height", "width"])
    names = [output.name for output in exported.graph.output]
    assert names == list(OUTPUT_NAMES) == [layer.name for layer in LAYERS]
    assert {layer.name for layer in CONV_LAYERS} | {"block5_pool"} <= set(names)
    metadata = {p.key: p.value for p in exported.metadata_props}
    assert metadata["featviz.weights_sha256"] == WEIGHTS_SHA256


@pytest.mark.parametrize(("batch", "height", "width"), [(1, 64, 64), (2, 40, 72)])
def test_onnxruntime_matches_pytorch(
    model: VGG16, session: ort.InferenceSession, batch: int, height: int, width: int
) -> None:
    images = photos(batch, height, width)
    outputs = session.run(None, {"image": images.numpy()})
    print(f"\nexport vs PyTorch, {batch}x3x{height}x{width}:")
    x = model.preprocess(images)
    with torch.no_grad():
        for shape, actual in zip(geometry(height, width), outputs, strict=True):
            x = model.get_submodule(shape.layer.name)(x)
            assert actual.shape == (
                batch,
                shape.layer.channels,
                shape.output_height,
                shape.output_width,
            )
            error, scale = float(np.abs(actual - x.numpy()).max()), float(x.max())
            print(f"  {shape.layer.name:13} max |diff| {error:.2e}  (values up to {scale:.1f})")
            assert error < float32_bound(scale), shape.layer.name


def test_outputs_are_selectable(session: ort.InferenceSession) -> None:
    (block4_conv2,) = session.run(["block4_conv2"], {"image": photos(1, 32, 48).numpy()})
    assert block4_conv2.shape == (1, 512, 4, 6)


def test_second_call_returns_the_cached_file(model: VGG16, export: OnnxExport) -> None:
    written = export.path.stat().st_mtime_ns
    assert export_onnx(model, export.path.parent) == export
    assert export.path.stat().st_mtime_ns == written


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage",
    [  # a flipped byte keeps the file's size: only its checksum tells
        _flip_a_byte,
        lambda path: path.with_name(f"{path.name}.json").write_text("{not json"),
        Path.unlink,
    ],
    ids=["flipped-byte", "garbled-record", "deleted"],
)
def test_a_damaged_or_deleted_export_is_rebuilt_to_the_same_bytes(
    model: VGG16, export: OnnxExport, tmp_path: Path, damage: Callable[[Path], object]
) -> None:
    for file in export.path.parent.iterdir():
        shutil.copyfile(file, tmp_path / file.name)
    damage(tmp_path / EXPORT_FILE)
    rebuilt = export_onnx(model, tmp_path)
    assert file_sha256(rebuilt.path) == rebuilt.sha256
    assert (rebuilt.sha256, rebuilt.size_bytes) == (
        export.sha256,
        export.size_bytes,
    )  # deterministic
    assert sorted(p.name for p in tmp_path.iterdir()) == [EXPORT_FILE, f"{EXPORT_FILE}.json"]
