"""CMA-ES through pycma (``cma``), one ask and one tell per population.

nevergrad's CMA wraps the same library, but ggl asked and told it one candidate at a time
and it rebuilds its bookkeeping on every tell: on LeNet with the shipped prior that was
45-50% of a whole GGL search (issue 24). Here a generation is one ``ask`` of the whole
population, one batched call of the objective and one ``tell``.

The search is nevergrad's ``CMA`` (its ``MetaCMA``), which picks a configuration of pycma
by the problem (:func:`configuration`): with ggl's population of 50 that is nevergrad's
``CMApara``, separable (diagonal) elitist CMA-ES with step size 0.8905 and population
``max(P, 4 + int(8 ln d))``. Like nevergrad it searches around ``init`` (the standardized
space: ``latent = init + x``), draws its normals from a generator seeded by ``seed`` and
starts afresh from ``init`` when pycma's stopping rules fire. The budget counts
evaluations; the last generation may score only part of its population, and then tells
nothing: the search ends there.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from ggl.optimizers.base import BestTracker, LatentOptimizer, Objective, SearchResult

#: a diverged candidate is told this loss (CMA-ES ranks candidates, so any large finite value)
DIVERGED = 1e30


class Configuration(NamedTuple):
    """pycma's settings: step size, population, separable covariance, elitism."""

    sigma: float
    popsize: int
    diagonal: bool
    elitist: bool
    nevergrad_name: str


def configuration(dimension: int, population: int, budget: int, bounded: bool
                  ) -> Configuration:
    """The CMA-ES that nevergrad's ``CMA`` (``MetaCMA``, nevergrad 1.0) runs for a problem of
    ``dimension`` with ``population`` candidates per ask (its ``num_workers``), ``budget``
    evaluations, and latents boxed or not: nevergrad's table of tuned variants."""
    def size(factor: float) -> int:
        return max(population, 4 + int(factor * math.log(dimension)))

    if bounded:         # nevergrad shrinks the step in a fully bounded space
        shrink = 0.3 if dimension < 18 else 0.15
        return Configuration(1.5884 * shrink, size(1), True, True, "CMAbounded")
    if budget < 50:
        if dimension <= 15:
            return Configuration(0.4847, size(1), False, True, "CMAtuning")
        return Configuration(0.3607, size(3), False, False, "CMAsmall")
    if population > 20:
        return Configuration(0.8905, size(8), True, True, "CMApara")
    return Configuration(0.4699, size(3), False, False, "CMAstd")


class PyCMASearch(LatentOptimizer):
    """CMA-ES (pycma), a whole population per ask/tell: nevergrad's CMA, batched."""

    name = "CMA"

    def _minimize(self, objective: Objective, init: torch.Tensor, budget: int,
                  tracker: BestTracker) -> SearchResult:
        import cma

        start = init.double().numpy()
        chosen = configuration(start.size, self.population, budget, self.bounds is not None)
        options = {"popsize": chosen.popsize, "CMA_diagonal": chosen.diagonal,
                   "CMA_elitist": chosen.elitist, "seed": np.nan, "verbose": -9,
                   "randn": np.random.RandomState(self.seed).randn}
        if self.bounds is not None:
            options["bounds"] = [list(-self.bounds - start), list(self.bounds - start)]

        def fresh():
            return cma.CMAEvolutionStrategy(np.zeros_like(start), chosen.sigma, options)

        strategy, generations, restarts = fresh(), 0, 0
        while tracker.remaining > 0:
            if strategy.stop():
                strategy, restarts = fresh(), restarts + 1
            steps = strategy.ask()
            scored = steps[:tracker.remaining]
            latents = torch.from_numpy(start + np.stack(scored)).float()
            values = tracker.record(latents, objective(latents))
            if len(scored) < len(steps):
                break
            strategy.tell(steps, [min(value, DIVERGED) for value in values])
            generations += 1
        return tracker.result(method="CMA (pycma)", configuration=chosen.nevergrad_name,
                              population=chosen.popsize, generations=generations,
                              restarts=restarts, sigma=float(strategy.sigma))
