"""The cut network's forward pass, with Lucid's redirected ReLU for chosen images, and the target
layer narrowed to the channels the objective reads.

A channel that is zero everywhere on the start image passes no gradient through its ReLU, so
plain ascent never moves it (many block1 channels from a grey start). The redirected ReLU lets
gradient through for an image whose layer would otherwise pass none, but only where it pushes
the pre-activation up. It is chosen per image, so a batch can mix runs at different steps.

Narrowing: a channel objective reads one channel of the target layer per image, so computing the
layer's other channels (and their gradients) is waste; for block1_conv2 it is most of the step.

One image gives the same result alone as inside a batch: PyTorch convolves a lone small CPU input
(batch 1, at most 20,480 elements; `use_mkldnn` in ATen's Convolution.cpp) with its native kernel
instead of oneDNN, and the two differ in the last bits, so such an input is convolved beside a
copy of itself, whose output is dropped (cheap: the input is small).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..model import ConvReLU

NATIVE_CONV_MAX_ELEMENTS = 20480  # ATen: a lone CPU input up to this size skips oneDNN


class _RedirectedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, redirect: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, redirect)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        x, redirect = ctx.saved_tensors
        relu_grad = torch.ops.aten.threshold_backward(grad, x, 0.0)  # exactly ReLU's gradient
        # Does any gradient pass this image's ReLU? (a max and a min read the gradient twice as
        # fast as any(), which converts it to booleans first)
        flat = relu_grad.flatten(1)
        passes = (flat.amax(1) > 0) | (flat.amin(1) < 0)
        blocked = (redirect & ~passes).nonzero().squeeze(1)
        if len(blocked):
            # Loss gradients (minimized): grad > 0 asks to lower x; never lower a negative x.
            g = grad[blocked]
            relu_grad[blocked] = torch.where((x[blocked] < 0) & (g > 0), 0.0, g)
        return relu_grad, None


def activations(
    network: nn.Sequential, images: torch.Tensor, redirect: torch.Tensor | None = None
) -> torch.Tensor:
    """The cut `network`'s output for `images` (`VGG16.cut(layer)`, built once per run, not per
    step); `redirect` (n,) bool picks images with redirected ReLUs."""
    return collect(network, images, redirect)[0]


def collect(
    network: nn.Sequential,
    images: torch.Tensor,
    redirect: torch.Tensor | None = None,
    keep: Collection[str] = (),
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`activations`, and the outputs of the layers named in `keep` on the way (an objective
    may read several layers: one forward pass gives them all)."""
    x, kept = images, {}
    for name, module in network.named_children():
        x = apply_layer(module, x, redirect)
        if name in keep:
            kept[name] = x
    return x, kept


def apply_layer(
    module: nn.Module,
    x: torch.Tensor,
    redirect: torch.Tensor | None = None,
    channels: Sequence[int] | int | None = None,
) -> torch.Tensor:
    """One module of the network; for a conv layer, `channels` (one per image, or one for every
    image) narrows its output to each image's own channel, (n, 1, h, w)."""
    if not isinstance(module, ConvReLU):
        return module(x)
    conv = module.conv
    if channels is None:
        y = _convolve(x, conv.weight, conv.bias)
    elif isinstance(channels, int):
        y = _convolve_channel(x, conv, channels)
    else:
        y = torch.cat(
            [
                _convolve_channel(image, conv, c)
                for image, c in zip(x.split(1), channels, strict=True)
            ]
        )
    return module.relu(y) if redirect is None else _RedirectedReLU.apply(y, redirect)


def _convolve_channel(x: torch.Tensor, conv: nn.Conv2d, channel: int) -> torch.Tensor:
    """Only output `channel` of `conv`, (n, 1, h, w)."""
    return _convolve(x, conv.weight[channel : channel + 1], conv.bias[channel : channel + 1])


def _convolve(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A Keras 3x3 'same' convolution, through oneDNN even for a lone small CPU image."""
    if x.device.type == "cpu" and len(x) == 1 and x.numel() <= NATIVE_CONV_MAX_ELEMENTS:
        return F.conv2d(x.expand(2, -1, -1, -1), weight, bias, padding=1)[:1]
    return F.conv2d(x, weight, bias, padding=1)
