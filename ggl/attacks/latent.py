"""Generative Gradient Leakage (Li et al., CVPR 2022): search a GAN's latent space.

    labels  = inferred from the shared gradient (iDLG rule for B = 1, counts for B > 1)
    images  = prior(z, labels)                       one latent per private image
    loss(z) = distance(trial gradient of images, shared gradient) + kl * KL(z)
    z*      = the search plan (loss, budget in evaluations)   best of n_trials by gradient loss

The search is a plan of stages (:mod:`ggl.attacks.stages`): ``--ng_method M`` alone is GGL
as published (one search with M); without it the default plan scores prior draws, runs
CMA-ES from the best four and Adam from where each ended; GIAS and GIFD stages may follow
(:mod:`ggl.attacks.generator_stages`).

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
from typing import Annotated, Literal

import torch

from ggl.attacks.base import Attack, Progress, Reconstruction
from ggl.attacks.dia import mask_model
from ggl.attacks.generator_stages import check_generator_stages, run_generator_stages
from ggl.attacks.refinement import refine_pixels
from ggl.attacks.stages import GENERATOR_STAGES, SAMPLE, run_latent_stages
from ggl.bn_prior import BatchNormPrior
from ggl.ceiling import LatentSearch
from ggl.contracts import Observation
from ggl.dropout import supplied_masks
from ggl.errors import GGLError
from ggl.labels import infer_labels
from ggl.generators import check_generator
from ggl.objective import DISTANCES, LAYER_WEIGHTS, EvaluationPath
from ggl.optimizers import OPTIMIZERS, build_optimizer

#: progress-GIF frames per trial
FRAMES = 24


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
    ``stages``: a plan of stages sharing the budget (:mod:`ggl.attacks.stages`). Without
    it, ``--ng_method M`` searches with M alone (GGL as published) and with neither the
    attack runs ``DEFAULT_PLAN`` scaled to the budget. ``starts``: the starts a ``sample``
    stage keeps (or the prior draws a plan starts from; ``None``: 4 for the default plan,
    else 1); ``gias_*`` and ``gifd_*``: those stages' settings
    (:mod:`ggl.attacks.generator_stages`; GIFD's radii are the paper's, its step size was
    measured: 0.01 lowered the loss most of 0.1 / 0.01 / 0.001 on the shipped prior).
    ``holdout``: the share of the gradient's entries the gias / gifd stages leave out of
    their fit and keep the best images by (0: none, as the papers; against noise in the
    gradient, see :mod:`ggl.attacks.generator_stages`).
    ``update`` (``--protocol fedavg``): ``simulate`` scores each candidate by its update
    through the client's simulated local SGD (:mod:`ggl.attacks.weight_update`); ``naive``
    reads the shared update as a gradient, update / lr.
    ``bn_prior`` > 0 adds that multiple of GradInversion's BatchNorm-statistics prior of
    each candidate batch to the latent search's objective (``ggl.bn_prior``; victims with
    BatchNorm; the gias / gifd stages and the pixel refinement match the gradient alone).
    """

    budget: int = 25_000
    ng_method: str = "CMA"
    generator: str = "default"
    population: int | None = None
    n_trials: int = 1
    distance: Annotated[str, DISTANCES] = "l2"
    layer_weights: Annotated[str, LAYER_WEIGHTS] = "mean"
    kl: float = 0.1
    tv: float = 0.0
    lr: float = 0.1
    bounds: float | None = None
    truncation: float | None = None
    refine_steps: int = 0
    refine_lr: float = 0.01
    refine_tv: float = 1.0
    path: EvaluationPath = "auto"
    chunk_size: int | None = None
    dropout_masks: Literal["ignore", "model"] = "ignore"
    mask_rate_weight: float = 1e-4
    stages: str | None = None
    starts: int | None = None
    gias_lr: float = 1e-4
    gias_reg: float = 1.0
    gifd_lr: float = 0.01
    gifd_radius: float = 2000.0
    gifd_radius_step: float = 500.0
    holdout: float = 0.0
    update: Literal["simulate", "naive"] = "simulate"
    bn_prior: float = 0.0


#: the search ``ggl run`` uses when neither --stages nor --ng_method is given: score prior
#: draws (DEFAULT_SAMPLE of the budget), CMA-ES from the best DEFAULT_STARTS (the rest) and
#: Adam from where each CMA-ES ended (DEFAULT_ADAM of the budget, at most GGL's 500 Adam
#: steps per start: an Adam step costs ~3x a batched CMA evaluation in time). Measured on 20
#: private digits at 5,000 evaluations (experiments/README.md "Search stages").
DEFAULT_STARTS = 4
DEFAULT_SAMPLE = 0.2
DEFAULT_ADAM = 0.4
DEFAULT_ADAM_STEPS = 500


class GGL(Attack):
    """Generative Gradient Leakage: latent search in a GAN prior (``--ng_method`` or a plan
    of ``--stages``), optionally followed by GIAS / GIFD stages on the generator."""

    name = "ggl"
    summary = ("GGL: search a GAN prior's latent space (CMA-ES/any nevergrad, TuRBO, Adam; "
               "seeded restarts, hybrid, GIAS, GIFD stages)")
    Options = GGLOptions

    def __init__(self, seed: int = 0, adaptive: bool = False, **overrides):
        restarts = overrides.pop("restarts", None)     # --restarts is GGL's --n_trials
        if restarts is not None:
            if overrides.get("n_trials") not in (None, restarts):
                raise GGLError("--restarts and --n_trials mean the same for ggl; give one")
            overrides["n_trials"] = restarts
        if overrides.get("stages") is not None and overrides.get("ng_method") is not None:
            raise GGLError("--stages names the optimizers of the search; --ng_method is its "
                           "one-stage form: give one of them")
        self._budget_given = overrides.get("budget") is not None
        self._default_plan = overrides.get("stages") is None and \
            overrides.get("ng_method") is None
        self._one_method = overrides.get("stages") is None and not self._default_plan
        super().__init__(seed, adaptive, **overrides)

    def _validate(self) -> None:
        super()._validate()
        o = self.options
        check_generator(o.generator)
        if o.n_trials < 1:
            raise GGLError(f"--n_trials (--restarts) must be at least 1, got {o.n_trials}")
        for name in ("kl", "tv", "refine_steps", "refine_tv", "mask_rate_weight", "gias_reg",
                     "gifd_radius_step", "bn_prior"):
            if getattr(o, name) < 0:
                raise GGLError(f"{name} must be >= 0, got {getattr(o, name)}")
        if o.chunk_size is not None and o.chunk_size < 1:
            raise GGLError(f"chunk_size is the candidates scored at once: >= 1, or leave it "
                           f"out to fit memory; got {o.chunk_size}")
        for name in ("gias_lr", "gifd_lr", "gifd_radius", "refine_lr"):
            if getattr(o, name) <= 0:
                raise GGLError(f"{name} must be > 0, got {getattr(o, name)}")
        if not 0.0 <= o.holdout < 1.0:
            raise GGLError(f"holdout is the share of gradient entries the gias / gifd stages "
                           f"hold out: 0 (none) or in (0, 1), e.g. 0.1; got {o.holdout}")
        if o.starts is None:
            o.starts = DEFAULT_STARTS if self._default_plan else 1
        if o.starts < 1:
            raise GGLError(f"--starts must be at least 1, got {o.starts}")
        self.plan = self._plan()
        o.stages = ",".join(str(stage) for stage in self.plan)   # recorded as resolved
        if o.holdout and not any(s.kind in GENERATOR_STAGES for s in self.plan):
            raise GGLError("holdout applies to the gias and gifd stages, and the search "
                           f"{o.stages} has neither: add one to --stages or leave holdout out")
        methods = [s.name for s in self.plan if s.kind == "optimizer"]
        if o.dropout_masks == "model" and set(methods) != {"adam"}:
            raise GGLError("--dropout-masks model optimizes the masks by gradient descent "
                           f"with the latent: it needs --ng_method adam, not "
                           f"{', '.join(repr(m) for m in methods if m != 'adam')} (with "
                           f"--stages: every search stage adam)")
        if self._default_plan:
            cma = self.plan[1].budget
            population = o.population or 50
            least = math.ceil(o.starts * population / (1 - DEFAULT_SAMPLE - DEFAULT_ADAM))
            if cma < o.starts * population:
                raise GGLError(
                    f"--budget {o.budget} is too small for the default search (sample "
                    f"{DEFAULT_SAMPLE:.0%}, adam {DEFAULT_ADAM:.0%}, and CMA from "
                    f"{o.starts} starts of one population of {population} at least "
                    f"in the rest): give --budget >= {least}, or --ng_method NAME for a "
                    f"one-stage search")
        self._black_box = False           # whether a stage scores whole populations
        for stage in self.plan:           # every latent stage runs from `starts` starts
            if stage.kind == "sample" and stage.budget < o.starts:
                raise GGLError(f"--stages: {stage} cannot keep --starts {o.starts} "
                               f"starts; sample at least {o.starts} latents")
            if stage.kind == "optimizer":
                optimizer = self.optimizer(stage.name, 0)
                self._black_box = self._black_box or not optimizer.differentiable
                if self._one_method and o.starts == 1:
                    optimizer.check_budget(o.budget)        # GGL as published: its message
                least = optimizer.minimum_budget() * o.starts
                optimizer.check_usable(max(stage.budget // o.starts, 1))
                if stage.budget < least:
                    raise GGLError(
                        f"--budget / --stages: {stage} is too small: {o.starts} search(es) "
                        f"of {stage.name} need at least {least} evaluations (one population "
                        f"each); give it more, or a smaller --population or --starts")

    def _plan(self):
        """The stages of the search (``--stages``, or ``{ng_method}:{budget}``)."""
        from ggl.attacks.stages import Stage, parse_plan

        o = self.options
        if self._default_plan:
            sample = int(o.budget * DEFAULT_SAMPLE)
            adam = min(int(o.budget * DEFAULT_ADAM), DEFAULT_ADAM_STEPS * o.starts)
            return (Stage("sample", sample), Stage("CMA", o.budget - sample - adam),
                    Stage("adam", adam))
        if self._one_method:
            OPTIMIZERS.entry(o.ng_method)             # an unknown method says so here
            return (Stage(o.ng_method, o.budget),)
        plan = parse_plan(o.stages, o.budget if self._budget_given else None)
        self.options.budget = sum(stage.budget for stage in plan)
        return plan

    def optimizer(self, method: str, search: int, project=None):
        """The latent optimizer ``method`` of search number ``search`` (seeded by it);
        ``project`` (gradient methods) is applied to the searched vector after every step."""
        o = self.options
        return build_optimizer(method, population=o.population, bounds=o.bounds,
                               seed=self.search_seed(search), lr=o.lr, project=project)

    def search_seed(self, search: int) -> int:
        """The optimizer seed of search number ``search`` of this run (within 32 bits, as
        nevergrad's numpy generators take)."""
        return (self.seed * 1000 + search) % 2 ** 32

    def prior(self, observation: Observation):
        from ggl.generators import build_prior

        prior = build_prior(self.options.generator, observation.domain)
        if self.options.truncation is not None:
            if not prior.conditional or prior.truncation is None:
                raise GGLError("--set truncation applies to BigGAN priors only")
            from ggl.generators.biggan import prior_from_biggan
            prior = prior_from_biggan(prior.net.biggan, prior.name, self.options.truncation)
        prior.check_labels(observation.num_classes)
        return prior.to(observation.device).bind(observation.image_shape, observation.mean,
                                                 observation.std)

    def simulates_updates(self) -> bool:
        return self.options.update == "simulate"

    def check_protocol(self, protocol: str) -> None:
        super().check_protocol(protocol)
        if protocol == "fedavg" and self.options.update == "simulate" and self.options.holdout:
            raise GGLError("holdout leaves out entries of one gradient: with --protocol fedavg "
                           "give --set update=naive, or leave holdout out")

    def matching_objective(self, observation: Observation, **settings):
        """GGL's objective; on a FedAvg update with ``update=simulate``, the distance of
        each candidate's simulated update (:class:`ggl.attacks.weight_update.UpdateMatching`)."""
        if observation.weight_update is None or self.options.update == "naive":
            return super().matching_objective(observation, **settings)
        return self.update_objective(observation, distance=settings["distance"],
                                     layer_weights=settings["layer_weights"], tv=settings["tv"])

    def _reconstruct(self, observation: Observation, progress: Progress) -> Reconstruction:
        o = self.options
        labels = infer_labels(observation)
        prior = self.prior(observation)
        batch, dim = observation.batch_size, prior.latent_dim
        objective = self.matching_objective(observation, distance=o.distance,
                                            layer_weights=o.layer_weights, tv=o.tv,
                                            path=o.path, chunk_size=o.chunk_size)

        bn_prior = BatchNormPrior(observation.model) if o.bn_prior > 0 else None
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

        def loss(vector: torch.Tensor, differentiable: bool) -> torch.Tensor:
            latents, current = split(vector)
            with torch.set_grad_enabled(differentiable), under(current):
                candidates = generate(latents)
                value = objective(candidates, labels)
                if bn_prior is not None:
                    value = value + o.bn_prior * bn_prior(candidates).to(value.device)
                if o.kl:
                    value = value + o.kl * latent_kl(latents.to(value.device))
                if current is not None:
                    value = value + o.mask_rate_weight * masks.rate_gap(current)
            return value if differentiable else value.detach()

        def project(vector: torch.Tensor) -> None:
            vector[latent_size:].clamp_(0, 1)

        def draw(count: int) -> torch.Tensor:
            """``count`` searched vectors from the prior (and the masks' start): ``(count, n)``."""
            vectors = prior.sample_latent(count * batch, generator).reshape(count, -1)
            if masks is None:
                return vectors
            start = masks.flatten(masks.initial(generator)).to(vectors.device)
            return torch.cat([vectors, start.expand(count, -1)], 1)

        searches_per_trial = o.starts * sum(s.kind == "optimizer" for s in self.plan)

        def build(method: str, search: int):
            return self.optimizer(method, search, project if masks is not None else None)

        plan = self.plan
        latent_stages = tuple(s for s in plan if s.kind in (SAMPLE, "optimizer"))
        generator_stages = tuple(s for s in plan if s.kind in GENERATOR_STAGES)
        check_generator_stages(prior, generator_stages)
        latent_budget = sum(s.budget for s in latent_stages)
        generator_budget = sum(s.budget for s in generator_stages)
        total = latent_budget * o.n_trials + generator_budget
        every = max(1, total // (FRAMES * o.n_trials))
        snapshots, history, trials, stage_records = [], [], [], []
        generator = self.generator()
        for trial in range(o.n_trials):
            done = trial * latent_budget
            next_frame = [done]

            def report(evaluations, best_loss, best_vector, done=done):
                progress(done + evaluations, total, best_loss)
                if done + evaluations >= next_frame[0]:
                    with torch.no_grad():
                        best_images = generate(split(best_vector[None])[0])[0]
                    snapshots.append((done + evaluations, best_images.cpu()))
                    next_frame[0] = done + evaluations + every

            candidates, trial_history, records = run_latent_stages(
                latent_stages, loss=loss, draw=draw, starts=o.starts,
                build_optimizer=lambda method, search, t=trial: build(
                    method, t * searches_per_trial + search),
                seed_of=lambda search, t=trial: self.search_seed(
                    t * searches_per_trial + search),
                report=report, batched=masks is None)
            best_vector = candidates[0].vector
            latents, best_masks = split(best_vector[None])
            with torch.no_grad(), under(best_masks):
                images = generate(latents)[0]
                gradient_loss = objective(images[None], labels)[0].item()
            trials.append({"objective": candidates[0].loss, "gradient_loss": gradient_loss,
                           "latent": latents[0], "masks": best_masks, "images": images})
            history.extend(trial_history)
            stage_records.append(records)
        best_index = min(range(len(trials)), key=lambda i: trials[i]["gradient_loss"]
                         if math.isfinite(trials[i]["gradient_loss"]) else math.inf)
        best = trials[best_index]
        if not math.isfinite(best["gradient_loss"]):
            raise GGLError("GGL diverged: every trial's best latent has a non-finite loss")
        images, final_loss = best["images"], best["gradient_loss"]
        search_evaluations = objective.evaluations

        def objective_at(latents: torch.Tensor) -> torch.Tensor:
            """The searched objective (gradient loss + KL + BN prior, under the returned masks):
            ``(P, B * d)`` latents -> ``(P,)``; for the metrics' search gap."""
            with torch.no_grad(), under(best["masks"]):
                candidates = generate(latents)
                value = objective(candidates, labels)
                if bn_prior is not None:
                    value = value + o.bn_prior * bn_prior(candidates)
                return value + o.kl * latent_kl(latents.to(value.device)) if o.kl else value

        searched = LatentSearch(prior=prior, labels=labels,
                                latents=best["latent"].reshape(batch, dim).detach(),
                                objective=objective_at)
        records = stage_records[best_index]
        returned = "latent search"
        if generator_stages:
            with under(best["masks"]):
                images, final_loss, returned = run_generator_stages(
                    generator_stages, o, prior, best["latent"].reshape(batch, dim), labels,
                    objective, records, history, images, final_loss, self.seed,
                    lambda n, value: progress(total - generator_budget + n, total, value))
        info = {"label_method": "known" if observation.labels is not None else "inferred",
                "generator": prior.name, "ng_method": o.ng_method if self._one_method else None,
                "stages": [str(s) for s in plan], "starts": o.starts,
                "stage_records": [r.to_dict() for r in records],
                "returned_stage": returned, "n_trials": o.n_trials,
                "trial_gradient_losses": [t["gradient_loss"] for t in trials],
                "trial_objectives": [t["objective"] for t in trials],
                "gradient_path": objective.choose_path(
                    (o.population or 50) if self._black_box else o.starts),
                "latent": best["latent"].tolist(), "dropout_masks": o.dropout_masks}
        if masks is not None:
            info["mask_drop_rates"] = masks.drop_rates(best["masks"])
            info["dropout_rates"] = masks.rates
        if o.refine_steps:
            with under(best["masks"]):
                images, final_loss, refinement = refine_pixels(
                    observation, objective, images, labels, final_loss, o.refine_steps,
                    o.refine_lr, o.refine_tv)
            info["refinement"] = refinement
        snapshots.append((total, images.cpu()))
        return Reconstruction(images=images.detach(), labels=labels, loss=final_loss,
                              history=history, snapshots=snapshots,
                              evaluations=objective.evaluations, iterations=search_evaluations,
                              info=info, latent_search=searched)
