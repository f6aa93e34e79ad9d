"""Objective expressions in the engine: terms on several layers, what the results report,
batching with other runs, interpolation with a shared parameterization, and refused expressions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featviz_server.engine import Expression, Job, Run, Term, advance, recipe, render
from featviz_server.model import VGG16

SMALL = recipe("fast", size=40, steps=6)


def channel(layer: str, index: int) -> Expression:
    return Expression.of(Term("channel", layer, index))


INTERACTION = channel("block4_conv3", 12) - 0.5 * channel("block3_conv3", 40)


def expression_job(expression: Expression = INTERACTION, **fields: object) -> Job:
    defaults: dict[str, object] = {"recipe": SMALL, "seed": 2, "expression": expression}
    return Job("", (), **{**defaults, **fields})  # type: ignore[arg-type]


def test_the_reported_objective_is_the_expression_on_the_8_bit_image(model: VGG16) -> None:
    job = expression_job(INTERACTION - 0.05 * Expression.of(Term("total_variation")))
    result = render(model, job)
    pixels = torch.from_numpy(result.images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        block3, block4 = model.cut("block3_conv3")(pixels), model.cut("block4_conv3")(pixels)
    tv = (pixels[..., 1:, :] - pixels[..., :-1, :]).abs().mean((1, 2, 3)) + (
        pixels[..., 1:] - pixels[..., :-1]
    ).abs().mean((1, 2, 3))
    units = block4[:, 12].mean((1, 2)) - 0.5 * block3[:, 40].mean((1, 2))
    assert result.objective == pytest.approx((units - 0.05 * tv).tolist(), rel=1e-4)
    assert result.activation == pytest.approx(units.tolist(), rel=1e-4)  # units only


def test_the_network_is_cut_at_the_deepest_layer_read_and_narrowed_there(model: VGG16) -> None:
    run = Run(expression_job(), model)
    assert [name for name, _ in run.network.named_children()][-1] == "block4_conv3"
    assert run.reads == {"block3_conv3"} and run.target_channels == [12]
    direction = Expression.of(Term("direction", "block4_conv3", vector=(1.0,) * 512))
    assert Run(expression_job(INTERACTION + direction), model).target_channels is None


def test_an_expression_job_is_bitwise_the_same_alone_or_batched(model: VGG16) -> None:
    """It shares each step with a plain job and another expression on the same cut layer that
    read other layers before it."""
    mine = expression_job(images_per_channel=2)
    alone = render(model, mine)
    plain = Job("block4_conv3", (7,), SMALL, seed=5)
    other = expression_job(channel("block4_conv3", 3) + channel("block2_conv2", 1), seed=8)
    runs = [Run(mine, model), Run(plain, model), Run(other, model)]
    assert len({run.batch_key for run in runs}) == 1
    while not runs[0].done:
        advance(runs)
    together = runs[0].result()
    assert np.array_equal(together.images, alone.images)
    assert together.objective == alone.objective


def test_an_interpolation_goes_from_one_objective_to_the_other_on_a_shared_layout(
    model: VGG16,
) -> None:
    a, b = channel("block3_conv1", 11), channel("block3_conv1", 40)
    job = expression_job(
        a, interpolate_to=b, images_per_channel=4, recipe=recipe("fast", size=48, steps=24)
    )
    result = render(model, job)
    pixels = torch.from_numpy(result.images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        block3 = model.cut("block3_conv1")(pixels)
    a_values, b_values = block3[:, 11].mean((1, 2)), block3[:, 40].mean((1, 2))
    assert a_values[0] > a_values[-1] and b_values[-1] > b_values[0]
    run = Run(job, model)
    assert run.image.shared is not None and len(run.optimizer.param_groups[0]["params"]) == 2
    # Without the shared parameters the neighbouring images are less alike.
    unshared = render(model, expression_job(a, images_per_channel=4, recipe=job.recipe))

    def neighbour_distance(images: np.ndarray) -> float:
        floats = images.astype(float)
        return float(np.abs(floats[1:] - floats[:-1]).mean())

    assert neighbour_distance(result.images) < neighbour_distance(unshared.images)


@pytest.mark.parametrize(
    ("expression", "field"),
    [
        (channel("block9_conv1", 0), "expression.terms[0].layer: unknown layer 'block9_conv1'"),
        (channel("block1_conv1", 64), "expression.terms[0].channel: 64 is not a block1_conv1"),
        (
            Expression.of(Term("direction", "block1_conv1", vector=(1.0, 2.0))),
            "expression.terms[0].vector: has 2 values; block1_conv1 has 64 channels",
        ),
        (
            channel("block1_conv1", 1) + float("nan") * channel("block1_conv1", 2),
            "expression.terms[1].weight: must be a finite number",
        ),
        (
            Expression.of(Term("neuron", "block5_pool", 3, neuron=(9, 0))),
            "expression.terms[0].neuron_x: 9 is outside 0..0",
        ),
        (Expression.of(Term("l1")), "expression.terms: reads no unit"),
        (Expression.of(Term("diversity", "block1_conv1")), "expression.terms: reads no unit"),
        (Expression.of(Term("l2", "block1_conv1")), "expression.terms[0].layer: l2 reads"),
    ],
)
def test_a_bad_expression_is_refused_naming_its_part(
    model: VGG16, expression: Expression, field: str
) -> None:
    with pytest.raises(ValueError, match=f"^{field}".replace("(", r"\(").replace("[", r"\[")):
        Run(expression_job(expression), model)
