"""Figures of a result that not every server reports, read defensively."""

from __future__ import annotations

from featviz.result import Result


def robust_activations(result: Result) -> list[float | None]:
    """Each image's transformation-robust activation where the SDK's `Result` carries them
    (`Result.robust_activations`, one per image, from RunSummary.robust_activation), else None
    for each image (an older server, or an SDK without that field)."""
    values = tuple(getattr(result, "robust_activations", None) or ())
    return list(values) if len(values) == len(result.images) else [None] * len(result.images)
