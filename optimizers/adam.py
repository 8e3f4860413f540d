"""Gradient descent in latent space: Adam with GGL's cosine learning-rate ramp.

GGL's Adam baseline: ``z ~ N(0, I)``, lr 0.1, the learning rate ramped up over the first 5%
of the steps and down along a half cosine over the last 25% (StyleGAN's projector schedule),
one latent per step, so a budget of N evaluations is N steps.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ggl.errors import GGLError
from ggl.optimizers.base import (BestTracker, LatentOptimizer, Objective, SearchProgress,
                             SearchResult)


def ramped_lr(base: float, t: float, rampup: float = 0.05, rampdown: float = 0.25) -> float:
    """Learning rate at progress ``t`` in [0, 1): warm-up over ``rampup``, cosine cool-down
    over the last ``rampdown``."""
    ramp = min(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return base * ramp * min(1.0, t / rampup) if rampup > 0 else base * ramp


class AdamSearch(LatentOptimizer):
    """Adam on one latent; the objective must be differentiable w.r.t. it."""

    name = "adam"
    differentiable = True
    settings = ("lr", "project")

    def __init__(self, lr: float = 0.1, rampup: float = 0.05, rampdown: float = 0.25,
                 seed: int = 0, bounds: float | None = None, population: int = 1,
                 project: Callable[[torch.Tensor], None] | None = None):
        super().__init__(1, seed, bounds)
        if lr <= 0:
            raise GGLError(f"adam lr must be positive, got {lr}")
        self.lr, self.rampup, self.rampdown = lr, rampup, rampdown
        self.project = project          # in-place, on the searched vector after each step

    def _minimize(self, objective: Objective, init: torch.Tensor, budget: int,
                  tracker: BestTracker) -> SearchResult:
        latent = init.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([latent], lr=self.lr)
        for step in range(budget):
            for group in optimizer.param_groups:
                group["lr"] = ramped_lr(self.lr, step / budget, self.rampup, self.rampdown)
            loss = objective(latent.unsqueeze(0))
            tracker.record(latent.detach().unsqueeze(0), loss)
            if not torch.isfinite(loss).all():
                break                                  # keep the best finite latent so far
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
            optimizer.step()
            with torch.no_grad():
                if self.bounds is not None:
                    latent.clamp_(-self.bounds, self.bounds)
                if self.project is not None:
                    self.project(latent)
        return tracker.result(lr=self.lr, steps=tracker.evaluations)

    def minimize_starts(self, objective: Objective, inits: torch.Tensor, budget: int,
                        progress: SearchProgress | None = None, seeds: list[int] | None = None
                        ) -> list[SearchResult]:
        """All ``k`` starts ``inits (k, d)`` stepped together: one batched call of the
        objective per step scores every start (Adam is element-wise, so each start follows
        exactly the path it would alone). Each gets ``budget // k`` steps; the remainder
        of the budget is left unused."""
        count = len(inits)
        steps = budget // count
        if steps < 1:
            raise GGLError(f"adam from {count} starts needs at least {count} evaluations "
                           f"(one step each), got a budget of {budget}")
        latents = inits.detach().cpu().float().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([latents], lr=self.lr)
        trackers = [BestTracker(steps, None) for _ in range(count)]
        for step in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = ramped_lr(self.lr, step / steps, self.rampup, self.rampdown)
            losses = objective(latents)
            for i, tracker in enumerate(trackers):
                tracker.record(latents[i:i + 1].detach(), losses[i:i + 1])
            if progress is not None:
                best = min(trackers, key=lambda t: t.best_loss)
                if best.best_latent is not None:
                    progress((step + 1) * count, budget, best.best_loss, best.best_latent)
            finite = torch.isfinite(losses)
            if not finite.any():
                break                                  # keep the best finite latents so far
            optimizer.zero_grad(set_to_none=True)
            losses[finite].sum().backward()
            optimizer.step()
            with torch.no_grad():
                if self.bounds is not None:
                    latents.clamp_(-self.bounds, self.bounds)
                if self.project is not None:
                    for row in latents:
                        self.project(row)
        return [t.result(lr=self.lr, steps=t.evaluations, batched_starts=count)
                for t in trackers]
