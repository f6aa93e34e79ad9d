"""Named recipes (each checked against the schema) and the one way to derive a recipe from them."""

from __future__ import annotations

import dataclasses

from . import schema
from .job import Recipe, Transforms

LUCID_TRANSFORMS = Transforms()  # pad 12, jitter 8, scale 0.9-1.1, rotate ±10°, jitter 4

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
# featviz's default: Lucid's parameterization with a high, cosine-decayed learning rate and
# transforms that keep the canvas at the image size (no pad) for the first half, then the plain
# image: it reaches the lucid preset's 512-step activation in a quarter of the steps and about a
# fifth of the time (bench/engine.py; docs/engine.md says what else was tried).
PRESETS["fast"] = dataclasses.replace(
    PRESETS["lucid"],
    steps=256,
    learning_rate=0.4,
    learning_rate_decay="cosine",
    transforms=dataclasses.replace(LUCID_TRANSFORMS, pad=0),
    transforms_until=0.5,
)
DEFAULT_PRESET = "fast"

DESCRIPTIONS = {
    "classic": "the course / Keras-blog method: 128 px grey + noise, gradient / RMS, step 1, "
    "40 steps",
    "lucid": "Lucid's render_vis defaults: Fourier + decorrelated colour, pad/jitter/scale/rotate, "
    "Adam(0.05), 512 steps",
    "fast": "Fourier parameterization with decorrelated colour, a high cosine-decayed learning "
    "rate, transforms for the first half",
}
for _preset in PRESETS.values():
    schema.check(_preset)

_FIELDS = {field.name for field in dataclasses.fields(Recipe)}


def recipe(preset: str, limits: schema.Limits | None = None, **overrides: object) -> Recipe:
    """The named preset with `overrides` applied, checked against `limits` (schema.check);
    ValueError naming an unknown preset or field, OptionError naming a bad value."""
    if preset not in PRESETS:
        raise ValueError(f"preset: unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    unknown = sorted(set(overrides) - _FIELDS)
    if unknown:
        raise ValueError(
            f"{unknown[0]}: unknown recipe field (known: {', '.join(sorted(_FIELDS))})"
        )
    return schema.check(dataclasses.replace(PRESETS[preset], **overrides), limits)
