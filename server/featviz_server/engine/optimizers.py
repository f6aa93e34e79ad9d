"""Update rules: Adam (optionally with an epsilon relative to each image's gradients), and the
classic method's normalized gradient ascent."""

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


class RelativeEpsilonAdam(torch.optim.Optimizer):
    """Adam whose epsilon is `epsilon` times the root mean square, over each image, of Adam's
    denominator sqrt(v): where a coefficient's gradient is strong for its image, Adam's step;
    where it is weak (detail that the blurred, resampled views hardly show, say), a step in
    proportion to the gradient, where Adam would take a full one. Relative, it means the same
    for a unit that reaches 200 and one that reaches 10,000.

    As in `NormalizedAscent`, the first dimension indexes images, so images of a batch do not
    influence each other.
    """

    BETAS = (0.9, 0.999)  # Adam's

    def __init__(self, params: Iterable[torch.Tensor], lr: float, epsilon: float) -> None:
        super().__init__(params, {"lr": lr, "epsilon": epsilon})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        beta1, beta2 = self.BETAS
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state.update(step=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                state["step"] += 1
                m, v = state["m"], state["v"]
                m.lerp_(p.grad, 1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                v_hat = 1 - beta2 ** state["step"]  # v / this: the unbiased estimate
                shape = (-1,) + (1,) * (p.dim() - 1)
                rms = v.flatten(1).mean(1).div(v_hat).sqrt().view(shape)  # of sqrt(v / v_hat)
                denominator = v.div(v_hat).sqrt_().add_(rms.mul_(group["epsilon"]).add_(1e-8))
                size = group["lr"] / (1 - beta1 ** state["step"])
                p.addcdiv_(m, denominator, value=-size)


def make_optimizer(recipe: Recipe, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    if recipe.optimizer == "adam" and recipe.adam_epsilon:
        return RelativeEpsilonAdam(params, lr=recipe.learning_rate, epsilon=recipe.adam_epsilon)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.learning_rate, fused=True)
    return NormalizedAscent(params, lr=recipe.learning_rate)


def learning_rate(recipe: Recipe, step: int) -> float:
    """The learning rate of step `step` (0-based) under the recipe's schedule."""
    if recipe.learning_rate_decay == "cosine":
        return recipe.learning_rate * 0.5 * (1 + math.cos(math.pi * step / recipe.steps))
    return recipe.learning_rate
