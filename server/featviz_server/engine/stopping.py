"""When a run has converged: its smoothed objective no longer improves.

Each image's per-step objective (measured on the optimizer's own random views, never on the
views that score the result) is smoothed by an exponential moving average over about `window`
steps; an image has converged once that average has not beaten its best by more than
`tolerance` (relative) for `window` steps, and a run once all of its images have.
"""

from __future__ import annotations

import torch

from .job import Recipe


class EarlyStop:
    """The early-stop rule's state for one run."""

    def __init__(self, recipe: Recipe, images: int) -> None:
        self.window, self.tolerance = recipe.stop_window, recipe.stop_tolerance
        self.smoothed = torch.zeros(images, dtype=torch.float64)
        self.best = torch.zeros(images, dtype=torch.float64)
        self.since = torch.zeros(images, dtype=torch.long)  # steps since the best improved
        self.converged = False

    def update(self, step: int, values: torch.Tensor) -> None:
        """Account for the objectives of step `step` (1-based)."""
        if not self.window:
            return
        values = values.to(torch.float64).cpu()
        rate = max(1.0 / step, 1.0 / self.window)  # a plain mean until `window` steps are seen
        self.smoothed += rate * (values - self.smoothed)
        if step == 1:
            self.best = self.smoothed.clone()
            return
        improved = self.smoothed > self.best + self.tolerance * self.best.abs()
        self.best = torch.where(improved, self.smoothed, self.best)
        self.since = torch.where(improved, 0, self.since + 1)
        self.converged = bool((self.since >= self.window).all())
