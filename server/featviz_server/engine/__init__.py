"""Activation maximization on the frozen VGG16 conv base (no gRPC in this layer)."""

from .job import (
    Cancelled,
    Expression,
    InitImage,
    Job,
    Objective,
    Progress,
    Recipe,
    RenderResult,
    Term,
    Transforms,
)
from .presets import DEFAULT_PRESET, PRESETS, recipe
from .render import Run, advance, render, validate

__all__ = [
    "DEFAULT_PRESET",
    "PRESETS",
    "Cancelled",
    "Expression",
    "InitImage",
    "Job",
    "Objective",
    "Progress",
    "Recipe",
    "RenderResult",
    "Run",
    "Term",
    "Transforms",
    "advance",
    "recipe",
    "render",
    "validate",
]
