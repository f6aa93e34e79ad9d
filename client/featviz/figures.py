"""A result's figures for JSON records and captions: None, not nan, where not reported."""

from __future__ import annotations

import math

from featviz.result import Result


def robust_activations(result: Result) -> list[float | None]:
    """Each image's transformation-robust activation (RunSummary.robust_activation), None where
    the server did not report it."""
    return [None if math.isnan(value) else value for value in result.robust_activations]
