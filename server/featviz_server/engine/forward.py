"""The cut network's forward pass, with Lucid's redirected ReLU for chosen images.

A channel that is zero everywhere on the start image passes no gradient through its ReLU, so
plain ascent never moves it (many block1 channels from a grey start). The redirected ReLU lets
gradient through for an image whose layer would otherwise pass none, but only where it pushes
the pre-activation up. It is chosen per image, so a batch can mix runs at different steps.

One image gives the same result alone as inside a batch: PyTorch convolves a lone small CPU input
(batch 1, at most 20,480 elements; `use_mkldnn` in ATen's Convolution.cpp) with its native kernel
instead of oneDNN, and the two differ in the last bits, so such an input is convolved beside a
copy of itself, whose output is dropped (cheap: the input is small).
"""

from __future__ import annotations

import torch
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
        peak = torch.linalg.vector_norm(relu_grad.flatten(1), ord=float("inf"), dim=1)
        blocked = (redirect & (peak == 0)).nonzero().squeeze(1)
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
    x = images
    for module in network:
        if not isinstance(module, ConvReLU):
            x = module(x)
        elif redirect is None:
            x = module.relu(_convolve(module.conv, x))
        else:
            x = _RedirectedReLU.apply(_convolve(module.conv, x), redirect)
    return x


def _convolve(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """`conv(x)`, through oneDNN even for a lone small CPU image (see the module docstring)."""
    if x.device.type == "cpu" and len(x) == 1 and x.numel() <= NATIVE_CONV_MAX_ELEMENTS:
        return conv(x.expand(2, -1, -1, -1))[:1]
    return conv(x)
