"""GGL's optional pixel-space refinement after the latent search (``refine_steps``).

Adam on the pixels of the generated images, on the same gradient-matching objective plus
``tv`` x total variation, boxed to the valid pixel range; the result is kept only where it
lowers the gradient loss. Without the TV term it drives the loss to ~0 with high-frequency
noise (experiments/README.md).
"""
from __future__ import annotations

import torch

from ggl.attacks.base import step_in_box
from ggl.contracts import Observation
from ggl.objective import GradientMatching, total_variation


def refine_pixels(observation: Observation, objective: GradientMatching, images: torch.Tensor,
                  labels: torch.Tensor, latent_loss: float, steps: int, lr: float, tv: float
                  ) -> tuple[torch.Tensor, float, dict]:
    """Refine ``images (B, C, H, W)``, whose gradient loss is ``latent_loss``, for ``steps``
    Adam steps of lr ``lr`` (cosine-annealed).

    Returns:
        ``(images, their gradient loss, facts for the record)``: the lowest-loss images seen
        (the given ones if no step lowered the loss).
    """
    low, high = observation.pixel_bounds()
    pixels = images.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([pixels], lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    best_loss, best = latent_loss, images.detach().clone()
    for _ in range(steps):
        value = objective(pixels[None], labels)[0]
        if value.item() < best_loss:
            best_loss, best = value.item(), pixels.detach().clone()
        if tv:
            value = value + tv * total_variation(pixels[None])[0]
        step_in_box(value, optimizer, schedule, pixels, low, high)
    return best, best_loss, {"steps": steps, "lr": lr, "gradient_loss_before": latent_loss,
                             "tv": tv, "gradient_loss_after": best_loss,
                             "kept": best_loss < latent_loss}
