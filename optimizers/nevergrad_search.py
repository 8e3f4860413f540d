"""Any nevergrad optimizer (CMA, DiagonalCMA, TwoPointsDE, PSO, ...) by its registry name.

GGL's way: ``ng.optimizers.registry[method](parametrization=ng.p.Array(init=z0), budget=...)``
asked for 50 candidates at a time. ggl asks a whole population, scores it in one batched
call of the objective, and tells the losses back; the budget counts evaluations, the last
ask may be a partial population. The result is the best latent actually evaluated.
"""
from __future__ import annotations

import numpy as np
import torch

from ggl.optimizers.base import BestTracker, LatentOptimizer, Objective, SearchResult

#: a diverged candidate is told this loss (nevergrad rejects non-finite values)
DIVERGED = 1e30


def registry() -> dict:
    """nevergrad's optimizer registry (name -> optimizer class or configured family)."""
    import nevergrad as ng

    return ng.optimizers.registry


class NevergradSearch(LatentOptimizer):
    """Ask/tell in population-sized batches with a nevergrad optimizer ``method``."""

    name = "nevergrad"

    def __init__(self, method: str = "CMA", population: int = 50, seed: int = 0,
                 bounds: float | None = None):
        super().__init__(population, seed, bounds)
        self.method = method
        self.name = method

    def _minimize(self, objective: Objective, init: torch.Tensor, budget: int,
                  tracker: BestTracker) -> SearchResult:
        import nevergrad as ng

        parametrization = ng.p.Array(init=init.double().numpy())
        if self.bounds is not None:
            parametrization.set_bounds(-self.bounds, self.bounds)
        parametrization.random_state = np.random.RandomState(self.seed)
        optimizer = registry()[self.method](parametrization=parametrization, budget=budget,
                                            num_workers=self.population)
        while tracker.remaining > 0:
            candidates = [optimizer.ask() for _ in range(min(self.population, tracker.remaining))]
            latents = torch.from_numpy(np.stack([c.value for c in candidates])).float()
            values = tracker.record(latents, objective(latents))
            for candidate, value in zip(candidates, values):
                optimizer.tell(candidate, min(value, DIVERGED))
        return tracker.result(method=self.method, population=self.population)
