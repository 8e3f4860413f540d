"""``dlf`` — Data Leakage in Federated Averaging (Dimitrov et al., TMLR 2022).

A FedAvg client reshuffles its N images every epoch, and the server does not know how. IG's
FedAvg attack (``ig-multi``) runs one set of N candidates through every epoch in a fixed
order, so over several epochs it asks one candidate to be several different images at
once. DLF instead gives every epoch its own copy of the N candidates (E x N images), which
makes the per-epoch batch assignment free again: epoch e's steps take their batches from
copy e, in order. What ties the copies together is the *epoch order-invariant prior*: a
statistic of each copy that does not depend on the order of its images (the mean image, or
the elementwise maximum, optionally of random 3x3 convolution features) should be the same
for every epoch. After the search the copies are matched to the first one (Hungarian, L2)
and averaged into the N returned images.

The objective, as in the authors' code (``fedavg_leakage``, FEMNIST scripts):
``fac x distance(simulated update, shared update) + tv x TV + clip x (pixels outside
[0, 1])^2 + reorder x order-invariant prior``, the data term's factor growing from
``fac_start`` to ``fac_end`` over the first half of the iterations, Adam with an
exponential learning-rate decay, squared L2 with exp(-k) weights on the k-th layer.
Labels are the known ones, or counts restored from the update over its local steps
(``ggl.labels``' ``update-count``, the paper's interpolated restoration).

Every copy keeps the same label sequence (the authors' ``np.tile(targets, epochs)``): a
batch of epoch e is asked to hold the same classes as the batch at that place in epoch 1,
which is exact for one batch per epoch or a single class, and an approximation otherwise.

With ``--local-steps`` that end inside an epoch, the last copy is used by only some steps:
it takes part in the simulation but not in the prior or the average.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn as nn

from ggl.attacks.base import Progress, Reconstruction
from ggl.attacks.pixel import IGOptions, InvertingGradients
from ggl.attacks.weight_update import UpdateMatching
from ggl.contracts import Observation
from ggl.errors import GGLError
from ggl.objective import DISTANCES, LAYER_WEIGHTS, total_variation

#: the random projection of the ``conv`` order-invariant priors (the authors': 96 filters)
PRIOR_CONV_CHANNELS = 96


def epoch_copy_order(training, images: int) -> tuple[list[list[int]], int, int]:
    """The server's fixed batch order over per-epoch copies.

    Returns:
        ``(order, copies, complete)``: per local step the indices of its batch in the
        ``(copies x N)`` candidates (step t of epoch e takes copy e's images in order); the
        number of copies; how many of them every step of their epoch used.
    """
    steps = dataclasses.replace(training, shuffle=False).batch_order(images, torch.Generator())
    per_epoch = -(-images // (training.batch_size or images))
    order = [[(t // per_epoch) * images + i for i in batch] for t, batch in enumerate(steps)]
    return order, -(-len(steps) // per_epoch), len(steps) // per_epoch


def order_invariant_prior(copies: torch.Tensor, statistic: str,
                          projection: nn.Module | None) -> torch.Tensor:
    """Mean squared difference of an order-free statistic between every pair of copies.

    Args:
        copies: ``(E, N, C, H, W)``, one copy of the N candidates per epoch.
        statistic: ``mean`` or ``max`` over each copy's N images (elementwise).
        projection: a fixed random convolution applied first, or None.
    Returns:
        a scalar; 0 for one copy.
    """
    epochs = copies.shape[0]
    features = copies if projection is None else \
        projection(copies.flatten(0, 1)).unflatten(0, copies.shape[:2])
    summary = features.mean(1) if statistic == "mean" else features.amax(1)   # (E, ...)
    flat = summary.flatten(1)
    pairs = (flat.unsqueeze(0) - flat.unsqueeze(1)).pow(2).mean(-1)           # (E, E)
    return pairs.sum() / (epochs * epochs)


def clip_prior(images: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """DLF's box prior: squared distance of ``(M, C, H, W)`` to the valid pixel box, in
    [0, 1] units, summed over pixels and averaged over images."""
    scale = high - low
    outside = (images - torch.max(torch.min(images, high), low)) / scale
    return outside.pow(2).mean(0).sum()


class EpochCopiesMatching:
    """``loss(copies (E, N, C, H, W), labels (N,)) -> ()``: DLF's objective (module doc).

    Attributes:
        copies, complete: copies in the simulation and how many of them are whole epochs.
        evaluations: simulations of the local training run so far.
    """

    def __init__(self, observation: Observation, options: "DLFOptions", seed: int,
                 matching=None):
        """``matching(order)`` builds the update distance for a batch order (default: an
        :class:`UpdateMatching` without a defense model)."""
        shared = observation.weight_update
        order, self.copies, self.complete = epoch_copy_order(shared.training, shared.images)
        self.matching = (matching or (lambda order: UpdateMatching(
            observation, options.distance, options.layer_weights, tv=0.0, order=order)))(order)
        self.options = options
        self.low, self.high = observation.pixel_bounds()
        self.projection = None
        if options.reorder_conv:               # fixed random features, seeded apart
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                conv = nn.Conv2d(observation.image_shape[0], PRIOR_CONV_CHANNELS, 3)
            self.projection = conv.to(observation.device).requires_grad_(False)
        self.calls = 0

    @property
    def evaluations(self) -> int:
        return self.matching.evaluations

    def data_factor(self) -> float:
        """The data term's weight now: ``fac_start`` growing geometrically to ``fac_end``
        over the first half of the budget, then constant."""
        o = self.options
        half = max(1, o.budget // 2)
        return o.fac_start * (o.fac_end / o.fac_start) ** min(1.0, self.calls / half)

    def __call__(self, copies: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        o = self.options
        flat = copies.flatten(0, 1)                                  # (E N, C, H, W)
        data = self.matching(flat.unsqueeze(0), labels.repeat(self.copies))[0]
        loss = self.data_factor() * data
        if o.tv:
            loss = loss + o.tv * total_variation(flat.unsqueeze(0))[0]
        if o.clip:
            loss = loss + o.clip * clip_prior(flat, self.low, self.high)
        if o.reorder and self.complete > 1:
            loss = loss + o.reorder * order_invariant_prior(
                copies[:self.complete], o.reorder_statistic, self.projection)
        if torch.is_grad_enabled():
            self.calls += 1
        return loss


def combine_copies(copies: torch.Tensor) -> torch.Tensor:
    """The N images ``(N, C, H, W)`` that the copies ``(E, N, C, H, W)`` agree on: each copy
    matched to the first (Hungarian assignment on L2), then the mean."""
    from scipy.optimize import linear_sum_assignment

    reference = copies[0]
    aligned = [reference]
    for copy in copies[1:]:
        cost = torch.cdist(reference.flatten(1), copy.flatten(1)).cpu().numpy()
        rows, cols = linear_sum_assignment(cost)
        aligned.append(copy[torch.as_tensor(cols[rows.argsort()], device=copy.device)])
    return torch.stack(aligned).mean(0)


@dataclass
class DLFOptions(IGOptions):
    """The authors' FEMNIST settings: 400 Adam steps (2 x 200 attack epochs) at lr 0.4
    decayed x0.995 every 10 steps, squared L2 with exp(-k) layer weights, TV 1e-3, clip
    prior 2, the order-invariant prior at 1000, data factor 1 -> 2, N(0, 1) init, no
    pixel box (the clip prior replaces it). The prior's statistic is the elementwise max
    of random-convolution features (``l2_max_conv``, seed 001's choice; the authors'
    scripts also use ``l2_mean``): on LeNet/MNIST, 5 epochs of 2 steps, it gave 9.6 dB
    where the mean image gave 8.1 and no prior 8.2 (experiments/benchmarks/dlf_prior.py)."""

    budget: int = 400
    lr: float = 0.4
    tv: float = 1e-3
    distance: Annotated[str, DISTANCES] = "l2"
    layer_weights: Annotated[str, LAYER_WEIGHTS] = "pair-exponential"
    signed: bool = False
    schedule: Literal["exponential", "steps", "cosine", "constant"] = "exponential"
    lr_decay: float = 0.995
    boxed: bool = False
    clip: float = 2.0
    reorder: float = 1000.0
    reorder_statistic: Literal["mean", "max"] = "max"
    reorder_conv: bool = True
    fac_start: float = 1.0
    fac_end: float = 2.0


class DLF(InvertingGradients):
    """Data Leakage in Federated Averaging: per-epoch copies, an order-invariant prior."""

    name = "dlf"
    summary = ("DLF on FedAvg updates: a copy of the images per epoch tied by an "
               "order-invariant prior, labels from the update (Dimitrov et al. 2022)")
    Options = DLFOptions
    supports_group = False        # extra variables per image set
    needs_protocol = "fedavg"

    def _validate(self):
        super()._validate()
        o = self.options
        if not 0 < o.lr_decay <= 1:
            raise GGLError(f"dlf: lr_decay must be in (0, 1], got {o.lr_decay}")
        for name in ("clip", "reorder"):
            if getattr(o, name) < 0:
                raise GGLError(f"dlf: {name} must be >= 0, got {getattr(o, name)}")
        if o.fac_start <= 0 or o.fac_end <= 0:
            raise GGLError(f"dlf: fac_start and fac_end must be positive, got "
                           f"{o.fac_start} and {o.fac_end}")

    def _scheduler(self, optimizer):
        if self.options.schedule == "exponential":       # x lr_decay every 10 steps
            return torch.optim.lr_scheduler.ExponentialLR(
                optimizer, gamma=self.options.lr_decay ** 0.1)
        return super()._scheduler(optimizer)

    def matching_objective(self, observation: Observation, **_) -> EpochCopiesMatching:
        o = self.options
        self._objective = EpochCopiesMatching(
            observation, o, self.seed, matching=lambda order: self.update_objective(
                observation, distance=o.distance, layer_weights=o.layer_weights, tv=0.0,
                order=order))
        return self._objective

    # the first copy is IG's image variable; the other epochs' copies are extra variables
    def _extra_variables(self, observation: Observation, generator) -> list[torch.Tensor]:
        from ggl.attacks.pixel import initial_images

        copies = self._objective.copies
        return [torch.stack([initial_images(observation, self.options.init, generator)
                             for _ in range(copies - 1)]).requires_grad_(True)] \
            if copies > 1 else []

    def _matching_loss(self, objective, observation, images, extras, labels):
        copies = torch.cat([images.unsqueeze(0), *extras]) if extras else images.unsqueeze(0)
        return objective(copies, labels)

    def _extra_info(self, extras: list[torch.Tensor]) -> dict:
        # IG's loop hands over the best restart's extra variables only here: keep the other
        # epochs' copies for _reconstruct, which averages them with the first
        self._best_extras = extras
        objective = self._objective
        return {"epoch_copies": objective.copies, "averaged_copies": max(1, objective.complete),
                "returned": "the mean of the whole epochs' copies, each matched to the "
                            "first (Hungarian, L2)"}

    def _reconstruct(self, observation: Observation, progress: Progress) -> Reconstruction:
        result = super()._reconstruct(observation, progress)
        copies = torch.cat([result.images.unsqueeze(0), *self._best_extras]) \
            if self._best_extras else result.images.unsqueeze(0)
        low, high = observation.pixel_bounds()
        combined = combine_copies(copies[:max(1, self._objective.complete)])
        result.images = torch.max(torch.min(combined, high), low)
        result.snapshots[-1] = (result.snapshots[-1][0], result.images.cpu())
        return result
