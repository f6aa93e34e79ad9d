"""Named recipes and the one way to derive a recipe from them."""

from __future__ import annotations

import dataclasses
import math
from typing import get_args

from .job import (
    DecayName,
    DisplayName,
    OptimizerName,
    ParameterizationName,
    Recipe,
    Transforms,
    ValueRangeName,
)

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
# featviz's default: Lucid's parameterization, optimized for what a person sees. Every step
# sees a transformed view (no pad: the canvas stays at the image size; the margin mirrored) that
# is also blurred a little, so that detail which only counts at the exact pixels earns nothing;
# a learning rate 8x Lucid's, cosine-decayed over at most 96 steps; the run stops sooner by
# itself once every image's smoothed objective stops improving. docs/engine.md says what was
# tried and what each gave.
PRESETS["fast"] = dataclasses.replace(
    PRESETS["lucid"],
    steps=96,
    learning_rate=0.4,
    learning_rate_decay="cosine",
    transforms=dataclasses.replace(LUCID_TRANSFORMS, pad=0, reflect=True, blur=0.8),
    stop_window=16,
    stop_tolerance=0.01,
)
DEFAULT_PRESET = "fast"

_FIELDS = {field.name for field in dataclasses.fields(Recipe)}
_CHOICES = {
    "parameterization": ParameterizationName,
    "optimizer": OptimizerName,
    "value_range": ValueRangeName,
    "display": DisplayName,
    "learning_rate_decay": DecayName,
}


def check(recipe: Recipe) -> Recipe:
    """ValueError naming the first field that makes `recipe` unusable."""
    for name, choices in _CHOICES.items():
        if getattr(recipe, name) not in get_args(choices):
            known = ", ".join(get_args(choices))
            raise ValueError(f"{name}: {getattr(recipe, name)!r} is not one of {known}")
    numbers = {
        "learning_rate": recipe.learning_rate,
        "l1": recipe.l1,
        "l2": recipe.l2,
        "total_variation": recipe.total_variation,
        "blur_sigma": recipe.blur_sigma,
        "stop_tolerance": recipe.stop_tolerance,
    }
    for name, value in numbers.items():
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name}: must be a finite number >= 0, got {value}")
    if not 0.0 <= recipe.transforms_until <= 1.0:
        raise ValueError(f"transforms_until: must be in [0, 1], got {recipe.transforms_until}")
    for name in ("size", "steps", "blur_every", "redirect_relu_steps", "stop_window"):
        if getattr(recipe, name) < 0:
            raise ValueError(f"{name}: must be >= 0, got {getattr(recipe, name)}")
    if recipe.value_range == "raw" and recipe.parameterization != "pixel":
        raise ValueError("value_range: 'raw' needs the pixel parameterization")
    t = recipe.transforms
    if t is not None:
        if min(t.pad, t.jitter, t.final_jitter) < 0:
            raise ValueError("transforms: pad and jitters must be >= 0")
        if not 0 < t.scale_min <= t.scale_max:
            raise ValueError("transforms: need 0 < scale_min <= scale_max")
        if not math.isfinite(t.rotate_degrees):
            raise ValueError("transforms.rotate_degrees: must be finite")
        if not 0 <= t.blur <= 10 or not math.isfinite(t.blur):
            raise ValueError(f"transforms.blur: must be in [0, 10] pixels, got {t.blur}")
    return recipe


def recipe(preset: str, **overrides: object) -> Recipe:
    """The named preset with `overrides` applied; ValueError naming an unknown preset or field."""
    if preset not in PRESETS:
        raise ValueError(f"preset: unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    unknown = sorted(set(overrides) - _FIELDS)
    if unknown:
        raise ValueError(
            f"{unknown[0]}: unknown recipe field (known: {', '.join(sorted(_FIELDS))})"
        )
    return check(dataclasses.replace(PRESETS[preset], **overrides))
