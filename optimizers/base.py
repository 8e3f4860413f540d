"""What every latent-space optimizer shares: the batched objective, the budget and the record.

An optimizer minimizes ``objective(latents (P, d)) -> losses (P,)`` for a budget counted in
objective EVALUATIONS (one latent scored = one evaluation; GGL's "rounds of 50" are not a
unit here). Black-box optimizers hand whole populations to the objective so it can score
them in one batched pass; gradient-based ones (``differentiable = True``) need losses that
are differentiable w.r.t. the latents.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import torch

from ggl.errors import GGLError

#: ``(P, d) -> (P,)``
Objective = Callable[[torch.Tensor], torch.Tensor]
#: ``progress(evaluations, budget, best_loss, best_latent (d,))``
SearchProgress = Callable[[int, int, float, torch.Tensor], None]


@dataclass
class SearchResult:
    """The outcome of one search.

    Attributes:
        latent: ``(d,)`` the best latent evaluated (CPU).
        loss: its objective value.
        history: the best loss so far after each evaluation (length ``evaluations``).
        evaluations: objective evaluations used (never more than the budget).
        info: optimizer facts (restarts, recommendation, ...).
    """

    latent: torch.Tensor
    loss: float
    history: list[float] = field(default_factory=list)
    evaluations: int = 0
    info: dict = field(default_factory=dict)


class BestTracker:
    """Keeps the best latent, the per-evaluation history and the budget of one search."""

    def __init__(self, budget: int, progress: SearchProgress | None):
        self.budget, self.progress = budget, progress
        self.evaluations = 0
        self.best_loss, self.best_latent = math.inf, None
        self.history: list[float] = []

    @property
    def remaining(self) -> int:
        return self.budget - self.evaluations

    def record(self, latents: torch.Tensor, losses: torch.Tensor) -> list[float]:
        """Account for ``latents (P, d)`` scored ``losses (P,)``; returns the losses as floats
        with non-finite values (a diverged candidate) replaced by ``+inf``."""
        values = [v if math.isfinite(v) else math.inf for v in losses.detach().cpu().tolist()]
        for latent, value in zip(latents.detach().cpu(), values):
            self.evaluations += 1
            if value < self.best_loss:
                self.best_loss, self.best_latent = value, latent.clone()
            self.history.append(self.best_loss)
        if self.progress is not None and self.best_latent is not None:
            self.progress(self.evaluations, self.budget, self.best_loss, self.best_latent)
        return values

    def result(self, **info) -> SearchResult:
        if self.best_latent is None:
            raise GGLError("the latent search found no candidate with a finite loss: every "
                           "evaluation diverged (check the victim and the shared gradient)")
        return SearchResult(self.best_latent, self.best_loss, self.history, self.evaluations,
                            info)


class LatentOptimizer:
    """Base class: ``minimize(objective, init, budget, progress)``.

    Args:
        population: candidates per batched call of the objective (ask/tell batch).
        seed: seeds the optimizer's own randomness.
        bounds: when set, latents are kept in ``[-bounds, bounds]`` (methods that support it).
    """

    name: ClassVar[str]
    differentiable: ClassVar[bool] = False
    #: the attack-level settings the method takes besides population, seed and bounds
    #: (``build_optimizer`` passes it those and leaves the others out)
    settings: ClassVar[tuple[str, ...]] = ()

    def __init__(self, population: int = 50, seed: int = 0, bounds: float | None = None):
        if population < 1:
            raise GGLError(f"--population must be at least 1, got {population}")
        if bounds is not None and bounds <= 0:
            raise GGLError(f"latent bounds must be positive, got {bounds}")
        self.population, self.seed, self.bounds = population, seed, bounds

    def minimum_budget(self) -> int:
        """The smallest budget the method can work with (one population)."""
        return self.population

    def check_budget(self, budget: int) -> None:
        least = self.minimum_budget()
        if budget < least:
            raise GGLError(f"--budget {budget} evaluations is smaller than one population of "
                           f"{self.name} ({least} evaluations); give --budget >= {least} or "
                           f"a smaller --population")

    def check_usable(self, budget: int) -> None:
        """Raise one clear GGLError, before any work, if the method cannot run a search of
        ``budget`` evaluations as configured (a missing package, a population it refuses)."""

    def minimize(self, objective: Objective, init: torch.Tensor, budget: int,
                 progress: SearchProgress | None = None) -> SearchResult:
        """Minimize ``objective`` from ``init (d,)`` within ``budget`` evaluations."""
        self.check_budget(budget)
        return self._minimize(objective, init.detach().cpu().float(), budget,
                              BestTracker(budget, progress))

    def _minimize(self, objective: Objective, init: torch.Tensor, budget: int,
                  tracker: BestTracker) -> SearchResult:
        raise NotImplementedError

    def minimize_starts(self, objective: Objective, inits: torch.Tensor, budget: int,
                        progress: SearchProgress | None = None, seeds: list[int] | None = None
                        ) -> list[SearchResult]:
        """Minimize from each row of ``inits (k, d)``, ``budget`` evaluations split evenly
        (the remainder to the first searches); one result per start.

        ``seeds`` (one per start) reseed the method between searches; ``progress`` sees the
        evaluations of all the searches together. Methods whose searches can share one
        batched call of the objective (Adam) override this.
        """
        shares = [budget // len(inits) + (i < budget % len(inits)) for i in range(len(inits))]
        results, done = [], 0
        for i, (init, share) in enumerate(zip(inits, shares)):
            if seeds is not None:
                self.seed = seeds[i]
            report = None if progress is None else \
                (lambda n, _b, best, latent, d=done: progress(d + n, budget, best, latent))
            results.append(self.minimize(objective, init, share, report))
            done += results[-1].evaluations
        return results
