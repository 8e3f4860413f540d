"""Global L2 norm clipping of the whole update (GGL: ``g * min(1, S / (||g|| + 1e-6))``)."""
from __future__ import annotations

import torch

from ggl.defenses.base import AttackerModel, BaseDefense
from ggl.errors import GGLError

EPS = 1e-6


def global_norm(gradient) -> torch.Tensor:
    """L2 norm over every entry of every tensor; for trial gradients ``(P, ...)`` -> ``(P,)``."""
    return torch.stack([g.pow(2).flatten(1).sum(1) for g in gradient]).sum(0).sqrt()


class Clipping(BaseDefense):
    """Scale the update down to L2 norm ``S`` when it is larger (GGL: S = 4)."""

    name = "clipping"
    param_name = "S"
    default_param = 4.0
    summary = "scale the whole update to L2 norm at most S"

    def check(self):
        if not self.param > 0:
            raise GGLError(f"clipping: the bound S must be > 0, got {self.param:g}")

    def apply(self, gradient, context):
        norm = torch.sqrt(sum(g.pow(2).sum() for g in gradient))
        factor = torch.clamp(self.param / (norm + EPS), max=1.0)
        return [g * factor for g in gradient]

    def attacker_model(self, observed, known=True, batch_size=1):
        """Clip trials the same way, with S known or estimated as the received norm (GGL's
        estimate: exact whenever the clip was active)."""
        bound = self.param if known else torch.sqrt(sum(g.pow(2).sum() for g in observed)).item()

        def transform(trial):
            factor = torch.clamp(bound / (global_norm(trial) + EPS), max=1.0)
            return [t * factor.view(-1, *([1] * (t.dim() - 1))) for t in trial]

        return AttackerModel(transform=transform,
                             facts={"S": bound, "bound": "known" if known else "estimated"})
