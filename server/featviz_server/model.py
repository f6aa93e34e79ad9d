"""The ImageNet VGG16 conv base in PyTorch, under Keras' layer names.

Public input: RGB, float in [0, 1], NCHW. The Caffe preprocessing (RGB -> BGR, x255, minus the
ImageNet mean) is an explicit first module rather than folded into block1_conv1's bias, because
zero padding must see the mean-subtracted image or border activations are wrong.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .architecture import LAYERS, layer_index, layer_named
from .weights import Tensors, Weights

# The public input, as DescribeModel and the ONNX export state it.
CHANNEL_ORDER, LAYOUT = "RGB", "NCHW"
VALUE_MIN, VALUE_MAX = 0.0, 1.0
INPUT = f"{CHANNEL_ORDER} float in [{VALUE_MIN:g}, {VALUE_MAX:g}], {LAYOUT}"
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
PREPROCESSING = (
    f"{CHANNEL_ORDER} [{VALUE_MIN:g},{VALUE_MAX:g}] -> BGR, x255, minus mean {CAFFE_MEAN_BGR} "
    "(Caffe)"
)


class CaffePreprocess(nn.Module):
    """RGB in [0, 1] -> BGR in 0-255 minus the ImageNet mean, as the Caffe weights expect."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1))

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return rgb.flip(1) * 255.0 - self.mean


class ConvReLU(nn.Module):
    """A Keras conv layer: 3x3 convolution, padding 1, then ReLU (its output is post-ReLU)."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x))


class VGG16(nn.Sequential):
    """Preprocessing, then the 13 conv and 5 pool layers as children named like Keras' layers.

    `bf16`: the engine runs forward passes under bf16 autocast (CUDA only; `engine.device.set_up`
    sets it at start-up).
    """

    bf16: bool = False

    def __init__(self) -> None:
        modules: OrderedDict[str, nn.Module] = OrderedDict(preprocess=CaffePreprocess())
        for layer in LAYERS:
            modules[layer.name] = (
                ConvReLU(layer.in_channels, layer.channels)
                if layer.kind == "conv"
                else nn.MaxPool2d(2, 2)
            )
        super().__init__(modules)

    def cut(self, layer: str) -> nn.Sequential:
        """The network up to and including `layer` (sharing this model's modules and mode)."""
        layer_named(layer)  # a ValueError naming an unknown layer
        stop = layer_index(layer) + 2  # + preprocess, inclusive
        return nn.Sequential(OrderedDict(list(self.named_children())[:stop])).train(self.training)

    def load_weights(self, weights: Weights) -> VGG16:
        """Copy verified conv tensors in and freeze every parameter."""
        state = {"preprocess.mean": self.preprocess.mean}
        for name, array in weights.tensors.items():
            layer, part = name.split(".")
            state[f"{layer}.conv.{part}"] = torch.from_numpy(array)
        self.load_state_dict(state, strict=True)
        self.requires_grad_(False)
        return self.eval()

    def tensors(self) -> Tensors:
        """The conv tensors in the canonical form of `weights` (so their sha256 can be checked)."""
        return {
            f"{name}.{part}": getattr(module.conv, part).detach().cpu().numpy()
            for name, module in self.named_children()
            if isinstance(module, ConvReLU)
            for part in ("weight", "bias")
        }


def default_device() -> torch.device:
    """CUDA when present (the deployment runs on GPUs), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(weights: Weights, device: torch.device | str | None = None) -> VGG16:
    """A frozen, eval-mode VGG16 conv base with the given weights on `device`."""
    return VGG16().load_weights(weights).to(device or default_device())
