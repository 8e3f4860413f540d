"""Sparsification: zero entries by magnitude (compression) or at random (pruning).

The attacker sees which entries were zeroed, so both are modelled by applying the received
zero pattern to trial gradients as a mask: a multiplication, differentiable (GGL's own
adaptive compression recomputed percentiles in numpy, which is not).
"""
from __future__ import annotations

from typing import Sequence

import torch

from ggl.defenses.base import (AttackerModel, BaseDefense, check_non_negative, check_percent,
                               draw, percentile)
from ggl.defenses.noise import laplace_noise, noise_model
from ggl.errors import GGLError


def zero_pattern_model(observed: Sequence[torch.Tensor]) -> AttackerModel:
    """Mask trial gradients with the received nonzero pattern."""
    masks = [(g != 0).to(g.dtype) for g in observed]
    kept = sum(m.sum().item() for m in masks) / sum(m.numel() for m in masks)
    return AttackerModel(transform=lambda trial: [t * m for t, m in zip(trial, masks)],
                         facts={"mask": "received zero pattern", "kept_fraction": kept})


class Compression(BaseDefense):
    """GGL's gradient sparsification: per parameter tensor, zero every entry whose magnitude
    is below the ``p``-th percentile of that tensor's magnitudes (``p`` in percent; GGL's
    CLI default 20, the paper's tables 90; seed 003's "prune the smallest 20%")."""

    name = "compression"
    param_name = "p"
    default_param = 20.0
    summary = "per layer, zero the entries below the p-th percentile of |g| (p in %)"

    def check(self):
        check_percent(self.name, self.param)

    def apply(self, gradient, context):
        defended = []
        for g in gradient:
            magnitude = g.abs()
            threshold = percentile(magnitude, self.param)
            defended.append(torch.where(magnitude < threshold, torch.zeros_like(g), g))
        return defended

    def attacker_model(self, observed, known=True, batch_size=1):
        return zero_pattern_model(observed)


class Pruning(BaseDefense):
    """Random pruning: every entry is kept with probability ``1 - p/100`` (a Bernoulli mask
    the server never sees), optionally followed by noise on the kept entries: the Bayes
    paper's soft pruning (``pruning:50,noise=0.1`` = ``soft_gaussian_pruning_0.5_0.1``,
    ``pruning:50,laplace=0.1`` = ``soft_pruning_0.5_0.1``).

    Attacker side: the received zeros are the mask; the noise is modelled by its likelihood
    on the kept coordinates (masked trial entries and received zeros agree elsewhere).
    """

    name = "pruning"
    param_name = "p"
    default_param = 50.0
    summary = "zero each entry with probability p% (random mask); noise=/laplace= add noise"
    options = {"noise": (float, 0.0, "Gaussian sigma on the kept entries"),
               "laplace": (float, 0.0, "Laplace scale b on the kept entries")}
    deterministic = False

    def check(self):
        check_percent(self.name, self.param)
        check_non_negative(self.name, "noise sigma", self.noise)
        check_non_negative(self.name, "laplace scale b", self.laplace)
        if self.noise and self.laplace:
            raise GGLError("pruning: give noise= or laplace=, not both")

    def apply(self, gradient, context):
        generator = context.get("generator")
        defended = []
        for g in gradient:
            mask = (draw(g.shape, g, generator, "uniform") >= self.param / 100).to(g.dtype)
            if self.noise:
                g = g + self.noise * draw(g.shape, g, generator)
            elif self.laplace:
                g = g + laplace_noise(g.shape, g, self.laplace, generator)
            defended.append(g * mask)
        return defended

    def attacker_model(self, observed, known=True, batch_size=1):
        model = zero_pattern_model(observed)
        if self.noise or self.laplace:
            kind, scale = ("gaussian", self.noise) if self.noise else ("laplace", self.laplace)
            noise = noise_model(kind, scale, observed, known)
            model.likelihood, model.likelihood_name = noise.likelihood, noise.likelihood_name
            model.facts.update(noise.facts)
        return model
