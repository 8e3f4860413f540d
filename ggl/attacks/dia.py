"""The Dropout Inversion Attack (Scheliga et al. 2022) and its oracle baseline.

A client training with dropout computes its gradient under random masks the server never
sees; Inverting Gradients, which evaluates the victim with dropout off (as the original
does), matches the wrong function and fails. ``dia`` optimizes the dummy image and one
continuous mask per dropout layer jointly: the mask has the layer's activation shape
``(B, *activation)``, starts as a Bernoulli(1 - p) draw, is applied as ``x * m / (1 - p)``
and clipped to [0, 1] after every step; a regularizer ``sum_layers |(1 - mean(m)) - p|`` keeps each layer's drop rate near p.
Only the image gradient is sign-flipped (IG's signed Adam); the masks take plain Adam steps.

``wiig`` is IG given the client's true masks. It is an **oracle upper bound, not an attack**:
the masks come from the Secret, which no attacker has; ``ggl.api.run`` hands them over
only to attacks that declare ``uses_secret_masks`` and records that in ``run.json``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ggl.attacks.base import Progress, Reconstruction
from ggl.attacks.pixel import IGOptions, InvertingGradients
from ggl.contracts import Observation
from ggl.dropout import MaskModel, supplied_masks
from ggl.errors import GGLError
from ggl.objective import EvaluationPath


def mask_model(observation: Observation) -> MaskModel:
    """The attacker's model of the victim's dropout masks (no layers without dropout: then
    ``dia`` and ``wiig`` are IG)."""
    return MaskModel(observation.model, (observation.batch_size, *observation.image_shape),
                     observation.device)


@dataclass
class DIAOptions(IGOptions):
    """The original's settings: IG's recipe (signed Adam lr 0.1, cosine distance, boxed
    pixels, lr x0.1 at 3/8, 5/8, 7/8) with TV 1e-5 and the mask-rate weight 1e-4."""

    tv: float = 1e-5
    mask_rate_weight: float = 1e-4
    path: EvaluationPath = "loop"


class DropoutInversion(InvertingGradients):
    """DIA: image and dropout masks optimized jointly against the shared gradient."""

    name = "dia"
    needs_dropout = True
    summary = "Dropout Inversion Attack: image + continuous dropout masks (Scheliga et al. 2022)"
    Options = DIAOptions
    supports_group = False        # extra variables per image set

    def _validate(self):
        super()._validate()
        if self.options.mask_rate_weight < 0:
            raise GGLError(f"mask_rate_weight must be non-negative, got "
                           f"{self.options.mask_rate_weight}")

    def _extra_variables(self, observation: Observation, generator) -> list[torch.Tensor]:
        """One mask per dropout layer, ``(B, *activation)``, drawn Bernoulli(1 - p)."""
        self._masks = mask_model(observation)
        return [m.requires_grad_(True) for m in self._masks.initial(generator)]

    def _matching_loss(self, objective, observation, images, masks, labels) -> torch.Tensor:
        """Gradient distance (+ TV) under the current masks, plus the mask-rate regularizer."""
        with supplied_masks(observation.model, masks):
            loss = objective(images.unsqueeze(0), labels)[0]
        if not masks:
            return loss
        return loss + self.options.mask_rate_weight * self._masks.rate_gap(masks)

    def _project_extras(self, masks: list[torch.Tensor]) -> None:
        MaskModel.project(masks)

    def _extra_info(self, masks: list[torch.Tensor]) -> dict:
        return {"mask_drop_rates": self._masks.drop_rates(masks),
                "dropout_rates": self._masks.rates}


class OracleIG(InvertingGradients):
    """WIIG: IG run with the client's true dropout masks — an oracle upper bound."""

    needs_dropout = True
    name = "wiig"
    summary = "oracle: IG given the client's secret dropout masks (an upper bound, not an attack)"
    Options = DIAOptions
    uses_secret_masks = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.secret_masks: tuple[torch.Tensor, ...] | None = None

    def _reconstruct(self, observation: Observation, progress: Progress) -> Reconstruction:
        if self.secret_masks is None:
            raise GGLError("wiig is an oracle: it needs the client's secret dropout masks, "
                           "which ggl.api.run hands it; an attack on an Observation alone "
                           "cannot run it")
        with supplied_masks(observation.model, self.secret_masks):
            result = super()._reconstruct(observation, progress)
        result.info["oracle"] = ("used the client's secret dropout masks: an upper bound, "
                                 "not an attack")
        return result
