"""Pixel-space attacks: DLG, iDLG and Inverting Gradients, on the shared objective.

* ``dlg`` (Zhu et al. 2019): L-BFGS on the dummy image AND a soft label, squared L2.
* ``idlg`` (Zhao et al. 2020): the label from the head's gradient, L-BFGS on the image only.
* ``ig`` (Geiping et al. 2020): cosine distance + TV, Adam on the sign of the image
  gradient, pixels boxed to the valid range, lr x0.1 at 3/8, 5/8 and 7/8 of the iterations,
  restarts keep the lowest loss.
* ``ig-adam``: ggl's better-converging variant of ``ig``: plain (unsigned) Adam steps and a
  cosine-annealed learning rate (see ``IGAdam`` for why).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import torch

from ggl.attacks.base import Attack, Progress, Reconstruction
from ggl.contracts import Observation
from ggl.errors import GGLError
from ggl.bn_prior import BatchNormPrior, group_consistency
from ggl.labels import infer_labels
from ggl.objective import DISTANCES, LAYER_WEIGHTS, EvaluationPath
from ggl.registry import Registry


#: iterations between two read-backs of the loss (progress callback, divergence check)
REPORT_EVERY = 25


def read_back(pending: list[torch.Tensor], history: list[float], last: bool
              ) -> list[float] | None:
    """Move the losses ``pending`` on the device into ``history`` every ``REPORT_EVERY``
    iterations (and at the ``last``): reading one back every step would stall a GPU.
    Returns the values moved, or None when it is not yet time."""
    if len(pending) < REPORT_EVERY and not last:
        return None
    values = torch.stack(pending).tolist()
    pending.clear()
    history.extend(values)
    return values


class LossLog:
    """The losses of an iterative attack's restarts, each of ``budget`` iterations: kept on
    the device, read back into ``history`` in blocks (:func:`read_back`), reported to
    ``progress`` and checked for divergence, which is recorded in ``failures``."""

    def __init__(self, budget: int, restarts: int, history: list[float], failures: list[str],
                 progress: Progress, note: str = ""):
        self.budget, self.restarts, self.note = budget, restarts, note
        self.history, self.failures, self.progress = history, failures, progress
        self.pending: list[torch.Tensor] = []

    def step(self, loss: torch.Tensor, restart: int, iteration: int) -> bool:
        """Log the loss of ``iteration`` of ``restart``; True when the restart diverged
        (a non-finite loss was read back): stop it."""
        self.pending.append(loss.detach())
        values = read_back(self.pending, self.history, iteration + 1 == self.budget)
        if not values:
            return False
        self.progress(restart * self.budget + iteration + 1, self.restarts * self.budget,
                      values[-1])
        if all(map(math.isfinite, values)):
            return False
        self.failures.append(f"restart {restart}: non-finite loss by iteration "
                             f"{iteration}{self.note}")
        return True


class Snapshots:
    """Keeps about ``count`` evenly spaced copies of the iterate (CPU) for the progress GIF."""

    def __init__(self, budget: int, count: int = 24):
        self.every = max(1, budget // max(1, count))
        self.frames: list[tuple[int, torch.Tensor]] = []

    def maybe(self, iteration: int, images: torch.Tensor) -> None:
        if iteration % self.every == 0:
            self.frames.append((iteration, images.detach().cpu().clone()))


def _randn(shape, low, high, generator) -> torch.Tensor:
    """N(0, 1) (DLG, IG)."""
    return torch.randn(shape, generator=generator)


def _rand(shape, low, high, generator) -> torch.Tensor:
    """uniform in the valid pixel box."""
    return low + torch.rand(shape, generator=generator) * (high - low)


def _zeros(shape, low, high, generator) -> torch.Tensor:
    """mid-gray (zeros in normalized space)."""
    return torch.zeros(shape)


#: ``init`` name -> draw(shape, low (C, 1, 1), high (C, 1, 1), generator) on the CPU
INITS: Registry = Registry.of("init", {"randn": _randn, "rand": _rand, "zeros": _zeros})


def initial_images(observation: Observation, init: str, generator: torch.Generator):
    """Dummy images ``(B, C, H, W)`` drawn by ``INITS[init]`` on the CPU, then moved."""
    shape = (observation.batch_size, *observation.image_shape)
    low, high = (b.cpu() for b in observation.pixel_bounds())
    return INITS.choose(init)(shape, low, high, generator).to(observation.device)


def _check_common(options) -> None:
    if options.restarts < 1:
        raise GGLError(f"--restarts must be at least 1, got {options.restarts}")
    if options.lr <= 0:
        raise GGLError(f"--lr must be positive, got {options.lr}")
    if options.tv < 0:
        raise GGLError(f"--tv must be non-negative, got {options.tv}")


# --------------------------------------------------------------------------- DLG / iDLG
@dataclass
class LBFGSOptions:
    """DLG/iDLG defaults: 300 L-BFGS iterations of up to 20 inner steps, lr 1, squared L2
    summed over layers, no TV, images from N(0, 1).

    ``line_search`` is ggl's one change to the papers' recipe: the originals run L-BFGS
    without a line search (``"none"``), which on the sigmoid LeNet jumps into saturated
    regions and stalls on about half the digits within 300 iterations (measured in
    experiments/README.md); ``"strong_wolfe"`` (the default) converges on all of them.
    """

    budget: int = 300
    lr: float = 1.0
    max_iter: int = 20
    tv: float = 0.0
    distance: Annotated[str, DISTANCES] = "l2"
    layer_weights: Annotated[str, LAYER_WEIGHTS] = "sum"
    restarts: int = 1
    init: Annotated[str, INITS] = "randn"
    line_search: Literal["strong_wolfe", "none"] = "strong_wolfe"
    path: EvaluationPath = "auto"


class DLG(Attack):
    """Deep Leakage from Gradients: image and soft label optimized jointly with L-BFGS.

    ``budget`` counts L-BFGS iterations (``optimizer.step`` calls); each may evaluate the
    objective up to ``max_iter`` times (+ line search), counted in ``evaluations``.
    The returned labels are the argmax of the optimized soft label.
    """

    name = "dlg"
    summary = "DLG: L-BFGS on image and soft label, squared L2 (Zhu et al. 2019)"
    Options = LBFGSOptions
    learns_labels = True

    def _validate(self):
        super()._validate()
        _check_common(self.options)
        if self.options.max_iter < 1:
            raise GGLError(f"max_iter must be at least 1, got {self.options.max_iter}")

    def _reconstruct(self, observation: Observation, progress: Progress) -> Reconstruction:
        o = self.options
        objective = self.matching_objective(observation, distance=o.distance,
                                            layer_weights=o.layer_weights, tv=o.tv,
                                            path=o.path)
        generator = self.generator()
        known = None if self.learns_labels else infer_labels(observation)
        best = {"loss": math.inf, "images": None, "labels": None}
        history, snapshots, failures, restart_losses = [], Snapshots(o.budget), [], []
        for restart in range(o.restarts):
            images = initial_images(observation, o.init, generator).requires_grad_(True)
            variables = [images]
            if known is None:
                label_logits = torch.randn(observation.batch_size, observation.num_classes,
                                           generator=generator).to(observation.device)
                label_logits.requires_grad_(True)
                variables.append(label_logits)
            optimizer = torch.optim.LBFGS(variables, lr=o.lr, max_iter=o.max_iter,
                                          line_search_fn=None if o.line_search == "none"
                                          else o.line_search)
            run_best = {"loss": math.inf}

            def closure():
                optimizer.zero_grad(set_to_none=True)
                labels = known if known is not None else label_logits.softmax(-1)
                loss = objective(images.unsqueeze(0), labels)[0]
                grads = torch.autograd.grad(loss, variables)
                for variable, grad in zip(variables, grads):
                    variable.grad = grad
                value = loss.item()
                if value < run_best["loss"]:        # the best iterate seen, by gradient loss
                    run_best.update(loss=value, images=images.detach().clone(),
                                    labels=(known if known is not None
                                            else label_logits.detach().argmax(-1)))
                return loss

            for iteration in range(o.budget):
                loss = optimizer.step(closure).item()
                history.append(run_best["loss"])
                snapshots.maybe(iteration, images)
                progress(restart * o.budget + iteration + 1, o.restarts * o.budget,
                         run_best["loss"])
                if not math.isfinite(loss) or not torch.isfinite(images).all():
                    failures.append(f"restart {restart}: non-finite loss at iteration "
                                    f"{iteration}; kept the best finite iterate")
                    break
            restart_losses.append(run_best["loss"])
            if run_best["loss"] < best["loss"]:
                best = run_best
        if best.get("images") is None:
            raise GGLError(f"{self.name} diverged: every iterate had a non-finite loss")
        snapshots.frames.append((o.budget * o.restarts, best["images"].cpu()))
        return Reconstruction(
            images=best["images"], labels=best["labels"], loss=best["loss"], history=history,
            snapshots=snapshots.frames, evaluations=objective.evaluations,
            iterations=len(history),
            info={"label_method": "optimized soft label" if known is None else
                  ("known" if observation.labels is not None else "inferred"),
                  "restart_losses": restart_losses, "failures": failures})


class IDLG(DLG):
    """Improved DLG: the label is inferred from the head's gradient (iDLG rule for B = 1,
    label counts for B > 1, or given when known), then L-BFGS optimizes the image only."""

    name = "idlg"
    summary = "iDLG: inferred label, L-BFGS on the image, squared L2 (Zhao et al. 2020)"
    learns_labels = False


# --------------------------------------------------------------------------- Inverting Gradients
#: IG's learning-rate schedules: x0.1 at 3/8, 5/8 and 7/8 of the budget, cosine, constant
Schedule = Literal["steps", "cosine", "constant"]


@dataclass
class IGOptions:
    """Inverting Gradients defaults (the paper's script): 24,000 iterations, Adam lr 0.1 on
    the sign of the gradient, lr x0.1 at 3/8, 5/8, 7/8, cosine distance, TV 1e-4, pixels
    boxed, images from N(0, 1), one restart.

    GradInversion's terms (Yin et al. 2021, ``ggl.bn_prior``), off by default:
    ``bn_prior`` > 0 adds that multiple of the BatchNorm-statistics prior (victims with
    BatchNorm); ``group`` > 1 optimizes that many images from different random starts
    side by side, each pulled towards the group's mean image by ``group_weight`` x its L2
    distance (group consistency); each restart returns its member of lowest loss."""

    budget: int = 24_000
    lr: float = 0.1
    tv: float = 1e-4
    distance: Annotated[str, DISTANCES] = "cosine"
    layer_weights: Annotated[str, LAYER_WEIGHTS] = "mean"
    restarts: int = 1
    init: Annotated[str, INITS] = "randn"
    signed: bool = True
    schedule: Schedule = "steps"
    boxed: bool = True
    path: EvaluationPath = "auto"
    bn_prior: float = 0.0
    group: int = 1
    group_weight: float = 0.01


class InvertingGradients(Attack):
    """Inverting Gradients (Geiping et al. 2020), faithful to the paper's recipe."""

    name = "ig"
    summary = "Inverting Gradients: cosine + TV, signed Adam, boxed pixels (Geiping et al. 2020)"
    Options = IGOptions
    #: the attack optimizes the images alone, so a group of them can run side by side
    #: (attacks with extra variables per image set this False)
    supports_group: ClassVar[bool] = True

    def _validate(self):
        super()._validate()
        o = self.options
        _check_common(o)
        if not o.bn_prior >= 0:
            raise GGLError(f"bn_prior must be non-negative, got {o.bn_prior}")
        if not o.group_weight >= 0:
            raise GGLError(f"group_weight must be non-negative, got {o.group_weight}")
        if o.group < 1:
            raise GGLError(f"group must be at least 1 (the images optimized side by side), "
                           f"got {o.group}")
        if o.group > 1 and not self.supports_group:
            raise GGLError(f"group > 1 is for attacks that optimize the images alone "
                           f"(ig, ig-adam, ig-multi); {self.name} optimizes more: leave "
                           f"group at 1")

    def _scheduler(self, optimizer):
        o = self.options
        if o.schedule == "steps":       # IG's milestones: budget // 2.667, // 1.6, // 1.142
            milestones = [int(o.budget // 2.667), int(o.budget // 1.6), int(o.budget // 1.142)]
            return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)
        if o.schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=o.budget)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    # -- hooks for attacks that optimize more than the image (DIA's dropout masks) ------
    def _extra_variables(self, observation: Observation, generator) -> list[torch.Tensor]:
        """Tensors optimized (plain Adam steps) alongside the image, drawn after it."""
        return []

    def _matching_loss(self, objective, observation: Observation, images: torch.Tensor,
                       extras: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """The scalar matching loss of ``images (B, C, H, W)`` (and the extra variables)."""
        return objective(images.unsqueeze(0), labels)[0]

    def _loss(self, objective, observation: Observation, images: torch.Tensor,
              extras: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """The matching loss plus, with ``bn_prior``, the BatchNorm-statistics prior."""
        loss = self._matching_loss(objective, observation, images, extras, labels)
        if self.bn_prior is not None:
            loss = loss + self.options.bn_prior * self.bn_prior(images)
        return loss

    def _project_extras(self, extras: list[torch.Tensor]) -> None:
        """Bring the extra variables back into their valid set after a step (in place)."""

    def _extra_info(self, extras: list[torch.Tensor]) -> dict:
        return {}

    def _reconstruct(self, observation: Observation, progress: Progress) -> Reconstruction:
        o = self.options
        labels = infer_labels(observation)
        objective = self.matching_objective(observation, distance=o.distance,
                                            layer_weights=o.layer_weights, tv=o.tv,
                                            path=o.path)
        self.bn_prior = BatchNormPrior(observation.model) if o.bn_prior > 0 else None
        low, high = observation.pixel_bounds()
        generator = self.generator()
        history, snapshots, failures = [], Snapshots(o.budget), []
        best_loss, best_images, best_extras, restart_losses = math.inf, None, [], []
        group_losses: list[list[float]] = []
        losses_log = LossLog(o.budget, o.restarts, history, failures, progress)
        for restart in range(o.restarts):
            # the group's members (G, B, C, H, W): G = 1 is IG's single image batch
            members = torch.stack([initial_images(observation, o.init, generator)
                                   for _ in range(o.group)])
            if o.boxed:
                members = torch.max(torch.min(members, high), low)
            members.requires_grad_(True)
            extras = self._extra_variables(observation, generator)
            optimizer = torch.optim.Adam([members, *extras], lr=o.lr)
            scheduler = self._scheduler(optimizer)
            for iteration in range(o.budget):
                losses = [self._loss(objective, observation, images, extras, labels)
                          for images in members]
                loss = losses[0] if o.group == 1 else torch.stack(losses).mean()
                total = loss if o.group == 1 else \
                    loss + o.group_weight * group_consistency(members)
                grads = torch.autograd.grad(total, [members, *extras])
                members.grad = grads[0].sign() if o.signed else grads[0]
                for extra, grad in zip(extras, grads[1:]):
                    extra.grad = grad
                optimizer.step()
                scheduler.step()
                with torch.no_grad():
                    if o.boxed:
                        torch.max(torch.min(members, high), low, out=members)
                    self._project_extras(extras)
                snapshots.maybe(iteration, members[0])
                if losses_log.step(loss, restart, iteration):
                    break
            # IG selects restarts (and group members) by the loss of the final image
            extras = [extra.detach() for extra in extras]
            finals = [self._loss(objective, observation, images, extras, labels).item()
                      for images in members.detach()]
            member = min(range(o.group), key=lambda g: finals[g]
                         if math.isfinite(finals[g]) else math.inf)
            final = finals[member]
            restart_losses.append(final)
            if o.group > 1:
                group_losses.append(finals)
            if math.isfinite(final) and final < best_loss:
                best_loss, best_images = final, members[member].detach().clone()
                best_extras = [extra.clone() for extra in extras]
        if best_images is None:
            raise GGLError(f"{self.name} diverged: every restart ended with a non-finite loss")
        snapshots.frames.append((o.budget * o.restarts, best_images.cpu()))
        return Reconstruction(
            images=best_images, labels=labels, loss=best_loss, history=history,
            snapshots=snapshots.frames, evaluations=objective.evaluations,
            iterations=len(history),
            info={"label_method": "known" if observation.labels is not None else "inferred",
                  "restart_losses": restart_losses, "failures": failures,
                  **({"group_losses": group_losses} if o.group > 1 else {}),
                  **self._extra_info(best_extras)})


@dataclass
class IGAdamOptions(IGOptions):
    """``ig`` with unsigned Adam steps and a cosine-annealed lr; all else as ``ig``."""

    signed: bool = False
    schedule: Schedule = "cosine"


class IGAdam(InvertingGradients):
    """Inverting Gradients with plain Adam steps and a cosine lr: ggl's converging variant.

    Why the faithful recipe converges slowly on small smooth victims such as the sigmoid
    LeNet: Adam divides the step by the running RMS of past gradients, so as the gradients
    shrink near a solution the steps shrink with them. IG feeds Adam the *sign* of the
    gradient instead, whose RMS is always 1: every pixel keeps moving by about ``lr`` until
    the scheduled decays at 3/8, 5/8 and 7/8, and the loss plateaus at a level set by the
    step size. With the raw gradient Adam anneals by itself; the cosine schedule then
    removes the plateaus between the step decays. Measured in experiments/README.md.
    """

    name = "ig-adam"
    summary = "IG with unsigned Adam + cosine lr: ggl's faster-converging variant of ig"
    Options = IGAdamOptions
