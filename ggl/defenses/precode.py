"""PRECODE (Scheliga et al., WACV 2022): a variational bottleneck before the classifier head.

PRECODE is a model extension, not a transform of the update: the global model itself gets a
variational bottleneck between its features and its head (the last ``nn.Linear``)::

    r (B, F) -> encoder Linear(F, 2k) -> mu, logvar (B, k) each
             -> z = mu + eps * exp(logvar / 2),  eps ~ N(0, 1)  (a fresh draw every pass)
             -> decoder Linear(k, F) -> head

The draw happens in train AND eval mode: the client computes its update with sampling
active, and the server cannot know the draws. ``apply`` therefore returns the gradient as
it is; the defense acts through ``wrap_model``.

Not included: PRECODE trains with cross-entropy + beta * KL(N(mu, exp(logvar)) || N(0, 1))
(beta = 1e-3), but ggl's client loss (``ggl.scenario.client_gradient``) is cross-entropy
only, so the shared update here has no KL term. For B = 1 this does not change what the
first layer's gradient reveals: any per-example loss gives ``dW = g x^T``, ``db = g``
(see ``ggl.attacks.analytic``).
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from ggl.defenses.base import BaseDefense
from ggl.errors import GGLError


class VariationalBottleneck(nn.Module):
    """``r (..., F) -> (..., F)`` through a sampled ``k``-dimensional code.

    Args:
        features: F, the width of the head's input.
        k: the bottleneck size.
    """

    def __init__(self, features: int, k: int):
        super().__init__()
        self.k = k
        self.encoder = nn.Linear(features, 2 * k)
        self.decoder = nn.Linear(k, features)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.encoder(r).chunk(2, dim=-1)
        # randn_like, not a seeded generator: it is what vmap(randomness="different") can batch
        eps = torch.randn_like(mu)
        return self.decoder(mu + eps * torch.exp(0.5 * logvar))


class PrecodeVictim(nn.Module):
    """A victim whose head ``Linear(F, K)`` became ``Sequential(VariationalBottleneck, head)``.

    ``parameters()`` keep the victim's order with the bottleneck's encoder and decoder just
    before the head; ``.train()``/``.eval()`` reach every submodule as before.
    Input and output are the victim's: ``(B, C, H, W) -> (B, K)``.
    """

    def __init__(self, victim: nn.Module):
        super().__init__()
        self.victim = victim

    @property
    def bottleneck(self) -> VariationalBottleneck:
        return next(m for m in self.victim.modules() if isinstance(m, VariationalBottleneck))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.victim(x)


class Precode(BaseDefense):
    """PRECODE with bottleneck size k (the parameter, default 256, as in the paper).

    Attacker side: nothing to model in the update (it is not transformed); the sampling
    lives in the model the server holds. ``precode-analytic`` breaks it: the first linear
    layer's gradient gives its input in closed form for B = 1.
    """

    wraps_model = True
    name = "precode"
    param_name = "k"
    default_param = 256.0
    summary = "PRECODE: a sampled variational bottleneck of size k before the classifier head"

    def check(self):
        if not (self.param >= 1 and float(self.param).is_integer()):   # also rejects NaN, inf
            raise GGLError(f"precode: k (the bottleneck size) must be an integer >= 1, e.g. "
                           f"precode:256, got {self.param:g}")

    @property
    def k(self) -> int:
        return int(self.param)

    def apply(self, gradient, context):
        return [g.clone() for g in gradient]

    def wrap_model(self, model: nn.Module, seed: int = 0) -> nn.Module:
        """A deep copy of ``model`` with a bottleneck before its last ``nn.Linear``, the new
        layers initialized from ``seed``; ``model`` itself is not changed."""
        victim = copy.deepcopy(model)
        linears = [(name, m) for name, m in victim.named_modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise GGLError("precode inserts its bottleneck before the model's classifier "
                           "head (its last nn.Linear), but this model has no nn.Linear")
        name, head = linears[-1]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            bottleneck = VariationalBottleneck(head.in_features, self.k)
        bottleneck.to(device=head.weight.device, dtype=head.weight.dtype)
        bottleneck.train(head.training)
        extended = nn.Sequential(bottleneck, head).train(head.training)
        if not name:                          # the whole model is one Linear
            return PrecodeVictim(extended)
        parent_name, _, child = name.rpartition(".")
        setattr(victim.get_submodule(parent_name), child, extended)
        return PrecodeVictim(victim)
