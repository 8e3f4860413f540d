"""Robbing the Fed (Fowl et al., ICLR 2022): a malicious server's closed-form attack.

The server sends the victim behind an imprint block (``ggl.imprint``): ``bins`` ReLU
units that cut a measurement of the image (its brightness, or a random projection) at
quantiles of public data. Bin i fires for every image whose measurement exceeds its cut,
so the differences of consecutive bins' weight and bias gradients hold the images that
fall between two cuts, and an image alone in its bin is their ratio, exactly, whatever
the batch size. Two images in one bin come back as their mixture; an image below the
first cut, or one whose ``g(x)`` vanishes, is lost.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch

from ggl.attacks.base import Attack, Progress, Reconstruction
from ggl.contracts import Observation
from ggl.errors import GGLError
from ggl.imprint import STATISTICS, ImprintedModel, imprint
from ggl.labels import infer_labels


@dataclass
class RobbingTheFedOptions:
    """``bins``: the imprint block's bins (the paper: 1,000 for batches up to ~200);
    ``statistic``: the measurement they cut (brightness, or a random projection);
    ``scale``: the size of the restoring layer's columns (large values make a client's
    local training diverge, see the README); ``min_share``: a bin is read when its bias
    difference is at least this fraction of the largest one."""

    bins: int = 128
    statistic: Annotated[str, STATISTICS] = "brightness"
    scale: float = 1.0
    min_share: float = 1e-4


class RobbingTheFed(Attack):
    """Robbing the Fed: an imprint block before the model, images read off its gradient."""

    name = "rtf"
    summary = "Robbing the Fed: malicious server's imprint block, closed-form images (any B)"
    Options = RobbingTheFedOptions
    threat_model = "active"

    def _validate(self) -> None:
        super()._validate()
        o = self.options
        if o.bins < 2:
            raise GGLError(f"bins must be at least 2, got {o.bins}")
        if not o.scale > 0:
            raise GGLError(f"scale must be positive, got {o.scale}")
        if not 0 < o.min_share < 1:
            raise GGLError(f"min_share must be in (0, 1), got {o.min_share}")

    def server_model(self, model: torch.nn.Module, public_images: torch.Tensor):
        """The model the malicious server sends instead of ``model`` (and what it did)."""
        o = self.options
        return imprint(model, public_images, bins=o.bins, statistic=o.statistic,
                       scale=o.scale, seed=self.seed)

    def _reconstruct(self, observation: Observation, progress: Progress) -> Reconstruction:
        model = observation.model
        if not isinstance(model, ImprintedModel):
            raise GGLError("rtf reads the imprint block a malicious server sent, and the "
                           "observed model has none: run it with ggl run (the active "
                           "threat model puts the block there)")
        gradient = dict(zip((name for name, _ in model.named_parameters()),
                            observation.gradient))
        weights = gradient["block.imprint.weight"].double()          # (k, d)
        biases = gradient["block.imprint.bias"].double()             # (k,)
        if not (torch.isfinite(weights).all() and torch.isfinite(biases).all()):
            raise GGLError("the shared update is not finite (NaN or inf): the client's "
                           "training diverged behind the imprint block (its restoring "
                           "layer's scale; see the README's Robbing the Fed section): "
                           "nothing can be read")
        weight_steps = weights - torch.cat([weights[1:], torch.zeros_like(weights[:1])])
        bias_steps = biases - torch.cat([biases[1:], torch.zeros_like(biases[:1])])
        strength = bias_steps.abs()
        readable = strength >= self.options.min_share * strength.max().clamp_min(1e-300)
        order = torch.argsort(strength * readable, descending=True)
        order = order[readable[order]][:observation.batch_size]
        found = (weight_steps[order] / bias_steps[order, None]).float()
        low, high = observation.pixel_bounds()
        images = ((low + high) / 2).expand(observation.batch_size,
                                           *observation.image_shape).clone()
        images[:len(found)] = found.view(-1, *observation.image_shape)
        images = torch.max(torch.min(images, high), low)
        progress(1, 1, float("nan"))      # closed form: no loss to report
        info = {"bins_read": len(found), "bins_with_images": int(readable.sum()),
                "bins": len(biases), "server": "active: imprint block before the model",
                "unfilled": observation.batch_size - len(found)}
        return Reconstruction(images=images, labels=infer_labels(observation),
                              loss=float("nan"), evaluations=1, iterations=1, info=info)
