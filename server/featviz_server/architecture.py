"""The VGG16 conv base as data: layer names, shapes and receptive fields, and the rules that a
layer name, a channel or a unit position must follow.

Kept free of torch so that validation and DescribeModel can reason about the network
without building it, and so that the model, the weight loaders, the ONNX export, the engine and
the service all read one table and check one set of rules.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from .echo import echo

MODEL_NAME = "vgg16"
# (block, number of convs, output channels), as in Simonyan & Zisserman's configuration D.
_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))
MIN_INPUT_SIZE = 32  # five 2x2 pools: anything smaller leaves block5_pool empty

LayerKind = Literal["conv", "pool"]


@dataclass(frozen=True)
class Layer:
    """One layer of the conv base; a conv layer's output is post-ReLU (as in Keras)."""

    name: str
    kind: LayerKind
    in_channels: int
    channels: int

    @property
    def parameters(self) -> int:
        return self.channels * (self.in_channels * 9 + 1) if self.kind == "conv" else 0


def _build_layers() -> tuple[Layer, ...]:
    layers: list[Layer] = []
    in_channels = 3
    for block, convs, channels in _BLOCKS:
        for i in range(1, convs + 1):
            layers.append(Layer(f"block{block}_conv{i}", "conv", in_channels, channels))
            in_channels = channels
        layers.append(Layer(f"block{block}_pool", "pool", channels, channels))
    return tuple(layers)


LAYERS: tuple[Layer, ...] = _build_layers()
LAYERS_BY_NAME: dict[str, Layer] = {layer.name: layer for layer in LAYERS}
CONV_LAYERS: tuple[Layer, ...] = tuple(layer for layer in LAYERS if layer.kind == "conv")
TOTAL_PARAMETERS: int = sum(layer.parameters for layer in LAYERS)


@dataclass(frozen=True)
class LayerGeometry:
    """Where a layer's units sit in input pixels, for one input size."""

    layer: Layer
    output_height: int
    output_width: int
    receptive_field: int
    stride: int

    @property
    def centre(self) -> tuple[int, int]:
        """The (x, y) of the unit at the centre of the output: a neuron's default position."""
        return self.output_width // 2, self.output_height // 2


def geometry(height: int, width: int | None = None) -> list[LayerGeometry]:
    """Output shape, receptive field and stride of every layer for an input of this size.

    Convs are 3x3 with padding 1 (shape kept, receptive field grows by 2 strides); pools are
    2x2 with stride 2 and floor division, as in Keras' "valid" pooling.
    """
    width = height if width is None else width
    result = []
    field, stride = 1, 1
    for layer in LAYERS:
        if layer.kind == "conv":
            field += 2 * stride
        else:
            field += stride
            stride *= 2
            height, width = height // 2, width // 2
        result.append(LayerGeometry(layer, height, width, field, stride))
    return result


def layer_geometry(name: str, height: int, width: int | None = None) -> LayerGeometry:
    """`geometry` of one layer; KeyError for unknown names."""
    return geometry(height, width)[layer_index(name)]


def multiply_adds(name: str) -> int:
    """Multiply-adds per input pixel of the network up to and including layer `name` (the cost
    of a forward pass to it, in proportion to its input's area); KeyError for unknown names."""
    upto = geometry(MIN_INPUT_SIZE)[: layer_index(name) + 1]  # strides do not depend on size
    convs = [g for g in upto if g.layer.kind == "conv"]
    return sum(9 * g.layer.in_channels * g.layer.channels // g.stride**2 for g in convs)


def layer_index(name: str) -> int:
    """Position of a layer in forward order; KeyError for unknown names."""
    return LAYERS.index(LAYERS_BY_NAME[name])


def layer_named(name: str, field: str = "layer") -> Layer:
    """The layer called `name`; a ValueError "`field`: ..." listing the valid names otherwise."""
    layer = LAYERS_BY_NAME.get(name)
    if layer is None:
        names = ", ".join(LAYERS_BY_NAME)
        raise ValueError(f"{field}: unknown layer {echo(name)}; valid layers: {names}")
    return layer


def check_channel(layer: Layer, channel: int, field: str) -> None:
    """A ValueError "`field`: ..." unless `channel` is one of `layer`'s (0-based)."""
    if not 0 <= channel < layer.channels:
        raise ValueError(
            f"{field}: {channel} is not a {layer.name} channel (0..{layer.channels - 1})"
        )


def check_channels(layer: Layer, channels: Iterable[int], field: str = "channels") -> None:
    """`check_channel` for each of `channels`, naming the first bad one "`field`[i]"."""
    for i, channel in enumerate(channels):
        check_channel(layer, channel, f"{field}[{i}]")


def check_position(layer: Layer, position: tuple[int, int], size: int, field: str) -> None:
    """A ValueError "`field`_x: ..." (or _y) unless the (x, y) unit lies inside `layer`'s output
    for `size`-pixel images."""
    shape = layer_geometry(layer.name, size)
    sides = (shape.output_width, shape.output_height)
    for axis, value, side in zip("xy", position, sides, strict=True):
        if not 0 <= value < side:
            raise ValueError(
                f"{field}_{axis}: {value} is outside 0..{side - 1} "
                f"({layer.name} is {shape.output_width}x{shape.output_height} at {size} px)"
            )
