"""Figures of a result that not every server reports, read defensively."""

from __future__ import annotations

from featviz.result import Result


def robust_activations(result: Result) -> list[float | None]:
    """Each image's transformation-robust activation (RunSummary.robust_activation), or None for
    each image when the server did not report them."""
    values = tuple(result.robust_activations)
    return list(values) if len(values) == len(result.images) else [None] * len(result.images)
