"""The robust activation and the saturated share, pinned on fixed images against a second,
written-out implementation of their definition (docs/engine.md), and carried by every result."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage import data

from featviz_server.engine import Job, Run, recipe, render
from featviz_server.engine.forward import activations
from featviz_server.engine.measures import robust_activation, saturated_fraction, views
from featviz_server.engine.objectives import Channel, Neuron
from featviz_server.model import VGG16

SIZE = 64


def written_out_views() -> np.ndarray:
    """(32, 4): dx, dy in pixels, scale, degrees; numpy's PCG64 seeded 2017, U(-1, 1) x 4 each."""
    u = np.random.default_rng(2017).uniform(-1.0, 1.0, size=(32, 4))
    return np.stack([8 * u[:, 0], 8 * u[:, 1], 1.0 + 0.1 * u[:, 2], 10 * u[:, 3]], axis=1)


def reflect(coordinate: np.ndarray, size: int) -> np.ndarray:
    """Mirror a pixel-index coordinate at the image's outer edges (-0.5 and size - 0.5)."""
    folded = np.mod(coordinate + 0.5, 2 * size)
    folded = np.where(folded > size, 2 * size - folded, folded) - 0.5
    return np.clip(folded, 0, size - 1)


def written_out_view(image: np.ndarray, dx: float, dy: float, scale: float, degrees: float):
    """(h, w, 3) float image -> its view: output pixel centre p (from the image centre, y down)
    shows the image at q = R(-a) p / scale - (dx, dy), bilinearly, mirrored at the borders."""
    size = image.shape[0]
    a = math.radians(degrees)
    centres = np.arange(size) + 0.5 - size / 2
    px, py = np.meshgrid(centres, centres)  # px varies along columns
    qx = (math.cos(a) * px - math.sin(a) * py) / scale - dx
    qy = (math.sin(a) * px + math.cos(a) * py) / scale - dy
    u = reflect(qx + size / 2 - 0.5, size)
    v = reflect(qy + size / 2 - 0.5, size)
    x0, y0 = np.floor(u).astype(int), np.floor(v).astype(int)
    x1, y1 = np.minimum(x0 + 1, size - 1), np.minimum(y0 + 1, size - 1)
    fx, fy = (u - x0)[..., None], (v - y0)[..., None]
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    """Two fixed 8-bit photos, (2, SIZE, SIZE, 3): an astronaut's face and a cat's."""
    astronaut = data.astronaut()[40:232:3, 150:342:3]
    cat = data.chelsea()[50:242:3, 100:292:3]
    return np.ascontiguousarray(np.stack([astronaut, cat]))


def test_the_views_are_the_documented_fixed_draws() -> None:
    got = np.array([[v.dx, v.dy, v.scale, v.degrees] for v in views()])
    np.testing.assert_allclose(got, written_out_views(), rtol=1e-12)
    assert got[:, :2].max() <= 8 and got[:, :2].min() >= -8
    assert got[:, 2].min() >= 0.9 and got[:, 2].max() <= 1.1


def test_robust_activation_is_the_mean_over_the_written_out_views(
    model: VGG16, photos: np.ndarray
) -> None:
    layer, channels = "block2_conv1", (5, 77)
    network = model.cut(layer)
    expected = np.zeros(2)
    for dx, dy, scale, degrees in written_out_views():
        seen = np.stack(
            [written_out_view(p.astype(np.float64) / 255, dx, dy, scale, degrees) for p in photos]
        )
        batch = torch.from_numpy(seen).permute(0, 3, 1, 2).float()
        with torch.no_grad():
            out = network(batch)
        expected += [out[i, c].mean().item() for i, c in enumerate(channels)]
    expected /= 32
    pixels = torch.from_numpy(photos).permute(0, 3, 1, 2)
    term = Channel(layer, channels)
    got = robust_activation(lambda x, _: {layer: activations(network, x)}, pixels, term)
    np.testing.assert_allclose(got.numpy(), expected, rtol=2e-4)
    plain = term({layer: activations(network, pixels.float() / 255)})
    assert ((got < plain) & (got > 0.5 * plain)).all()  # photos lose a little, not everything


def test_robust_activation_takes_any_per_image_term(model: VGG16, photos: np.ndarray) -> None:
    network = model.cut("block2_conv1")
    pixels = torch.from_numpy(photos).permute(0, 3, 1, 2)

    def measure(term):
        return robust_activation(
            lambda x, _: {"block2_conv1": activations(network, x)}, pixels, term
        )

    channel = Channel("block2_conv1", (5, 77))
    neuron = Neuron("block2_conv1", (5, 77), 10, 20)
    combined = measure(channel - 0.5 * neuron)
    torch.testing.assert_close(combined, measure(channel) - 0.5 * measure(neuron))


def test_a_run_measures_only_each_images_channel_and_gets_the_whole_layers_value(
    model: VGG16, photos: np.ndarray
) -> None:
    run = Run(Job("block1_conv2", (14, 3), recipe("fast", size=SIZE)), model)
    assert run.target_channels == [14, 3]  # the CPU narrows the cut layer
    pixels = torch.from_numpy(photos).permute(0, 3, 1, 2)
    narrowed = run.robust_activation(pixels)
    whole = robust_activation(lambda x, _: run.read(x), pixels, run.unit)
    assert run.read(torch.rand(4, 3, SIZE, SIZE), 0)["block1_conv2"].shape[1] == 1  # 1 of 64
    torch.testing.assert_close(narrowed, whole, rtol=1e-5, atol=0)


def test_saturated_fraction_counts_values_at_0_or_255(photos: np.ndarray) -> None:
    pixels = photos.copy()
    pixels[0, :8] = 255  # 8 of 64 rows, every channel
    pixels[1, :, :4, 0] = 0  # 4 of 64 columns, one channel of three
    expected = [np.isin(p, (0, 255)).mean() for p in pixels]
    got = saturated_fraction(torch.from_numpy(pixels).permute(0, 3, 1, 2))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
    assert got[0] >= 8 / 64 and got[1] >= 4 / 64 / 3


def test_every_result_carries_both_measures_of_its_8_bit_images(model: VGG16) -> None:
    result = render(model, Job("block2_conv1", (3, 5), recipe("fast", size=40, steps=4), seed=1))
    network = model.cut("block2_conv1")
    pixels = torch.from_numpy(result.images).permute(0, 3, 1, 2)
    robust = robust_activation(
        lambda x, _: {"block2_conv1": activations(network, x)},
        pixels,
        Channel("block2_conv1", (3, 5)),
    )
    assert result.robust_activation == pytest.approx(robust.tolist(), rel=1e-5)
    assert result.saturated_fraction == pytest.approx(saturated_fraction(pixels).tolist())
    assert result.stop_reason == "step_limit"
