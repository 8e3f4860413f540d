"""TuRBO-1 (Eriksson et al. 2019), written on BoTorch / GPyTorch primitives.

GGL's Bayesian-optimization search, with the original's settings: the latent box
``[-2, 2]^d`` (scaled to the unit cube), 256 Latin-hypercube initial points, batches of 10,
an ARD Matérn-5/2 Gaussian process, Thompson sampling over 5000 candidates drawn in the
trust region (each coordinate perturbed with probability ``min(1, 20 / d)``), trust-region
side 0.8 in ``[0.5^7, 1.6]``, doubled after 3 successes in a row and halved after
``ceil(max(4 / batch, d / batch))`` failures. When the region collapses below its minimum,
TuRBO-1 restarts from a fresh initial design; the best latent over all restarts is kept.

The GP's hyperparameters get ``FIT_STEPS`` (50) optimizer steps per batch, as in the
original TuRBO code (50 Adam steps); BoTorch's default L-BFGS runs until convergence
(measured on 300 points in 128-d: 3.0 s for 50 steps, 10.4 s for 200). Beyond the original: the GP
of a trust region is fitted on at most ``max_train_points`` of its most recent evaluations
(fitting is cubic in the number of points).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ggl.errors import GGLError
from ggl.optimizers.base import BestTracker, LatentOptimizer, Objective, SearchResult

#: optimizer steps on the GP's hyperparameters per batch
FIT_STEPS = 50


@dataclass
class TrustRegion:
    """TuRBO-1's trust-region state (side length in the unit cube and success counters)."""

    dim: int
    batch_size: int
    length: float = 0.8
    length_min: float = 0.5 ** 7
    length_max: float = 1.6
    success_tolerance: int = 3
    successes: int = 0
    failures: int = 0
    best_value: float = -math.inf

    @property
    def failure_tolerance(self) -> int:
        return math.ceil(max(4.0 / self.batch_size, self.dim / self.batch_size))

    def update(self, values: torch.Tensor) -> None:
        """Account for a batch of new objective values (to be MAXIMIZED)."""
        best_new = values.max().item()
        if best_new > self.best_value + 1e-3 * abs(self.best_value):
            self.successes, self.failures = self.successes + 1, 0
        else:
            self.successes, self.failures = 0, self.failures + 1
        if self.successes == self.success_tolerance:
            self.length, self.successes = min(2.0 * self.length, self.length_max), 0
        elif self.failures == self.failure_tolerance:
            self.length, self.failures = self.length / 2.0, 0
        self.best_value = max(self.best_value, best_new)

    @property
    def collapsed(self) -> bool:
        return self.length < self.length_min


class TuRBO(LatentOptimizer):
    """TuRBO-1 on BoTorch. ``population`` is the batch size (10); ``bounds`` the box (2)."""

    name = "turbo"

    def __init__(self, population: int = 10, seed: int = 0, bounds: float | None = 2.0,
                 initial_points: int = 256, candidates: int = 5000,
                 max_train_points: int = 1024):
        super().__init__(population, seed, 2.0 if bounds is None else bounds)
        if initial_points < 2:
            raise GGLError(f"TuRBO needs at least 2 initial points, got {initial_points}")
        self.initial_points, self.candidates = initial_points, candidates
        self.max_train_points = max_train_points

    def minimum_budget(self) -> int:
        return min(self.initial_points, 2 * self.population) + self.population

    def _to_latent(self, unit: torch.Tensor) -> torch.Tensor:
        return ((2 * unit - 1) * self.bounds).float()

    def _initial_design(self, count: int, dim: int, seed: int) -> torch.Tensor:
        from scipy.stats import qmc

        return torch.from_numpy(qmc.LatinHypercube(d=dim, seed=seed).random(count))

    def _fit(self, x: torch.Tensor, y: torch.Tensor):
        import gpytorch
        from botorch.exceptions.errors import ModelFittingError
        from botorch.fit import fit_gpytorch_mll
        from botorch.models import SingleTaskGP
        from botorch.models.transforms.outcome import Standardize
        from gpytorch.constraints import Interval
        from gpytorch.kernels import MaternKernel, ScaleKernel
        from gpytorch.likelihoods import GaussianLikelihood
        from gpytorch.mlls import ExactMarginalLogLikelihood

        dim = x.shape[1]
        likelihood = GaussianLikelihood(noise_constraint=Interval(1e-8, 1e-3))
        kernel = ScaleKernel(MaternKernel(nu=2.5, ard_num_dims=dim,
                                          lengthscale_constraint=Interval(0.005, 4.0)))
        model = SingleTaskGP(x, y, covar_module=kernel, likelihood=likelihood,
                             outcome_transform=Standardize(m=1))
        with gpytorch.settings.max_cholesky_size(2000):
            try:
                fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model),
                                 optimizer_kwargs={"options": {"maxiter": FIT_STEPS}})
            except ModelFittingError:   # every fitting retry failed: keep the prior
                self._fit_failures += 1  # hyperparameters, as TuRBO does (counted in info)
        return model

    def _candidates(self, model, x: torch.Tensor, y: torch.Tensor, region: TrustRegion,
                    rng: torch.Generator) -> torch.Tensor:
        from botorch.generation import MaxPosteriorSampling
        from torch.quasirandom import SobolEngine

        dim = x.shape[1]
        center = x[y.argmax()].clone()
        weights = model.covar_module.base_kernel.lengthscale.squeeze().detach().reshape(-1)
        weights = weights / weights.mean()
        weights = weights / torch.prod(weights.pow(1.0 / len(weights)))
        lower = (center - weights * region.length / 2).clamp(0.0, 1.0)
        upper = (center + weights * region.length / 2).clamp(0.0, 1.0)
        seed = int(torch.randint(2 ** 31 - 1, (1,), generator=rng))
        perturbation = SobolEngine(dim, scramble=True, seed=seed).draw(self.candidates)
        perturbation = lower + (upper - lower) * perturbation.to(x.dtype)
        mask = torch.rand(self.candidates, dim, generator=rng, dtype=x.dtype) <= min(1.0, 20.0 / dim)
        empty = torch.where(mask.sum(1) == 0)[0]
        mask[empty, torch.randint(dim, (len(empty),), generator=rng)] = True
        candidates = center.expand(self.candidates, dim).clone()
        candidates[mask] = perturbation[mask]
        # Thompson sampling draws from torch's global generator: seed it inside a fork, so
        # the caller's global random state is left as it was
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            return MaxPosteriorSampling(model=model, replacement=False)(
                candidates, num_samples=min(region.batch_size, self._remaining))

    def _evaluate(self, objective: Objective, unit: torch.Tensor,
                  tracker: BestTracker) -> torch.Tensor:
        """Score unit-cube points ``(n, d)``; returns values to maximize ``(n, 1)``."""
        latents = self._to_latent(unit)
        values = torch.tensor(tracker.record(latents, objective(latents)), dtype=torch.double)
        finite = values[torch.isfinite(values)]
        worst = finite.max().item() if len(finite) else 1e30
        return -values.nan_to_num(posinf=worst).unsqueeze(1)

    def _minimize(self, objective: Objective, init: torch.Tensor, budget: int,
                  tracker: BestTracker) -> SearchResult:
        dim = init.numel()
        rng = torch.Generator().manual_seed(self.seed)
        restarts = self._fit_failures = 0
        while tracker.remaining > 0:
            self._remaining = tracker.remaining
            count = min(self.initial_points, max(2, tracker.remaining - self.population),
                        tracker.remaining)
            x = self._initial_design(count, dim, self.seed + restarts)
            y = self._evaluate(objective, x, tracker)
            region = TrustRegion(dim, self.population, best_value=y.max().item())
            while tracker.remaining > 0 and not region.collapsed:
                self._remaining = tracker.remaining
                model = self._fit(x[-self.max_train_points:], y[-self.max_train_points:])
                batch = self._candidates(model, x[-self.max_train_points:],
                                         y[-self.max_train_points:], region, rng)
                values = self._evaluate(objective, batch, tracker)
                region.update(values)
                x, y = torch.cat([x, batch]), torch.cat([y, values])
            restarts += int(region.collapsed)
        return tracker.result(restarts=restarts, batch_size=self.population,
                              initial_points=self.initial_points,
                              gp_fit_failures=self._fit_failures)
