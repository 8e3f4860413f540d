"""Additive noise (Gaussian, Laplace) and the Bayes-optimal loss that models it.

Against noise the attacker cannot undo anything; what it can do is score trial gradients
by the likelihood of the received one (seed 002, Balunovic et al. ICLR 2022):
Gaussian sigma -> ``sum ||g~ - g||^2 / (2 sigma^2)``, Laplace b -> ``sum |g~ - g| / b``,
summed over every entry (no layer averaging). The scale is known or estimated from the
received gradient, whose entries are mostly noise: ``sigma ~ 1.4826 median|g|`` (the
Gaussian MAD rule), ``b ~ median|g| / ln 2`` (the Laplace median).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ggl.defenses.base import (AttackerModel, BaseDefense, Distance, Gradients, check_non_negative,
                               draw, flat_magnitudes)


def gaussian_nll(sigma: float) -> Distance:
    """``sum_l w_l ||g~_l - g_l||^2 / (2 sigma^2)`` (weights 1, or 0 for a dropped layer)."""
    def distance(trial: Gradients, target: Gradients, weights: torch.Tensor) -> torch.Tensor:
        per_layer = torch.stack([(t - g).pow(2).flatten(1).sum(1)
                                 for t, g in zip(trial, target)], dim=1)
        return per_layer @ weights / (2 * sigma ** 2)
    return distance


def laplace_nll(b: float) -> Distance:
    """``sum_l w_l ||g~_l - g_l||_1 / b``."""
    def distance(trial: Gradients, target: Gradients, weights: torch.Tensor) -> torch.Tensor:
        per_layer = torch.stack([(t - g).abs().flatten(1).sum(1)
                                 for t, g in zip(trial, target)], dim=1)
        return per_layer @ weights / b
    return distance


def laplace_noise(shape: torch.Size, like: torch.Tensor, scale: float,
                  generator: torch.Generator | None) -> torch.Tensor:
    """Laplace(0, scale) by inverting its CDF on a uniform draw (seedable, unlike
    ``torch.distributions``)."""
    u = draw(shape, like, generator, "uniform").double() - 0.5
    u = u.clamp(-0.5 + 1e-12, 0.5 - 1e-12)
    return (-scale * u.sign() * torch.log1p(-2 * u.abs())).to(like.dtype)


def noise_model(kind: str, scale: float, observed: Sequence[torch.Tensor], known: bool
                ) -> AttackerModel:
    """The likelihood of ``kind`` (``gaussian``/``laplace``) noise, with the scale known or
    estimated from the nonzero entries of the received gradient."""
    if not known:
        magnitudes = flat_magnitudes(observed)
        median = magnitudes[magnitudes != 0].median().item()
        scale = 1.4826 * median if kind == "gaussian" else median / math.log(2)
    if scale <= 0:          # no noise: nothing to model
        return AttackerModel(facts={kind: 0.0})
    likelihood = gaussian_nll(scale) if kind == "gaussian" else laplace_nll(scale)
    return AttackerModel(likelihood=likelihood, likelihood_name=f"{kind}({scale:.4g})",
                         facts={f"{kind}_scale": scale,
                                "scale": "known" if known else "estimated"})


class GaussianNoise(BaseDefense):
    """Add ``N(0, sigma^2)`` to every entry (GGL: CLI default 0.01, paper 0.1)."""

    name = "noise"
    param_name = "sigma"
    default_param = 0.01
    summary = "add Gaussian noise N(0, sigma^2) to every entry"
    deterministic = False

    def check(self):
        check_non_negative(self.name, "sigma", self.param)

    def apply(self, gradient, context):
        generator = context.get("generator")
        return [g + self.param * draw(g.shape, g, generator) for g in gradient]

    def attacker_model(self, observed, known=True, batch_size=1):
        return noise_model("gaussian", self.param, observed, known)


class LaplaceNoise(BaseDefense):
    """Add Laplace(0, b) noise to every entry (the Bayes paper's ``dp_laplacian``)."""

    name = "laplace"
    param_name = "b"
    default_param = 0.01
    summary = "add Laplace noise of scale b to every entry"
    deterministic = False

    def check(self):
        check_non_negative(self.name, "the scale b", self.param)

    def apply(self, gradient, context):
        generator = context.get("generator")
        return [g + laplace_noise(g.shape, g, self.param, generator) for g in gradient]

    def attacker_model(self, observed, known=True, batch_size=1):
        return noise_model("laplace", self.param, observed, known)
