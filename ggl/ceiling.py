"""The prior's ceiling and the search gap of a latent attack (metrics: they read the secret).

A latent attack can only return images its prior draws. The *ceiling* is the best the prior
can do for the client's image: the true image projected into the prior, i.e. Adam on the
latent (from several starts drawn from the prior) minimizing the pixel MSE to the image;
``ceiling_psnr`` is the PSNR of that projection.

The *search gap* asks whether the attack's own objective already preferred a better image:

    search_gap = objective(found latent) - objective(ceiling latent)

with the attack's objective exactly as it searched it (gradient distance + its KL term,
its labels, its defense model). A positive gap means the optimizer stopped short of a latent
its objective rates better (a search failure); a negative gap means the objective itself
prefers another image to the true one (the gradient, the defense or the prior is to blame,
not the search).

Projections depend only on the prior and the image, so they are kept per process (a sweep
projects each private image once per prior).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from ggl.metrics import psnr

#: projection: starts per image, Adam steps, step size (cosine decay to 0); after
#: ``PROJECTION_EXPLORE`` steps only the ``PROJECTION_KEEP`` best starts of each image go on
#: (measured on two private digits: 0.1-0.3 dB below keeping all 8, at 1 / 1.5 of the cost)
PROJECTION_STARTS = 8
PROJECTION_STEPS = 1000
PROJECTION_EXPLORE = 150
PROJECTION_KEEP = 2
PROJECTION_LR = 0.05
PROJECTION_SEED = 0


@dataclass
class LatentSearch:
    """What a latent attack searched, handed to the metrics with its Reconstruction.

    Attributes:
        prior: the bound prior (``ggl.generators.prior.Prior``) the attack drew images from.
        labels: ``(B,)`` the labels the prior was conditioned on and the objective used.
        latents: ``(B, latent_dim)`` the returned latents, in the reconstruction's order.
        objective: the attack's objective, ``(P, B * latent_dim)`` latents -> ``(P,)``.
    """

    prior: torch.nn.Module
    labels: torch.Tensor
    latents: torch.Tensor
    objective: Callable[[torch.Tensor], torch.Tensor]


_PROJECTIONS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def project(prior, images: torch.Tensor, labels: torch.Tensor | None = None,
            starts: int = PROJECTION_STARTS, steps: int = PROJECTION_STEPS,
            lr: float = PROJECTION_LR, explore: int = PROJECTION_EXPLORE,
            keep: int = PROJECTION_KEEP, seed: int = PROJECTION_SEED
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Project images into the prior: the latent whose image is closest in pixel MSE.

    Args:
        prior: a bound Prior.
        images: ``(B, C, H, W)`` in the victim's normalized space.
        labels: ``(B,)`` classes for a conditional prior (ignored otherwise).
        starts: latents per image drawn from the prior, optimized together; the best wins.
        steps, lr: Adam steps on the latents, cosine-decayed step size.
        explore, keep: after ``explore`` steps only the ``keep`` lowest-error starts of
            each image continue (``keep >= starts``: all do).

    Returns:
        ``latents (B, latent_dim)`` and their images' PSNR ``(B,)`` in dB on ``[0, 1]``.
    """
    batch, device = len(images), images.device
    generator = torch.Generator().manual_seed(seed)
    latents = prior.sample_latent(batch * starts, generator).to(device)
    owner = torch.arange(batch, device=device).repeat_interleave(starts)  # image of each row
    optimizer = schedule = None
    with torch.enable_grad():
        for step in range(steps + 1):
            if step == 0 or (step == explore and keep < starts):
                if step:                                # the best `keep` rows of each image
                    rank = error.detach().view(batch, -1).argsort(1)[:, :keep]
                    rows = (rank + torch.arange(batch, device=device)[:, None]
                            * (len(owner) // batch)).flatten()
                    latents, owner = latents.detach()[rows], owner[rows]
                latents = latents.detach().clone().requires_grad_(True)
                optimizer = torch.optim.Adam([latents], lr=lr)
                schedule = torch.optim.lr_scheduler.LambdaLR(     # one cosine over all steps
                    optimizer, lambda k, s0=step: 0.5 * (1 + math.cos(math.pi * (k + s0) / steps)))
            classes = labels[owner] if prior.conditional else None
            error = (prior(latents, classes) - images.detach()[owner]).pow(2).flatten(1).mean(1)
            if step == steps:
                break
            optimizer.zero_grad(set_to_none=True)
            error.sum().backward()
            optimizer.step()
            schedule.step()
    error = error.detach().view(batch, -1)
    chosen = latents.detach().view(batch, error.shape[1], -1)[
        torch.arange(batch, device=device), error.argmin(1)]
    with torch.no_grad():
        projected = prior(chosen, labels if prior.conditional else None)
    unit = lambda x: (x * prior.std + prior.mean).clamp(0, 1)   # noqa: E731
    return chosen.detach(), psnr(unit(projected), unit(images))


def cached_projection(prior, images: torch.Tensor, labels: torch.Tensor | None,
                      keys: list) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`project` each image once per process: ``keys`` holds one name per image
    (e.g. the dataset and private index); the prior's name and the label complete it."""
    latents, psnrs = [], []
    for i in range(len(images)):
        label = None if labels is None or not prior.conditional else int(labels[i])
        full_key = (prior.name, prior.image_shape, keys[i], label)
        if full_key not in _PROJECTIONS:
            single = None if label is None else labels[i:i + 1]
            _PROJECTIONS[full_key] = project(prior, images[i:i + 1], single)
        latent, value = _PROJECTIONS[full_key]
        latents.append(latent.to(images.device))
        psnrs.append(value.to(images.device))
    return torch.cat(latents), torch.cat(psnrs)


def ceiling_scores(search: LatentSearch, original: torch.Tensor, matching: list[int],
                   keys: list) -> dict:
    """The ceiling and the search gap of one latent reconstruction.

    Args:
        search: what the attack searched (its prior, labels, latents and objective).
        original: ``(B, C, H, W)`` the private images (normalized).
        matching: ``perm`` of the metrics' matching: reconstruction ``perm[i]`` shows
            ``original[i]``.
        keys: one hashable name per private image (for the per-process cache).

    Returns:
        JSON-ready: ``ceiling_psnr`` (mean), ``search_gap``, ``objective_found``,
        ``objective_ceiling`` and per image ``ceiling_psnr``.
    """
    perm = torch.as_tensor(matching, device=original.device)
    # the attack's latent at position perm[i] shows original[i]: the ceiling of original[i]
    # goes to the same position, under the label that position was searched with
    labels = search.labels.to(original.device)[perm]
    projected, psnrs = cached_projection(search.prior, original, labels, keys)
    ceiling = search.latents.detach().clone().to(original.device)
    ceiling[perm] = projected
    with torch.no_grad():
        found_value = search.objective(search.latents.reshape(1, -1)).item()
        ceiling_value = search.objective(ceiling.reshape(1, -1)).item()
    return {"ceiling_psnr": psnrs.mean().item(), "search_gap": found_value - ceiling_value,
            "objective_found": found_value, "objective_ceiling": ceiling_value,
            "per_image": {"ceiling_psnr": psnrs.tolist()}}
