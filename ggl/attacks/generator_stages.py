"""The stages after GGL's latent search that change what the generator draws.

* GIAS (Jeon et al., NeurIPS 2021, "Gradient Inversion with Generative Image Prior"): keep
  the found latent ``z*`` and tune a copy of the generator's weights ``w`` per image on the
  same gradient-matching objective, pulled back towards the prior's weights ``w0``::

      min_w  objective(G_w(z*)) + reg * mean_l ||w_l - w0_l||^2 / ||w0_l||^2

  (Adam, step decay x0.1 at 3/8, 5/8 and 7/8 of the steps, as the GIFD repository's GIAS).
* GIFD (Fang et al., ICCV 2023, "GIFD: A Generative Gradient Inversion Method with Feature
  Domain Optimization"): write the generator as a chain ``x = g_L(... g_1(g_0(z)))`` and,
  for k = 0, 1, ..., search the feature ``h_k`` feeding ``g_{k+1}`` with the later layers
  fixed, each inside an l1 ball of radius ``r_k = radius + k * radius_step`` around where
  the previous layer's search left it (the paper's BigGAN radii: 2000, 2500, 3000, ...).

Both return the lowest-objective images they saw, so a stage that only raises the loss
leaves the latent search's result in place (the attack compares them by gradient loss).
Neither touches the prior itself: GIAS works on deep copies, GIFD on feature tensors.

Both have many more free parameters than the latent, enough to fit noise added to the
gradient (measured under ``noise 0.1``: 16-19 dB where the latent search alone reached 27).
With a held-out share of the gradient's entries (the attack's ``holdout`` option), a stage
fits the other entries only and keeps the images that match the held-out ones best: they
keep improving while the stage fits the image and stop when it starts fitting noise.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ggl.attacks.stages import GIAS, StageRecord, extend_history
from ggl.errors import GGLError
from ggl.objective import holdout_masks
from ggl.optimizers.adam import ramped_lr

#: ``objective(images (1, B, C, H, W)) -> (fit (1,), held-out (1,) or None)``: the loss a
#: stage descends and the distance on the held-out gradient entries (None: none held out,
#: the stage then keeps the images of the lowest fit loss)
ImageObjective = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]
#: ``progress(steps done, best loss)``
StepProgress = Callable[[int, float], None]


def _criterion(fit: torch.Tensor, held_out: torch.Tensor | None) -> float:
    """What a stage keeps the lowest of: the held-out distance when entries are held out."""
    return (fit if held_out is None else held_out).item()


@dataclass
class StageOutcome:
    """The best images a generator stage saw: ``images (B, C, H, W)``, their criterion
    (gradient loss, or the held-out distance when entries are held out), the criterion's
    best after every step, and facts for run.json."""

    images: torch.Tensor
    loss: float
    start_loss: float
    history: list[float] = field(default_factory=list)
    facts: dict = field(default_factory=dict)
    nets: list | None = None


def check_layer_chain(prior) -> None:
    """GIFD needs a generator that exposes its layers (``layer_chain()``)."""
    if not hasattr(prior.net, "layer_chain"):
        raise GGLError(f"the gifd stage searches the generator's intermediate features, and "
                       f"the prior {prior.name} does not expose its layers (wgan-gp priors "
                       f"from `ggl train-prior` do); drop gifd from --stages")


def check_tunable(prior) -> None:
    """GIAS needs a generator with weights to tune."""
    if not any(True for _ in prior.net.parameters()):
        raise GGLError(f"the gias stage tunes the generator's weights, and the prior "
                       f"{prior.name} has none; drop gias from --stages")


def _relative_distance(net, reference: list[torch.Tensor]) -> torch.Tensor:
    """``mean_l ||w_l - w0_l||^2 / ||w0_l||^2`` over the parameter tensors of ``net``."""
    terms = [(w - w0).pow(2).sum() / w0.pow(2).sum().clamp_min(1e-12)
             for w, w0 in zip(net.parameters(), reference)]
    return torch.stack(terms).mean()


def gias(prior, latents: torch.Tensor, labels: torch.Tensor, objective: ImageObjective,
         steps: int, lr: float, reg: float, progress: StepProgress) -> StageOutcome:
    """GIAS: tune one copy of the generator per image for its fixed latent.

    Args:
        prior: the bound Prior whose ``net`` is copied (never changed).
        latents: ``(B, latent_dim)`` the latent search's result, one per image.
        labels: ``(B,)`` labels (for a conditional prior).
        objective: the loss of a candidate batch (and the held-out distance, see
            ``ImageObjective``).
        steps, lr, reg: Adam steps, step size and the weight of the pull towards ``w0``.

    Returns:
        The best images seen (the prior's own ``G(z*)`` counts as step 0), with the tuned
        copies in ``nets`` (for a following GIFD stage).
    """
    nets = [copy.deepcopy(prior.net).eval() for _ in range(len(latents))]
    reference = [w.detach().clone() for w in prior.net.parameters()]
    parameters = []
    for net in nets:
        for w in net.parameters():
            w.requires_grad_(True)
            parameters.append(w)
    optimizer = torch.optim.Adam(parameters, lr=lr)
    schedule = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=[int(steps * 3 / 8), int(steps * 5 / 8), int(steps * 7 / 8)],
        gamma=0.1)
    latents = latents.detach()
    conditional = prior.conditional

    def draw() -> torch.Tensor:
        raws = [net(latents[i:i + 1], labels[i:i + 1]) if conditional else
                net(latents[i:i + 1]) for i, net in enumerate(nets)]
        return prior.to_victim(torch.cat(raws))

    best_loss, best_images, history, best_step = math.inf, None, [], 0
    with torch.enable_grad():
        for step in range(steps):             # `steps` evaluations, the last one not stepped
            images = draw()
            value, held_out = objective(images[None])
            value, criterion = value[0], _criterion(value[0], held_out)
            if step == 0:
                start_loss = criterion
            if math.isfinite(criterion) and criterion < best_loss:
                best_loss, best_images, best_step = criterion, images.detach().clone(), step
            history.append(best_loss)
            progress(step + 1, best_loss)
            if step == steps - 1 or not math.isfinite(value.item()):
                break
            total = value
            if reg:
                pull = sum(_relative_distance(net, reference) for net in nets) / len(nets)
                total = total + reg * pull
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            schedule.step()
    if best_images is None:
        raise GGLError("the gias stage diverged: the tuned generator's images have no "
                       "finite loss")
    for net in nets:
        net.requires_grad_(False)
    with torch.no_grad():
        drift = float(sum(_relative_distance(net, reference) for net in nets) / len(nets))
    return StageOutcome(best_images, best_loss, start_loss, history,
                        {"lr": lr, "reg": reg, "weight_drift": drift, "best_step": best_step},
                        nets)


def project_l1_ball(deviation: torch.Tensor, radius: float) -> torch.Tensor:
    """Each row of ``deviation (B, ...)`` projected onto the l1 ball of ``radius`` (Duchi et
    al., ICML 2008: sort, find the threshold, soft-threshold); rows inside stay."""
    flat = deviation.flatten(1)
    inside = flat.abs().sum(1) <= radius
    magnitudes, _ = flat.abs().sort(1, descending=True)
    cumulative = magnitudes.cumsum(1)
    ranks = torch.arange(1, flat.shape[1] + 1, device=flat.device, dtype=flat.dtype)
    count = ((magnitudes * ranks) > (cumulative - radius)).sum(1, keepdim=True)
    threshold = (cumulative.gather(1, count - 1) - radius) / count.to(flat.dtype)
    projected = flat.sign() * (flat.abs() - threshold).clamp_min(0)
    return torch.where(inside[:, None], flat, projected).view_as(deviation)


def gifd(prior, latents: torch.Tensor, labels: torch.Tensor, objective: ImageObjective,
         steps: int, lr: float, radius: float, radius_step: float, progress: StepProgress,
         nets: list | None = None) -> StageOutcome:
    """GIFD: search the generator's features one layer after another, in l1 balls.

    Args:
        prior: the bound Prior (its ``net`` must have ``layer_chain()``).
        latents: ``(B, latent_dim)`` where the latent search ended.
        labels: ``(B,)`` labels (for a conditional prior).
        objective: the loss of a candidate batch (and the held-out distance, see
            ``ImageObjective``).
        steps: Adam steps over all feature layers (split evenly, the rest to the last).
        lr: Adam's step size (GIFD's warm-up and cosine ramp).
        radius, radius_step: the l1 radius of layer k is ``radius + k * radius_step``.
        nets: per-image generators tuned by GIAS (default: the prior's own, for all).

    Returns:
        The best images over every layer's search.
    """
    nets = nets or [prior.net] * len(latents)
    chains = [net.layer_chain() for net in nets]
    depth = len(chains[0]) - 1                # features that feed a later layer
    shares = [steps // depth + (k == depth - 1) * (steps % depth) for k in range(depth)]
    with torch.no_grad():
        features = [chain[0](latents[i:i + 1], labels[i:i + 1] if prior.conditional else None)
                    for i, chain in enumerate(chains)]

    def draw(layer: int, current: list[torch.Tensor]) -> torch.Tensor:
        raws = []
        for chain, feature in zip(chains, current):
            for block in chain[layer + 1:]:
                feature = block(feature)
            raws.append(feature)
        return prior.to_victim(torch.cat(raws))

    best_loss, best_images, history, per_layer = math.inf, None, [], []
    done = 0
    for layer, share in enumerate(shares):
        centre = torch.cat(features).detach()
        searched = centre.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([searched], lr=lr)
        ball = radius + layer * radius_step
        layer_best, layer_features = math.inf, centre
        with torch.enable_grad():
            for step in range(share):         # `share` evaluations, the last not stepped
                images = draw(layer, list(searched.split(1)))
                value, held_out = objective(images[None])
                value, criterion = value[0], _criterion(value[0], held_out)
                if done == 0:
                    start_loss = criterion
                if math.isfinite(criterion) and criterion < layer_best:
                    layer_best, layer_features = criterion, searched.detach().clone()
                    if layer_best < best_loss:
                        best_loss, best_images = layer_best, images.detach().clone()
                done += 1
                history.append(best_loss)
                progress(done, best_loss)
                if step == share - 1 or not math.isfinite(value.item()):
                    break
                for group in optimizer.param_groups:
                    group["lr"] = ramped_lr(lr, step / share, 0.05, 0.75)
                optimizer.zero_grad(set_to_none=True)
                value.backward()
                optimizer.step()
                with torch.no_grad():
                    searched.copy_(centre + project_l1_ball(searched - centre, ball))
        per_layer.append({"layer": layer, "steps": share, "radius": ball,
                          "best_objective": layer_best})
        if layer + 1 < depth:                 # the next layer starts from this one's best
            with torch.no_grad():
                features = [chain[layer + 1](f) for chain, f in
                            zip(chains, layer_features.split(1))]
    if best_images is None:
        raise GGLError("the gifd stage diverged: no feature search had a finite loss")
    return StageOutcome(best_images, best_loss, start_loss, history,
                        {"lr": lr, "radius": radius, "radius_step": radius_step,
                         "layers": per_layer})


def check_generator_stages(prior, stages) -> None:
    """Before any search: the prior can do what the gias / gifd stages ask of it."""
    for stage in stages:
        if stage.kind == GIAS:
            check_tunable(prior)
        else:
            check_layer_chain(prior)
            depth = len(prior.net.layer_chain()) - 1
            if stage.budget < depth:
                raise GGLError(f"--stages: {stage} is too small: gifd searches "
                               f"{depth} feature layers of {prior.name}, one step "
                               f"each at least; give gifd:{depth} or more")


def run_generator_stages(stages, o, prior, latents, labels, objective, records, history,
                         images, gradient_loss, seed, progress):
    """Run the gias / gifd ``stages`` in order from the latent search's best latents.

    Args:
        o: the attack's options (``GGLOptions``: the stages' settings and ``holdout``).
        latents: ``(B, d)``, whose images ``images (B, C, H, W)`` have ``gradient_loss``.
        objective: the attack's ``GradientMatching``.
        records, history: the search's stage records and loss history, extended here.
        seed: the run's seed (draws the held-out entries).
        progress: ``(evaluations into these stages, loss)``.

    Returns:
        ``(images, gradient loss, name)`` of the stage (``"latent search"`` included) with
        the lowest gradient loss, or with ``holdout`` the lowest distance on the held-out
        entries (then one more evaluation scores the winner on the whole gradient).
    """
    latents = latents.to(labels.device)
    held_out = holdout_masks(objective.target, o.holdout, seed) if o.holdout else None
    best, nets, done = None, None, 0

    def score(candidates: torch.Tensor):
        if held_out is None:
            return objective(candidates, labels), None
        return objective.split_losses(candidates, labels, held_out)

    for stage in stages:
        began = time.perf_counter()
        report = (lambda n, value, d=done: progress(d + n, value))
        if stage.kind == GIAS:
            outcome = gias(prior, latents, labels, score, stage.budget, o.gias_lr,
                           o.gias_reg, report)
            nets = outcome.nets
        else:
            outcome = gifd(prior, latents, labels, score, stage.budget, o.gifd_lr,
                           o.gifd_radius, o.gifd_radius_step, report, nets)
        done += stage.budget
        extend_history(history, outcome.history)
        facts = {**outcome.facts, **({"holdout": o.holdout} if o.holdout else {})}
        records.append(StageRecord(stage.name, stage.budget, stage.budget,
                                   time.perf_counter() - began, 1, outcome.loss, facts))
        if best is None:       # every stage starts by scoring the latent search's images
            best = (images, outcome.start_loss, "latent search")
        if outcome.loss < best[1]:
            best = (outcome.images, outcome.loss, stage.name)
    if best[2] == "latent search":
        return images, gradient_loss, best[2]
    if held_out is None:
        return best
    with torch.no_grad():
        return best[0], objective(best[0][None], labels)[0].item(), best[2]
