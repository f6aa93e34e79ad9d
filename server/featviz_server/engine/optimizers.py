"""Update rules: Adam, and the classic method's normalized gradient ascent."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from .job import Recipe

RMS_EPSILON = 1e-5  # Chollet: grads /= sqrt(mean(grads ** 2)) + 1e-5


class NormalizedAscent(torch.optim.Optimizer):
    """Step `lr` along the gradient divided by its root mean square, per image (Chollet).

    Parameters are minimized like with any torch optimizer; the RMS is taken over each image
    (the first dimension indexes images), so that images of a batch do not influence each other.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                shape = (-1,) + (1,) * (p.dim() - 1)
                rms = p.grad.square().flatten(1).mean(1).sqrt().view(shape)
                p.sub_(group["lr"] * (p.grad / (rms + RMS_EPSILON)))


def make_optimizer(recipe: Recipe, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.learning_rate, fused=True)
    return NormalizedAscent(params, lr=recipe.learning_rate)


def learning_rate(recipe: Recipe, step: int) -> float:
    """The learning rate of step `step` (0-based) under the recipe's schedule."""
    if recipe.learning_rate_decay == "cosine":
        return recipe.learning_rate * 0.5 * (1 + math.cos(math.pi * step / recipe.steps))
    return recipe.learning_rate
