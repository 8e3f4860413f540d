"""Any nevergrad optimizer (CMA, DiagonalCMA, TwoPointsDE, PSO, ...) by its registry name.

GGL's way: ``ng.optimizers.registry[method](parametrization=ng.p.Array(init=z0), budget=...)``
asked for 50 candidates at a time. ggl asks a whole population, scores it in one batched
call of the objective, and tells the losses back; the budget counts evaluations, the last
ask may be a partial population. The result is the best latent actually evaluated.
"""
from __future__ import annotations

import contextlib
import gc
import io
import re
import sys
import warnings

import numpy as np
import torch

from ggl.errors import GGLError
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

    def _problem(self, err: Exception) -> GGLError:
        """One line of ggl's own for what nevergrad (or the library it wraps) raised."""
        missing = re.search(r"No module named '([\w.]+)'", str(err))
        if missing:
            package = missing.group(1).split(".")[0]
            problem = (f"needs the package {package!r}, which is not installed (pip install "
                       f"{package.replace('_', '-')}); or choose another method")
        elif isinstance(err, ImportError):
            problem = f"needs a package that is not installed ({err}); or choose another method"
        elif isinstance(err, ValueError) and "parallelization" in str(err):
            problem = (f"asks for one candidate at a time (nevergrad: {err}), while ggl "
                       f"scores populations of {self.population}: give --population 1")
        else:
            problem = f"cannot run here (nevergrad: {type(err).__name__}: {err})"
        return GGLError(f"--ng_method {self.method} {' '.join(problem.split())}")

    def _build(self, parametrization, budget: int):
        """nevergrad's optimizer, or one GGLError naming what it needs. nevergrad's wrappers
        of other libraries that fail in their constructor fail again in their ``__del__``;
        that second, ignored, exception is kept off the terminal."""
        hook, sys.unraisablehook = sys.unraisablehook, lambda unraisable: None
        problem = None
        try:
            return registry()[self.method](parametrization=parametrization, budget=budget,
                                           num_workers=self.population)
        except Exception as err:          # noqa: BLE001 -- a third-party constructor
            problem = self._problem(err)
        finally:
            if problem is not None:
                gc.collect()              # the half-built optimizer goes while muted
            sys.unraisablehook = hook
        raise problem

    def check_usable(self, budget: int) -> None:
        """Build the optimizer on a 2-d stand-in and ask, tell and ask again (nevergrad's
        wrappers of other libraries import them there), its warnings and prints silenced."""
        import nevergrad as ng

        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            optimizer = self._build(ng.p.Array(shape=(2,)), max(budget, 2))
            try:
                optimizer.tell(optimizer.ask(), 0.0)
                optimizer.ask()
            except Exception as err:      # noqa: BLE001 -- a third-party library's error
                raise self._problem(err) from None

    def _minimize(self, objective: Objective, init: torch.Tensor, budget: int,
                  tracker: BestTracker) -> SearchResult:
        import nevergrad as ng

        parametrization = ng.p.Array(init=init.double().numpy())
        if self.bounds is not None:
            parametrization.set_bounds(-self.bounds, self.bounds)
        parametrization.random_state = np.random.RandomState(self.seed)
        optimizer = self._build(parametrization, budget)
        while tracker.remaining > 0:
            candidates = [optimizer.ask() for _ in range(min(self.population, tracker.remaining))]
            latents = torch.from_numpy(np.stack([c.value for c in candidates])).float()
            values = tracker.record(latents, objective(latents))
            for candidate, value in zip(candidates, values):
                optimizer.tell(candidate, min(value, DIVERGED))
        return tracker.result(method=self.method, population=self.population)
