"""Generative Gradient Leakage (Li et al., CVPR 2022): search a GAN's latent space.

    labels  = inferred from the shared gradient (iDLG rule for B = 1, counts for B > 1)
    images  = prior(z, labels)                       one latent per private image
    loss(z) = distance(trial gradient of images, shared gradient) + kl * KL(z)
    z*      = optimizer(loss, budget in evaluations)  best of n_trials by gradient loss

The default objective is GGL's: squared L2 averaged over the parameter tensors plus 0.1 x
the KL divergence of the latent entries' mean and spread from N(0, 1),
``-0.5 (1 + log s^2 - m^2 - s^2)``. Black-box optimizers score whole populations of latents
in one batched pass (generator and per-candidate victim gradients, see
``GradientMatching``); ``adam`` differentiates through generator and victim.

Beyond the original: ``refine_steps`` continues from the best generated image with pixel-space
Adam on the same objective (minus the KL) plus ``refine_tv`` x total variation, kept only
where it lowers the gradient loss. Without the TV term the refinement drives the gradient
loss to ~0 with high-frequency noise (LeNet: +5 dB PSNR but SSIM 0.8 -> 0.35); TV 1 kept
the PSNR gain and most of the SSIM (experiments/README.md).
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from ggl.attacks.base import Attack, Progress, Reconstruction, step_in_box
from ggl.attacks.dia import mask_model
from ggl.ceiling import LatentSearch
from ggl.dropout import supplied_masks
from ggl.errors import GGLError
from ggl.labels import infer_labels
from ggl.objective import DISTANCES, total_variation
from ggl.scenario import Observation

#: progress-GIF frames per trial
FRAMES = 24
#: --dropout-masks: how the latent attack treats the victim's dropout
DROPOUT_MASK_MODES = ("ignore", "model")


def latent_kl(latents: torch.Tensor) -> torch.Tensor:
    """GGL's KL term per candidate: ``latents (P, n) -> (P,)``, with ``m``, ``s^2`` the mean
    and variance of each candidate's ``n`` latent entries."""
    mean, variance = latents.mean(1), latents.var(1, unbiased=False)
    return -0.5 * (1 + variance.clamp_min(1e-12).log() - mean.pow(2) - variance)


@dataclass
class GGLOptions:
    """GGL's defaults: CMA-ES, 25,000 evaluations (GGL's 500 rounds of 50), squared L2
    averaged over layers + KL 0.1, the shipped prior of the data domain, one trial.

    ``population`` ``None`` takes the method's own (nevergrad 50, TuRBO 10, adam 1);
    ``lr`` is the adam method's step size; ``bounds`` boxes the latents (TuRBO: 2);
    ``refine_*``: the optional pixel-space refinement after the search (steps, Adam lr, TV);
    ``dropout_masks``: ``ignore`` (the server's model runs with dropout off) or ``model``
    (adam only: one continuous mask per dropout layer searched with the latent, as the
    Dropout Inversion Attack does in pixel space, with ``mask_rate_weight`` x its rate gap).
    """

    budget: int = 25_000
    ng_method: str = "CMA"
    generator: str = "default"
    population: int | None = None
    n_trials: int = 1
    distance: str = "l2"
    layer_weights: str = "mean"
    kl: float = 0.1
    tv: float = 0.0
    lr: float = 0.1
    bounds: float | None = None
    truncation: float | None = None
    refine_steps: int = 0
    refine_lr: float = 0.01
    refine_tv: float = 1.0
    path: str = "auto"
    chunk_size: int | None = None
    dropout_masks: str = "ignore"
    mask_rate_weight: float = 1e-4


class GGL(Attack):
    """Generative Gradient Leakage: latent search in a GAN prior (``--ng_method``)."""

    name = "ggl"
    summary = "GGL: search a GAN prior's latent space (CMA-ES/any nevergrad, TuRBO, Adam)"
    Options = GGLOptions

    def __init__(self, seed: int = 0, adaptive: bool = False, **overrides):
        restarts = overrides.pop("restarts", None)     # --restarts is GGL's --n_trials
        if restarts is not None:
            if overrides.get("n_trials") not in (None, restarts):
                raise GGLError("--restarts and --n_trials mean the same for ggl; give one")
            overrides["n_trials"] = restarts
        super().__init__(seed, adaptive, **overrides)

    def _validate(self) -> None:
        super()._validate()
        o = self.options
        if o.distance not in DISTANCES:
            raise GGLError(f"unknown distance {o.distance!r}; valid: {', '.join(sorted(DISTANCES))}")
        if o.n_trials < 1:
            raise GGLError(f"--n_trials (--restarts) must be at least 1, got {o.n_trials}")
        if o.dropout_masks not in DROPOUT_MASK_MODES:
            raise GGLError(f"unknown --dropout-masks {o.dropout_masks!r}; valid: "
                           f"{', '.join(DROPOUT_MASK_MODES)}")
        if o.dropout_masks == "model" and o.ng_method != "adam":
            raise GGLError("--dropout-masks model optimizes the masks by gradient descent "
                           f"with the latent: it needs --ng_method adam, not {o.ng_method!r}")
        for name in ("kl", "tv", "refine_steps", "refine_tv", "mask_rate_weight"):
            if getattr(o, name) < 0:
                raise GGLError(f"{name} must be >= 0, got {getattr(o, name)}")
        self.optimizer(0).check_budget(o.budget)      # unknown method or budget too small

    def optimizer(self, trial: int, project=None):
        """The latent optimizer of trial ``trial``; ``project`` (adam only) is applied to
        the searched vector after every step."""
        from optimizers import build_optimizer

        o = self.options
        extra = {"lr": o.lr, "project": project} if o.ng_method == "adam" else {}
        return build_optimizer(o.ng_method, population=o.population, bounds=o.bounds,
                               seed=self.seed * 1000 + trial, **extra)

    def prior(self, observation: Observation):
        from generators.prior import build_prior

        prior = build_prior(self.options.generator, observation.domain)
        if self.options.truncation is not None:
            if not prior.conditional or prior.truncation is None:
                raise GGLError("--set truncation applies to BigGAN priors only")
            from generators.biggan import prior_from_biggan
            prior = prior_from_biggan(prior.net.biggan, prior.name, self.options.truncation)
        prior.check_labels(observation.num_classes)
        return prior.to(observation.device).bind(observation.image_shape, observation.mean,
                                                 observation.std)

    def _reconstruct(self, observation: Observation, progress: Progress) -> Reconstruction:
        o = self.options
        labels = infer_labels(observation)
        prior = self.prior(observation)
        batch, dim = observation.batch_size, prior.latent_dim
        objective = self.matching_objective(observation, distance=o.distance,
                                            layer_weights=o.layer_weights, tv=o.tv,
                                            path=o.path, chunk_size=o.chunk_size)

        # the searched vector: the B latents, then (--dropout-masks model) the masks
        masks = mask_model(observation) if o.dropout_masks == "model" else None
        latent_size = batch * dim

        def split(vector: torch.Tensor):
            """``(P, latent_size [+ mask entries])`` -> latents ``(P, latent_size)`` and the
            masks (of the first candidate: mask modelling runs Adam, one candidate)."""
            if masks is None:
                return vector, None
            return (vector[:, :latent_size],
                    masks.unflatten(vector[0, latent_size:].to(observation.device)))

        def under(current):
            """Run the victim under the modelled masks (or as the server holds it)."""
            return nullcontext() if current is None else \
                supplied_masks(observation.model, current)

        def generate(latents: torch.Tensor) -> torch.Tensor:
            """``(P, B * d)`` latents -> candidates ``(P, B, C, H, W)``."""
            count = latents.shape[0]
            classes = labels.repeat(count) if prior.conditional else None
            images = prior(latents.reshape(count * batch, dim).to(observation.device), classes)
            return images.view(count, batch, *observation.image_shape)

        differentiable = self.optimizer(0).differentiable

        def loss(vector: torch.Tensor) -> torch.Tensor:
            latents, current = split(vector)
            with torch.set_grad_enabled(differentiable), under(current):
                value = objective(generate(latents), labels)
                if o.kl:
                    value = value + o.kl * latent_kl(latents.to(value.device))
                if current is not None:
                    value = value + o.mask_rate_weight * masks.rate_gap(current)
            return value if differentiable else value.detach()

        def project(vector: torch.Tensor) -> None:
            vector[latent_size:].clamp_(0, 1)

        total = o.budget * o.n_trials
        snapshots, history, trials = [], [], []
        generator = self.generator()
        for trial in range(o.n_trials):
            done = trial * o.budget
            every = max(1, o.budget // FRAMES)
            next_frame = [0]

            def report(evaluations, budget, best_loss, best_vector):
                progress(done + evaluations, total, best_loss)
                if evaluations >= next_frame[0]:
                    with torch.no_grad():
                        best_images = generate(split(best_vector[None])[0])[0]
                    snapshots.append((done + evaluations, best_images.cpu()))
                    next_frame[0] = evaluations + every

            init = prior.sample_latent(batch, generator).reshape(-1)
            if masks is not None:
                init = torch.cat([init, masks.flatten(masks.initial(generator)).to(init.device)])
            search = self.optimizer(trial, project if masks is not None else None)
            result = search.minimize(loss, init, o.budget, report)
            latents, best_masks = split(result.latent[None])
            with torch.no_grad(), under(best_masks):
                images = generate(latents)[0]
                gradient_loss = objective(images[None], labels)[0].item()
            trials.append({"objective": result.loss, "gradient_loss": gradient_loss,
                           "latent": latents[0], "masks": best_masks, "images": images,
                           "info": result.info})
            history.extend(result.history)
        best = min(trials, key=lambda t: t["gradient_loss"] if math.isfinite(t["gradient_loss"])
                   else math.inf)
        if not math.isfinite(best["gradient_loss"]):
            raise GGLError("GGL diverged: every trial's best latent has a non-finite loss")
        images, final_loss = best["images"], best["gradient_loss"]
        info = {"label_method": "known" if observation.labels is not None else "inferred",
                "generator": prior.name, "ng_method": o.ng_method,
                "optimizer": best["info"], "n_trials": o.n_trials,
                "trial_gradient_losses": [t["gradient_loss"] for t in trials],
                "trial_objectives": [t["objective"] for t in trials],
                "gradient_path": objective.choose_path(
                    1 if differentiable else self.optimizer(0).population),
                "latent": best["latent"].tolist(), "dropout_masks": o.dropout_masks}
        if masks is not None:
            info["mask_drop_rates"] = masks.drop_rates(best["masks"])
            info["dropout_rates"] = masks.rates
        search_evaluations = objective.evaluations

        def objective_at(latents: torch.Tensor) -> torch.Tensor:
            """The searched objective (gradient loss + KL, under the returned masks):
            ``(P, B * d)`` latents -> ``(P,)``; for the metrics' search gap."""
            with torch.no_grad(), under(best["masks"]):
                value = objective(generate(latents), labels)
                return value + o.kl * latent_kl(latents.to(value.device)) if o.kl else value

        searched = LatentSearch(prior=prior, labels=labels,
                                latents=best["latent"].reshape(batch, dim).detach(),
                                objective=objective_at)
        if o.refine_steps:
            with under(best["masks"]):
                images, final_loss, refinement = self._refine(observation, objective, images,
                                                              labels, final_loss)
            info["refinement"] = refinement
        snapshots.append((total, images.cpu()))
        return Reconstruction(images=images.detach(), labels=labels, loss=final_loss,
                              history=history, snapshots=snapshots,
                              evaluations=objective.evaluations, iterations=search_evaluations,
                              info=info, latent_search=searched)

    def _refine(self, observation, objective, images, labels, latent_loss):
        """Pixel-space Adam from the generated images; kept only if the loss drops."""
        o = self.options
        low, high = observation.pixel_bounds()
        pixels = images.detach().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([pixels], lr=o.refine_lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=o.refine_steps)
        best_loss, best = latent_loss, images.detach().clone()
        for _ in range(o.refine_steps):
            value = objective(pixels[None], labels)[0]
            if value.item() < best_loss:
                best_loss, best = value.item(), pixels.detach().clone()
            if o.refine_tv:
                value = value + o.refine_tv * total_variation(pixels[None])[0]
            step_in_box(value, optimizer, schedule, pixels, low, high)
        return best, best_loss, {"steps": o.refine_steps, "lr": o.refine_lr,
                                 "gradient_loss_before": latent_loss,
                                 "tv": o.refine_tv, "gradient_loss_after": best_loss,
                                 "kept": best_loss < latent_loss}
