"""The engine's building blocks on the real VGG16 at small sizes: objectives, parameterizations,
transforms, regularizers, the redirected ReLU and the per-device settings."""

from __future__ import annotations

import math
import os

import pytest
import torch

from featviz_server.engine import Job, Objective, Run, Transforms, recipe, render
from featviz_server.engine import device as devices
from featviz_server.engine.forward import activations, apply_layer, collect
from featviz_server.engine.job import Expression, Term
from featviz_server.engine.objectives import (
    INPUT,
    Channel,
    Direction,
    Diversity,
    Neuron,
    WeightedSum,
    narrowed_channels,
    objective,
    penalties,
    unit,
)
from featviz_server.engine.optimizers import RelativeEpsilonAdam
from featviz_server.engine.parameterizations import (
    COLOR_DECORRELATION,
    FourierImage,
    PixelImage,
)
from featviz_server.engine.regularizers import gaussian_blur, l1, l2, total_variation
from featviz_server.engine.stopping import EarlyStop
from featviz_server.engine.transforms import canvas_size, random_affines, warp
from featviz_server.model import VGG16

CPU = torch.device("cpu")
B3 = "block3_conv1"
L1 = Term("l1")


def channel(layer: str, index: int) -> Expression:
    return Expression.of(Term("channel", layer, index))


def generators(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed) for seed in seeds]


@pytest.fixture(scope="module")
def block3(model: VGG16) -> torch.Tensor:
    """block3_conv1 activations of two random 48-px images."""
    torch.manual_seed(0)
    with torch.no_grad():
        return activations(model.cut("block3_conv1"), torch.rand(2, 3, 48, 48))


# --- objectives --------------------------------------------------------------------------------


def test_channel_is_the_mean_of_each_images_own_feature_map(block3: torch.Tensor) -> None:
    values = Channel(B3, (5, 9))({B3: block3})
    assert values.tolist() == [block3[0, 5].mean().item(), block3[1, 9].mean().item()]


def test_neuron_reads_one_unit_shifted_by_the_canvas_margin(block3: torch.Tensor) -> None:
    layers = {B3: block3}
    assert Neuron(B3, (5, 9), x=3, y=7)(layers).tolist() == [
        block3[0, 5, 7, 3],
        block3[1, 9, 7, 3],
    ]
    shifted = Neuron(B3, (5, 5), x=3, y=7)(layers, pad=8)  # block3 has stride 4: 2 units
    assert shifted.tolist() == [block3[0, 5, 9, 5], block3[1, 5, 9, 5]]


def test_a_one_hot_direction_is_the_channel_and_any_length_reads_the_same(
    block3: torch.Tensor,
) -> None:
    layers = {B3: block3}
    one_hot = tuple(3.0 if c == 5 else 0.0 for c in range(256))
    torch.testing.assert_close(Direction(B3, one_hot)(layers), Channel(B3, (5, 5))(layers))
    mixed = tuple(1.0 if c in (5, 9) else 0.0 for c in range(256))
    expected = (block3[:, 5] + block3[:, 9]).mean((1, 2)) / 2**0.5
    torch.testing.assert_close(Direction(B3, mixed)(layers), expected)


def test_negation_and_weighted_sums_compose(block3: torch.Tensor) -> None:
    layers = {B3: block3}
    a, b = Channel(B3, (1, 2)), Neuron(B3, (3, 4), 1, 1)
    combined = 2.0 * a - b + (-a) * 0.5
    expected = 2.0 * a(layers) - b(layers) - 0.5 * a(layers)
    torch.testing.assert_close(combined(layers), expected)
    per_image = WeightedSum((((1.0, 0.0), a), ((0.0, 1.0), b)))  # interpolation's weights
    torch.testing.assert_close(per_image(layers), torch.stack([a(layers)[0], b(layers)[1]]))


def test_diversity_penalizes_similar_images_of_the_same_channel_only(
    block3: torch.Tensor,
) -> None:
    twins = {B3: torch.cat([block3[:1], block3[:1], block3[1:]])}
    values = Diversity(B3, (7, 7, 7))(twins)
    assert values[0] == values[1] < values[2] < 0  # the twins are the most alike
    cosine_to_other = -1.5 * values[2]  # image 2: -(c + c) / 3
    torch.testing.assert_close(values[0], -(1 + cosine_to_other) / 3)  # cos(twin, twin) = 1
    assert Diversity(B3, (1, 2, 3))(twins).tolist() == [0.0, 0.0, 0.0]  # different channels


def test_job_objective_negates_and_adds_diversity(block3: torch.Tensor) -> None:
    layers = {B3: block3}
    plain = Job(B3, (5,), recipe("fast", size=48), images_per_channel=2)
    negated = Job(B3, (5,), recipe("fast", size=48), Objective(negate=True, diversity=3.0), 0, 2)
    expected = -Channel(B3, (5, 5))(layers) + 3.0 * Diversity(B3, (5, 5))(layers)
    torch.testing.assert_close(objective(negated)(layers), expected)
    torch.testing.assert_close(unit(negated)(layers), objective(plain)(layers))


def test_neuron_defaults_to_the_centre(block3: torch.Tensor) -> None:
    job = Job(B3, (5,), recipe("fast", size=48), Objective(kind="neuron"))
    assert unit(job)({B3: block3[:1]}).item() == block3[0, 5, 6, 6].item()


def test_an_expression_reads_several_layers_and_the_input(model: VGG16) -> None:
    images = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        _, layers = collect(
            model.cut("block4_conv3"), images, keep={"block3_conv3", "block4_conv3"}
        )
    layers[INPUT] = images
    expression = (
        channel("block4_conv3", 12) - 0.5 * channel("block3_conv3", 40) - 0.1 * Expression.of(L1)
    )
    job = Job("", (), recipe("fast", size=48), expression=expression, images_per_channel=2)
    assert job.layers == {"block3_conv3", "block4_conv3"} and job.cut_layer == "block4_conv3"
    expected = (
        layers["block4_conv3"][:, 12].mean((1, 2))
        - 0.5 * layers["block3_conv3"][:, 40].mean((1, 2))
        - 0.1 * l1(images)
    )
    torch.testing.assert_close(objective(job)(layers), expected)
    unit_expected = expected + 0.1 * l1(images)  # the units, without the penalty
    torch.testing.assert_close(unit(job)(layers), unit_expected)
    assert narrowed_channels(job) == [12, 12]  # only channel 12 of the cut layer is read


def test_an_interpolation_moves_each_image_from_one_objective_to_the_other(
    block3: torch.Tensor,
) -> None:
    a, b = channel(B3, 5), channel(B3, 9)
    job = Job("", (), recipe("fast", size=48), expression=a, interpolate_to=b, images_per_channel=3)
    three = {B3: torch.cat([block3, block3[:1]])}
    values = objective(job)(three)
    fives, nines = three[B3][:, 5].mean((1, 2)), three[B3][:, 9].mean((1, 2))
    torch.testing.assert_close(values, torch.stack([fives[0], (fives[1] + nines[1]) / 2, nines[2]]))
    assert narrowed_channels(job) is None  # two channels of the cut layer


@pytest.mark.parametrize(
    "objective_",
    [Objective(kind="neuron"), Objective(kind="neuron", neuron=(1, 2)), Objective(negate=True)],
)
def test_each_objective_improves_on_the_real_network(model: VGG16, objective_: Objective) -> None:
    job = Job("block3_conv1", (11,), recipe("fast", size=48, steps=12), objective_)
    start = Run(job, model).result()  # the start image, before any step
    end = render(model, job)
    assert end.objective[0] > start.objective[0]


def test_diversity_makes_images_of_one_channel_differ_more(model: VGG16) -> None:
    def spread(weight: float) -> float:
        job = Job(
            "block3_conv1", (11,), recipe("fast", size=48, steps=16), Objective(diversity=weight)
        )
        images = torch.from_numpy(render(model, job_with_two(job)).images).float()
        return (images[0] - images[1]).abs().mean().item()

    def job_with_two(job: Job) -> Job:
        return Job(job.layer, job.channels, job.recipe, job.objective, 0, 2)

    assert spread(1e3) > spread(0.0)


# --- parameterizations -------------------------------------------------------------------------


def test_raw_pixels_start_grey_plus_noise_in_0_255_units() -> None:
    image = PixelImage(16, generators(0, 1), CPU, raw=True, decorrelate=False)
    values = image.tensor.detach()
    assert values.shape == (2, 3, 16, 16)
    assert values.min() >= 128 and values.max() < 148
    torch.testing.assert_close(image(), values / 255.0)


@pytest.mark.parametrize("fourier", [False, True])
@pytest.mark.parametrize("decorrelate", [False, True])
def test_sigmoid_parameterizations_start_near_grey_inside_0_1(
    fourier: bool, decorrelate: bool
) -> None:
    gens = generators(3)
    if fourier:
        image = FourierImage(32, gens, CPU, decorrelate=decorrelate)
    else:
        image = PixelImage(32, gens, CPU, raw=False, decorrelate=decorrelate)
    x = image()
    assert x.shape == (1, 3, 32, 32)
    assert x.min() > 0 and x.max() < 1
    assert (x - 0.5).abs().max() < 0.05


def test_an_image_depends_only_on_its_own_generator() -> None:
    alone = FourierImage(32, generators(7), CPU, decorrelate=True)()
    batched = FourierImage(32, generators(1, 7, 2), CPU, decorrelate=True)()
    assert torch.equal(alone[0], batched[1])


def test_colour_decorrelation_matrix_is_lucids_normalized_square_root() -> None:
    assert COLOR_DECORRELATION.norm(dim=0).max().item() == pytest.approx(1.0)
    assert COLOR_DECORRELATION[0, 0] > 0.5  # first basis vector ~ luminance


@pytest.mark.parametrize("fourier", [False, True])
def test_blur_removes_high_frequencies(fourier: bool) -> None:
    gens = generators(0)
    image = (
        FourierImage(32, gens, CPU, decorrelate=False)
        if fourier
        else PixelImage(32, gens, CPU, raw=False, decorrelate=False)
    )
    with torch.no_grad():
        image.tensor.normal_()
    before = total_variation(image()).item()
    image.blur(1.0)
    assert total_variation(image()).item() < 0.7 * before


# --- transforms --------------------------------------------------------------------------------


def test_canvas_adds_the_pad_on_each_side() -> None:
    assert canvas_size(64, None) == 64
    assert canvas_size(64, Transforms(pad=12)) == 88


def test_identity_transforms_leave_the_image_unchanged() -> None:
    none = Transforms(pad=0, jitter=0, scale_min=1, scale_max=1, rotate_degrees=0, final_jitter=0)
    images = torch.rand(2, 3, 16, 16)
    thetas = random_affines(none, 16, generators(0, 1))
    torch.testing.assert_close(warp(images, thetas, 16), images)


def test_pad_shows_the_image_centred_on_a_grey_margin() -> None:
    pad = Transforms(pad=4, jitter=0, scale_min=1, scale_max=1, rotate_degrees=0, final_jitter=0)
    images = torch.rand(1, 3, 16, 16)
    out = warp(images, random_affines(pad, 16, generators(0)), 24)
    torch.testing.assert_close(out[..., 4:20, 4:20], images)
    assert (out[..., :4, :] == 0.5).all() and (out[..., :, 20:] == 0.5).all()


def test_jitter_translates_by_at_most_half_its_range_each_way() -> None:
    jitter = Transforms(pad=0, jitter=8, scale_min=1, scale_max=1, rotate_degrees=0, final_jitter=4)
    thetas = random_affines(jitter, 32, generators(*range(50)))
    torch.testing.assert_close(thetas[:, :, :2], torch.eye(2).expand(50, 2, 2))
    shift_pixels = thetas[:, :, 2] * 32 / 2
    assert shift_pixels.abs().max() <= (8 + 4) / 2 and shift_pixels.std() > 1


def test_scale_and_rotation_stay_in_range() -> None:
    spin = Transforms(
        pad=0, jitter=0, scale_min=0.9, scale_max=1.1, rotate_degrees=10, final_jitter=0
    )
    linear = random_affines(spin, 32, generators(*range(50)))[:, :, :2]
    scales = 1 / linear.det().sqrt()
    angles = torch.atan2(linear[:, 0, 1], linear[:, 0, 0]).rad2deg()
    assert scales.min() >= 0.9 - 1e-5 and scales.max() <= 1.1 + 1e-5
    assert angles.abs().max() <= 10 + 1e-4 and angles.abs().max() > 5


def test_each_image_draws_its_transforms_from_its_own_generator() -> None:
    alone = random_affines(Transforms(), 32, generators(5))
    batched = random_affines(Transforms(), 32, generators(9, 5))
    assert torch.equal(alone[0], batched[1])


# --- regularizers ------------------------------------------------------------------------------


def test_the_penalties_give_the_values_worked_out_by_hand_on_known_images() -> None:
    grey = torch.full((1, 3, 4, 4), 0.5)
    stripes = grey.clone()
    stripes[..., ::2] = 1.0
    assert l1(grey).item() == l2(grey).item() == total_variation(grey).item() == 0.0
    assert l1(stripes).item() == pytest.approx(0.25)
    assert l2(stripes).item() == pytest.approx(0.125)
    assert total_variation(stripes).item() == pytest.approx(0.5)
    both = penalties({"l1": 2.0, "l2": 0.0, "total_variation": 1.0})
    assert both is not None and both({INPUT: stripes}).item() == pytest.approx(2 * 0.25 + 0.5)
    assert penalties({"l1": 0.0, "l2": 0.0, "total_variation": 0.0}) is None


def test_gaussian_blur_keeps_constants_and_smooths_noise() -> None:
    constant = torch.full((1, 3, 16, 16), 0.3)
    torch.testing.assert_close(gaussian_blur(constant, 1.0), constant)
    noise = torch.rand(1, 3, 16, 16)
    assert gaussian_blur(noise, 1.0).std() < 0.5 * noise.std()


@pytest.mark.parametrize("weight", ["l1", "l2", "total_variation"])
def test_regularized_renders_are_calmer(model: VGG16, weight: str) -> None:
    def measure(strength: float) -> float:
        r = recipe("fast", size=32, steps=8, transforms=None, **{weight: strength})
        image = render(model, Job("block2_conv1", (3,), r), return_float=True).float_images
        x = torch.from_numpy(image).permute(0, 3, 1, 2)
        return {"l1": l1, "l2": l2, "total_variation": total_variation}[weight](x).item()

    assert measure(50.0) < measure(0.0)


# --- redirected ReLU ---------------------------------------------------------------------------


def test_redirected_relu_revives_a_dead_channel_only_where_asked(model: VGG16) -> None:
    network = model.cut("block1_conv2")
    grey = torch.full((1, 3, 32, 32), 0.5)
    with torch.no_grad():
        dead = (activations(network, grey).amax((0, 2, 3)) == 0).nonzero()
    channel = int(dead[0])  # many block1 channels are zero on a grey image

    def gradient(redirect: bool) -> torch.Tensor:
        x = grey.repeat(2, 1, 1, 1).requires_grad_(True)
        mask = torch.tensor([redirect, False])
        out = activations(network, x, mask)
        (-out[:, channel].mean((1, 2))).sum().backward()
        return x.grad

    assert gradient(False).abs().sum() == 0
    revived = gradient(True)
    assert revived[0].abs().sum() > 0 and revived[1].abs().sum() == 0
    with torch.no_grad():
        plain = activations(network, grey)
        assert torch.equal(activations(network, grey, torch.tensor([True])), plain)


# --- the narrowed target layer ------------------------------------------------------------------


def test_a_narrowed_layer_is_each_images_own_channel_with_the_same_gradient(model: VGG16) -> None:
    network = model.cut("block2_conv2")
    head, target = network[:-1], network[-1]
    torch.manual_seed(0)
    images = torch.rand(3, 3, 40, 40)
    channels = [5, 77, 5]

    def forward_backward(narrowed: bool) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.clone().requires_grad_(True)
        hidden = activations(head, x)
        if narrowed:
            out = apply_layer(target, hidden, channels=channels)[:, 0]
        else:
            out = apply_layer(target, hidden)[torch.arange(3), channels]
        out.mean((1, 2)).sum().backward()
        return out.detach(), x.grad

    narrow, full = forward_backward(True), forward_backward(False)
    assert narrow[0].amax() > 10 and narrow[1].abs().amax() > 0  # not a blank comparison
    torch.testing.assert_close(narrow[0], full[0], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(narrow[1], full[1], rtol=1e-4, atol=1e-6)


def test_runs_narrow_the_target_layer_only_when_the_objective_allows(model: VGG16) -> None:
    fast = recipe("fast", size=32, steps=1)
    assert Run(Job("block1_conv2", (3, 9), fast), model).target_channels == [3, 9]
    assert Run(Job("block1_pool", (3,), fast), model).target_channels is None  # not a conv layer
    diverse = Job("block1_conv2", (3,), fast, Objective(diversity=1.0), images_per_channel=2)
    assert Run(diverse, model).target_channels is None  # diversity reads every channel
    with pytest.raises(ValueError, match="objective: diversity"):
        objective(diverse, narrowed=True)


# --- device ------------------------------------------------------------------------------------


def test_a_cpu_model_is_set_up_without_bf16(model: VGG16) -> None:
    assert devices.set_up(model, bf16=True) == CPU
    assert not model.bf16  # bf16 autocast is for CUDA only
    assert devices.describe(CPU) == "cpu"
    assert devices.memory_format(CPU) == torch.contiguous_format
    assert torch.get_num_threads() == len(os.sched_getaffinity(0))
    with devices.autocast(model, CPU):
        assert not torch.is_autocast_enabled()
    assert math.isfinite(
        render(model, Job("block1_conv1", (0,), recipe("fast", size=32, steps=1))).activation[0]
    )


# --- the early-stop rule -------------------------------------------------------------------------


def test_early_stop_waits_for_every_image_to_stop_improving() -> None:
    rule = EarlyStop(recipe("fast", stop_window=4, stop_tolerance=0.01), images=2)
    rising = [10.0 * step for step in range(1, 21)]  # image 0 improves for 20 steps
    flat = [5.0] * 40  # image 1 never does
    steps = 0
    for step, (a, b) in enumerate(zip(rising + [200.0] * 20, flat, strict=True), start=1):
        rule.update(step, torch.tensor([a, b]))
        steps = step
        if rule.converged:
            break
    # image 1 alone would stop after 1 + 4 steps; image 0's average keeps rising for a few
    # steps after step 20 (it lags), then must stay within 1 % for 4 steps
    assert 24 <= steps <= 40


def test_early_stop_is_off_with_a_window_of_zero() -> None:
    rule = EarlyStop(recipe("fast", stop_window=0), images=1)
    for step in range(1, 100):
        rule.update(step, torch.tensor([1.0]))
    assert not rule.converged


# --- update rules ------------------------------------------------------------------------------


def _steps(optimizer: torch.optim.Optimizer, leaf: torch.Tensor, gradients: torch.Tensor) -> None:
    for gradient in gradients:
        leaf.grad = gradient.clone()
        optimizer.step()


def test_a_relative_epsilon_of_zero_is_adam() -> None:
    gradients = torch.randn(5, 3, 4, 6, generator=torch.Generator().manual_seed(0))
    ours, adams = torch.zeros(3, 4, 6), torch.zeros(3, 4, 6)
    _steps(RelativeEpsilonAdam([ours], lr=0.1, epsilon=0.0), ours, gradients)
    _steps(torch.optim.Adam([adams], lr=0.1), adams, gradients)
    torch.testing.assert_close(ours, adams)


def test_a_relative_epsilon_slows_weak_gradients_only_and_each_image_alone() -> None:
    generator = torch.Generator().manual_seed(0)
    gradients = torch.randn(5, 2, 100, generator=generator)
    gradients[:, 0, :50] *= 1e-3  # image 0: half its coefficients with weak gradients
    gradients[:, 1] *= 1e4  # image 1: another unit's scale
    batch = torch.zeros(2, 100)
    _steps(RelativeEpsilonAdam([batch], lr=0.1, epsilon=0.3), batch, gradients)
    adam = torch.zeros(2, 100)
    _steps(torch.optim.Adam([adam], lr=0.1), adam, gradients)
    weak, strong = (batch[0, :50] / adam[0, :50]).abs(), (batch[0, 50:] / adam[0, 50:]).abs()
    assert weak.max() < 0.02 and strong.median() > 0.7  # weak: ~1/300 of Adam's step
    alone = torch.zeros(1, 100)
    _steps(RelativeEpsilonAdam([alone], lr=0.1, epsilon=0.3), alone, gradients[:, 1:])
    assert torch.equal(alone[0], batch[1])  # image 1 moves as it would alone
