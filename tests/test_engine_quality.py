"""The quality bars at CI sizes (the full-size figures come from bench/engine.py): the canonical
units reach their bars (bench/engine.py's BARS) in fewer steps or pixels, every block1_conv2
channel beats the median natural photo, and dead channels come back."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from featviz_server.engine import Job, Run, recipe, render
from featviz_server.engine.forward import activations
from featviz_server.model import VGG16

BENCH = Path(__file__).resolve().parent.parent / "bench" / "engine.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """bench/engine.py, for its quality bars and natural-photo reference (one definition for
    tests and bench)."""
    spec = importlib.util.spec_from_file_location("bench_engine", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_block1_conv2_channel_14_reaches_its_bar_in_half_the_steps(
    model: VGG16, bench: ModuleType
) -> None:
    result = render(model, Job("block1_conv2", (14,), recipe("fast", size=128, steps=128)))
    assert result.activation[0] >= bench.BARS[("block1_conv2", 14)]  # the bar, set for 256 steps


def test_block5_conv2_channel_410_reaches_its_bar_at_96_px_in_two_thirds_of_the_steps(
    model: VGG16, bench: ModuleType
) -> None:
    result = render(model, Job("block5_conv2", (410,), recipe("fast", size=96, steps=64)))
    assert result.activation[0] >= bench.BARS[("block5_conv2", 410)]


def test_every_block1_conv2_channel_beats_the_median_natural_photo(
    model: VGG16, bench: ModuleType
) -> None:
    size = 32
    fast = recipe("fast", size=size, steps=48)
    result = render(model, Job("block1_conv2", tuple(range(64)), fast))
    natural = bench.natural_activations(model, "block1_conv2", size)
    assert natural.shape[0] >= 100  # enough photos for a median
    medians = natural.median(0).values.numpy()
    assert (np.array(result.activation) > medians).all()
    assert (result.images.reshape(64, -1).std(1) > 20).all()  # none blank


def test_dead_channels_come_back_only_thanks_to_the_redirected_relu(model: VGG16) -> None:
    job = Job("block1_conv2", tuple(range(64)), recipe("fast", size=32, steps=12))
    with torch.no_grad():
        start = activations(model.cut(job.layer), Run(job, model).image())
    peaks = start[torch.arange(64), torch.arange(64)].amax((1, 2))
    dead = tuple(int(c) for c in (peaks == 0).nonzero())
    assert len(dead) >= 2  # a near-grey start leaves several block1 channels at exactly zero

    def revived(redirect_steps: int) -> np.ndarray:
        r = recipe("fast", size=32, steps=12, redirect_relu_steps=redirect_steps)
        return np.array(render(model, Job(job.layer, dead, r)).activation)

    assert (revived(0) == 0).all()
    assert (revived(16) > 50).all()
