"""Named recipes (each checked against the schema) and the one way to derive a recipe from them."""

from __future__ import annotations

import dataclasses

from ..architecture import CONV_LAYERS, multiply_adds
from . import schema
from .job import Recipe, Transforms

LUCID_TRANSFORMS = Transforms()  # Transforms' defaults are Lucid's standard set

PRESETS: dict[str, Recipe] = {
    # Chollet's Keras-blog / course method, exactly: grey + noise in 0-255 units, gradient over
    # its RMS, step 1, no transforms, standardized for display.
    "classic": Recipe(
        size=128,
        steps=40,
        parameterization="pixel",
        decorrelate=False,
        optimizer="normalized_ascent",
        learning_rate=1.0,
        transforms=None,
        value_range="raw",
        display="standardize",
    ),
    # Lucid's render_vis defaults.
    "lucid": Recipe(
        size=128,
        steps=512,
        parameterization="fourier",
        decorrelate=True,
        optimizer="adam",
        learning_rate=0.05,
        transforms=LUCID_TRANSFORMS,
        redirect_relu_steps=16,
    ),
}
# featviz's default: Lucid's parameterization, optimized for what a person sees. Every step
# sees a transformed view (no pad: the canvas stays at the image size; the margin mirrored;
# shifts of up to 12 px, three times Lucid's) that is also blurred a little, so that detail which
# only counts at the exact pixels earns nothing; a learning rate 8x Lucid's, cosine-decayed over
# at most 96 steps at the deepest layer (more at shallower ones: STEP_BUDGETS), with an Adam
# epsilon relative to each image's gradients, so that coefficients with weak gradients (detail
# the views hardly show) do not take full steps; the run stops sooner by itself once every
# image's smoothed objective stops improving. docs/engine.md compares the alternatives.
PRESETS["fast"] = dataclasses.replace(
    PRESETS["lucid"],
    steps=96,
    learning_rate=0.4,
    adam_epsilon=0.3,
    learning_rate_decay="cosine",
    transforms=dataclasses.replace(LUCID_TRANSFORMS, pad=0, jitter=24, reflect=True, blur=0.8),
    stop_window=16,
    stop_tolerance=0.01,
)
DEFAULT_PRESET = "fast"

# Presets whose `steps` are a budget of compute rather than a count: that many steps at the
# deepest conv layer and, at a shallower layer, whose steps cost less, as many as the same
# compute buys, up to this multiple of them. A request that gives `steps` runs that many.
STEP_BUDGETS: dict[str, float] = {"fast": 2.0}

_classic, _lucid, _fast = PRESETS["classic"], PRESETS["lucid"], PRESETS["fast"]
DESCRIPTIONS = {
    "classic": f"the course / Keras-blog method: {_classic.size} px grey + noise, gradient / RMS, "
    f"step {_classic.learning_rate:g}, {_classic.steps} steps",
    "lucid": "Lucid's render_vis defaults: Fourier + decorrelated colour, pad/jitter/scale/rotate, "
    f"Adam({_lucid.learning_rate:g}), {_lucid.steps} steps",
    "fast": "Fourier parameterization with decorrelated colour, blurred views with a mirrored "
    "margin on every step, a high cosine-decayed learning rate and an epsilon relative to each "
    f"image's gradients, at most {_fast.steps} steps at {CONV_LAYERS[-1].name} and as many more "
    "at a shallower layer as its cheaper steps buy (up to "
    f"{round(_fast.steps * STEP_BUDGETS['fast'])}), stopping early once the objective stops "
    "improving",
}
for _preset in PRESETS.values():
    schema.check(_preset)

_FIELDS = {field.name for field in dataclasses.fields(Recipe)}


def recipe(
    preset: str,
    limits: schema.Limits | None = None,
    *,
    layer: str | None = None,
    **overrides: object,
) -> Recipe:
    """The named preset with `overrides` applied, checked against `limits` (schema.check);
    `layer`: the deepest layer the objective reads, which sets the steps of a preset with a
    budget (`budgeted_steps`, within the limits) unless `overrides` give them. ValueError naming
    an unknown preset or field, OptionError naming a bad value."""
    if preset not in PRESETS:
        raise ValueError(f"preset: unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    unknown = sorted(set(overrides) - _FIELDS)
    if unknown:
        raise ValueError(
            f"{unknown[0]}: unknown recipe field (known: {', '.join(sorted(_FIELDS))})"
        )
    if layer is not None and "steps" not in overrides:
        most = schema.bounds(schema.BY_NAME["steps"], limits or {})[1]
        budgeted = budgeted_steps(preset, layer)
        overrides["steps"] = max(PRESETS[preset].steps, min(budgeted, most))
    return schema.check(dataclasses.replace(PRESETS[preset], **overrides), limits)


def budgeted_steps(preset: str, layer: str) -> int:
    """The preset's step count for an objective that reads up to `layer` (STEP_BUDGETS)."""
    steps = PRESETS[preset].steps
    if preset not in STEP_BUDGETS:
        return steps
    cheaper = multiply_adds(CONV_LAYERS[-1].name) / multiply_adds(layer)
    return round(steps * min(STEP_BUDGETS[preset], cheaper))
