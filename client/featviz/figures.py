"""A result's figures as JSON records and captions take them: None where not reported."""

from __future__ import annotations

import math

from featviz.result import Result


def robust_activations(result: Result) -> list[float | None]:
    """Each image's transformation-robust activation (RunSummary.robust_activation), None where
    the server did not report it."""
    return [None if math.isnan(value) else value for value in result.robust_activations]
