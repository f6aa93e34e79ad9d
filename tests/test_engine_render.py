"""Run / advance / render: determinism, batch independence, progress, cancellation, results,
presets and validation, and the classic preset against Chollet's formula step for step."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch

from featviz_server.engine import (
    DEFAULT_PRESET,
    PRESETS,
    Cancelled,
    Job,
    Objective,
    Progress,
    Run,
    Transforms,
    advance,
    recipe,
    render,
)
from featviz_server.model import VGG16

SMALL = {"size": 40, "steps": 6}
# The module, which the package's `render` (the function) hides.
render_module = importlib.import_module("featviz_server.engine.render")


def small_job(channels: tuple[int, ...] = (3, 5), **fields: object) -> Job:
    defaults: dict[str, object] = {"layer": "block2_conv1", "channels": channels, "seed": 1}
    defaults.update(fields)
    defaults.setdefault("recipe", recipe("fast", **SMALL))
    return Job(**defaults)  # type: ignore[arg-type]


def test_the_same_job_gives_the_same_images(model: VGG16) -> None:
    first, second = render(model, small_job()), render(model, small_job())
    assert np.array_equal(first.images, second.images)
    assert first.objective == second.objective


def test_a_job_is_bitwise_the_same_alone_or_batched_with_other_runs(model: VGG16) -> None:
    """Runs of different jobs, presets, objectives and steps share each forward/backward; `mine`
    is one image, which alone is a batch of one (another convolution kernel, unless paired)."""
    mine = small_job(channels=(3,), recipe=recipe("fast", size=40, steps=8, redirect_relu_steps=3))
    lucid_on_fast_canvas = recipe("lucid", **SMALL, transforms=Transforms(pad=0))
    other = small_job(
        channels=(7,),
        seed=9,
        images_per_channel=2,
        recipe=lucid_on_fast_canvas,
        objective=Objective(diversity=5.0),
    )
    late = small_job(channels=(1, 2, 3), seed=4, objective=Objective(kind="neuron", negate=True))
    alone = render(model, mine)

    runs = {"mine": Run(mine, model), "other": Run(other, model)}
    advance([runs["mine"]])  # mine starts earlier: the batch mixes steps (and redirects)
    runs["late"] = Run(late, model)
    while not runs["mine"].done:
        advance([run for run in runs.values() if not run.done])

    together = runs["mine"].result()
    assert np.array_equal(together.images, alone.images)
    assert together.objective == alone.objective and together.activation == alone.activation
    assert np.array_equal(runs["late"].result().images, render(model, late).images)


def test_a_run_that_stops_early_leaves_the_batch_with_the_images_it_has_alone(
    model: VGG16,
) -> None:
    early = small_job(channels=(3,), recipe=recipe("fast", size=40, steps=80, stop_window=4))
    alone = render(model, early)
    assert alone.stop_reason == "converged" and alone.steps < 80

    to_the_cap = small_job(recipe=recipe("fast", size=40, steps=80, stop_window=0))
    runs = [Run(early, model), Run(to_the_cap, model)]
    while not runs[0].done:
        advance([run for run in runs if not run.done])
    together = runs[0].result()
    assert (together.steps, together.stop_reason) == (alone.steps, "converged")
    assert np.array_equal(together.images, alone.images)
    assert together.robust_activation == alone.robust_activation
    assert not runs[1].done


def test_progress_every_k_steps_carries_images_and_objectives(model: VGG16) -> None:
    updates: list[Progress] = []
    result = render(model, small_job(), on_progress=updates.append, progress_every=2)
    assert [p.step for p in updates] == [2, 4, 6]
    assert all(p.total_steps == 6 and len(p.objective) == 2 for p in updates)
    assert updates[-1].images.shape == (2, 40, 40, 3) and updates[-1].images.dtype == np.uint8
    assert np.array_equal(updates[-1].images, result.images)


def test_cancel_stops_within_one_step(model: VGG16) -> None:
    cancel = threading.Event()
    seen: list[int] = []

    def on_progress(progress: Progress) -> None:
        seen.append(progress.step)
        if progress.step == 3:
            cancel.set()

    with pytest.raises(Cancelled):
        render(model, small_job(), on_progress=on_progress, progress_every=1, cancel=cancel)
    assert seen == [1, 2, 3]


def test_a_cancelled_flag_set_before_the_start_runs_no_step(model: VGG16) -> None:
    cancel = threading.Event()
    cancel.set()
    seen: list[Progress] = []
    with pytest.raises(Cancelled, match="step 0"):
        render(model, small_job(), on_progress=seen.append, progress_every=1, cancel=cancel)
    assert seen == []


def test_result_activation_is_measured_on_the_8_bit_image(model: VGG16) -> None:
    result = render(model, small_job(), return_float=True)
    assert result.images.shape == (2, 40, 40, 3) and result.images.dtype == np.uint8
    assert result.steps == 6 and result.device == "cpu" and result.duration_seconds > 0
    floats = result.float_images
    assert floats is not None and floats.min() >= 0 and floats.max() <= 1
    assert np.array_equal(np.round(floats * 255).astype(np.uint8), result.images)
    pixels = torch.from_numpy(result.images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        out = model.cut("block2_conv1")(pixels)
    assert result.activation == pytest.approx([out[0, 3].mean().item(), out[1, 5].mean().item()])
    assert render(model, small_job()).float_images is None


def test_advance_refuses_runs_that_cannot_share_a_batch(model: VGG16) -> None:
    a = Run(small_job(), model)
    b = Run(small_job(layer="block1_conv2"), model)
    with pytest.raises(ValueError, match="batch_key"):
        advance([a, b])
    done = Run(small_job(recipe=recipe("fast", size=40, steps=1)), model)
    advance([done])
    with pytest.raises(ValueError, match="finished"):
        advance([done])


def test_transforms_can_end_early_which_changes_the_canvas(model: VGG16) -> None:
    run = Run(small_job(recipe=recipe("lucid", size=40, steps=4, transforms_until=0.5)), model)
    keys = []
    while not run.done:
        keys.append(run.batch_key)
        advance([run])
    assert [key[1] for key in keys] == [64, 64, 40, 40]


def test_learning_rate_decays_to_zero_with_the_cosine_schedule(model: VGG16) -> None:
    cosine = recipe("fast", size=40, steps=4, learning_rate=0.4, learning_rate_decay="cosine")
    run = Run(small_job(recipe=cosine), model)
    rates = []
    while not run.done:
        advance([run])
        rates.append(run.optimizer.param_groups[0]["lr"])
    assert rates == pytest.approx(
        [0.4, 0.4 * 0.5 * (1 + 0.5**0.5), 0.2, 0.4 * 0.5 * (1 - 0.5**0.5)]
    )


# --- the classic preset ------------------------------------------------------------------------


def chollet(
    model: VGG16, layer: str, channel: int, seed: int, size: int, steps: int
) -> tuple[list[torch.Tensor], np.ndarray]:
    """Chollet's Keras-blog method, written out: grey 128 + U(0, 20) in 0-255 units, ascent on
    the channel mean with the gradient over its RMS (+1e-5), step 1; our network's public input
    is [0, 1], so it sees img / 255. Returns the image after every step and the deprocessed one."""
    generator = torch.Generator().manual_seed(seed)
    img = (torch.rand((3, size, size), generator=generator) * 20 + 128.0).unsqueeze(0)
    network = model.cut(layer)
    history = []
    for _ in range(steps):
        img = img.detach().requires_grad_(True)
        loss = network(img / 255.0)[:, channel].mean()
        (grads,) = torch.autograd.grad(loss, img)
        grads = grads / (torch.sqrt(torch.mean(grads**2)) + 1e-5)
        img = img + 1.0 * grads
        history.append(img.detach())
    x = img.detach()[0].permute(1, 2, 0).numpy()
    x = (x - x.mean()) / (x.std() + 1e-5) * 0.1 + 0.5
    x = np.clip(x, 0, 1) * 255
    return history, np.clip(x, 0, 255).astype("uint8")


def test_classic_preset_is_chollets_formula_step_for_step(model: VGG16) -> None:
    # The preset's own 128 px: at 48 px the written-out loop's lone image would be convolved by
    # ATen's native kernel, which the engine avoids (forward._convolve), last bits apart.
    job = Job("block3_conv1", (17,), recipe("classic", steps=5), seed=3)
    history, deprocessed = chollet(model, "block3_conv1", 17, seed=3, size=128, steps=5)
    run = Run(job, model)
    for expected in history:
        advance([run])
        assert torch.equal(run.image.tensor.detach(), expected)
    image = run.result().images[0]
    # numpy's float32 mean/std sum in another order than torch's: a pixel may differ by one level
    assert np.abs(image.astype(int) - deprocessed.astype(int)).max() <= 1
    assert (image == deprocessed).mean() > 0.99


def test_the_classic_preset_is_chollets_recipe() -> None:
    classic = PRESETS["classic"]
    assert (classic.size, classic.steps, classic.learning_rate) == (128, 40, 1.0)
    assert classic.transforms is None and classic.optimizer == "normalized_ascent"


# --- presets and validation --------------------------------------------------------------------


def test_presets_are_named_and_requests_override_their_fields() -> None:
    assert set(PRESETS) == {"classic", "lucid", "fast"} and DEFAULT_PRESET == "fast"
    lucid = recipe("lucid")
    assert (lucid.steps, lucid.learning_rate, lucid.parameterization) == (512, 0.05, "fourier")
    assert lucid.transforms == Transforms(12, 8, 0.9, 1.1, 10.0, 4)
    assert recipe("fast", steps=9, l1=0.5).steps == 9
    fast = recipe("fast")  # robust views to the end, and a cap on steps that it rarely needs
    assert fast.transforms_until == 1.0 and fast.transforms and fast.transforms.blur > 0
    assert fast.stop_window > 0 and lucid.stop_window == 0 and recipe("classic").stop_window == 0


def test_the_default_spends_the_same_compute_on_every_layer_up_to_twice_the_steps() -> None:
    steps = {name: recipe("fast", layer=name).steps for name in ("block5_conv3", "block5_pool")}
    assert steps == {"block5_conv3": 96, "block5_pool": 96}  # the budget's own layer
    # block4_conv1's steps cost 204480 / 305856 of block5_conv3's multiply-adds per pixel.
    assert recipe("fast", layer="block4_conv1").steps == round(96 * 305856 / 204480) == 144
    assert recipe("fast", layer="block1_conv2").steps == 192  # 7.9x cheaper, at most twice
    assert recipe("fast", layer="block1_conv2", steps=40).steps == 40  # a given count is kept
    assert recipe("fast", {"max_steps": 150}, layer="block1_conv2").steps == 150
    assert recipe("lucid", layer="block1_conv2").steps == recipe("lucid").steps == 512


@pytest.mark.parametrize(
    ("preset", "overrides", "field"),
    [
        ("nope", {}, "preset"),
        ("fast", {"colour": True}, "colour"),
        ("fast", {"learning_rate": float("nan")}, "learning_rate"),
        ("fast", {"l2": -1.0}, "l2"),
        ("fast", {"steps": -1}, "steps"),
        ("fast", {"transforms_until": 2.0}, "transforms_until"),
        ("fast", {"stop_window": -1}, "stop_window"),
        ("fast", {"stop_tolerance": float("inf")}, "stop_tolerance"),
        ("fast", {"transforms": Transforms(blur=-1.0)}, "transforms.blur"),
        ("fast", {"value_range": "raw"}, "value_range"),
        ("fast", {"optimizer": "sgd"}, "optimizer"),
        ("fast", {"transforms": Transforms(scale_min=0)}, "transforms"),
    ],
)
def test_bad_recipes_name_the_field(preset: str, overrides: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}"):
        recipe(preset, **overrides)


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"layer": "block9_conv1"}, "layer"),
        ({"channels": ()}, "channels"),
        ({"channels": (128,)}, "channels"),
        ({"images_per_channel": 0}, "images_per_channel"),
        ({"recipe": dataclasses.replace(recipe("fast"), size=16)}, "size"),
        ({"objective": Objective(kind="neuron", neuron=(0, 20))}, "objective.neuron"),
    ],
)
def test_bad_jobs_name_the_field(model: VGG16, fields: dict, name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name}"):
        Run(small_job(**fields), model)


def test_only_the_network_runs_under_bf16_autocast(
    model: VGG16, monkeypatch: pytest.MonkeyPatch
) -> None:
    inside: list[bool] = []  # whether autocast is on, at each call below
    network, views = [], []

    @contextlib.contextmanager
    def recording(model: VGG16, device: torch.device) -> Iterator[None]:
        inside.append(True)
        try:
            yield
        finally:
            inside.pop()

    def spy(calls: list[bool], function: Callable[..., Any]) -> Callable[..., Any]:
        def called(*args: Any, **kwargs: Any) -> Any:
            calls.append(bool(inside))
            return function(*args, **kwargs)

        return called

    monkeypatch.setattr(render_module.devices, "autocast", recording)
    monkeypatch.setattr(render_module, "collect", spy(network, render_module.collect))
    monkeypatch.setattr(render_module, "warp", spy(views, render_module.warp))
    run = Run(small_job(), model)
    advance([run])
    assert network == [True]  # the forward through the network, under autocast
    assert views == [False]  # the views' grids and samples in float32 (bf16 shifts them)
