"""Attacks on FedAvg weight updates (``--protocol fedavg``).

``ig-multi`` is Inverting Gradients' attack on multi-step updates (Geiping et al. 2020,
section 6): the candidate images go through a differentiable simulation of the client's
local SGD (:func:`ggl.local_training.simulate_update`, unrolled with
``torch.func.functional_call``), and the distance between the simulated and the shared
update (cosine by default) plus TV is minimized with IG's signed Adam.

The server knows the local hyperparameters (E, B, lr, momentum, weight decay, N) but not the
client's shuffling, so the simulation runs the candidates in a fixed order: candidate i is
the i-th image of every epoch. Within one epoch that loses nothing (the candidates are free,
any assignment of images to steps is one of them relabelled); over several reshuffled
epochs it is the approximation IG's attack makes, and what DLF's epoch-order prior improves.
The FedSGD attacks (``ig``, ``dlg``, ``ggl``, ...) read the same update as a gradient (the
naive baseline, ``Observation.gradient``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ggl.attacks.pixel import IGOptions, InvertingGradients
from ggl.contracts import Observation
from ggl.local_training import simulate_update, simulate_updates
from ggl.objective import DISTANCES, layer_weights, total_variation, vmappable


class UpdateMatching:
    """``loss(images (P, N, C, H, W), labels (N,)) -> (P,)``: the distance between each
    candidate batch's simulated weight update and the shared one, plus ``tv`` x TV.

    Both updates are divided by the local learning rate (gradient units, as the naive
    baseline's), so a distance's balance with an attack's other terms (GGL's KL) is the
    same as on a FedSGD gradient. Under ``torch.no_grad`` (black-box searches) the local
    steps still differentiate the victim, but build no graph back to the images.

    Attributes:
        evaluations: candidate batches scored so far (one per local-training simulation).
    """

    def __init__(self, observation: Observation, distance: str, weights: str, tv: float,
                 order: list[list[int]] | None = None, defense=None):
        shared = observation.weight_update
        self.model = observation.model
        # the server does not know the shuffling: candidates run in a fixed order (or in
        # ``order``, indices into the candidate batch, e.g. DLF's per-epoch copies)
        self.training = dataclasses.replace(shared.training, shuffle=False)
        self.order = order or self.training.batch_order(shared.images, torch.Generator())
        self.target = [u / self.training.lr for u in shared.update]
        self.distance = DISTANCES.choose(distance)
        self.weights = layer_weights(weights, len(self.target)).to(observation.device)
        # --adaptive: the defense modelled on the simulated update, in update units; against
        # noise its likelihood of the shared update replaces the distance
        self.transform = None if defense is None else defense.transform
        self.likelihood = None if defense is None else defense.likelihood
        self.shared = [u.detach() for u in shared.update]
        if defense is not None and defense.dropped_layers:
            self.weights[list(defense.dropped_layers)] = 0
        if self.likelihood is not None:
            self.weights = torch.ones_like(self.weights)
        self.tv = tv
        self.batchable = vmappable(self.model)   # no train-mode BatchNorm
        self.evaluations = 0

    def choose_path(self, num_candidates: int) -> str:
        """How candidates are scored (run.json's ``gradient_path``): black-box populations
        in one batched simulation where the victim allows vmap, else one at a time."""
        if num_candidates > 1 and self.batchable:
            return "simulated local training, batched over candidates (vmap)"
        return "simulated local training, one candidate at a time"

    def _loss(self, updates: list[torch.Tensor]) -> torch.Tensor:
        """``(P,)`` losses of simulated updates, one ``(P, *shape)`` tensor per parameter."""
        if self.transform is not None:
            updates = self.transform(updates)
        if self.likelihood is not None:
            return self.likelihood(updates, self.shared, self.weights)
        return self.distance([u / self.training.lr for u in updates], self.target,
                             self.weights)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        differentiable = torch.is_grad_enabled()
        if not differentiable and len(images) > 1 and self.batchable:
            loss = self._loss(simulate_updates(self.model, images, labels, self.training,
                                               self.order))
        else:
            losses = []
            for batch in images:
                with torch.enable_grad():
                    update = simulate_update(self.model, batch, labels, self.training,
                                             self.order, create_graph=differentiable)
                losses.append(self._loss([u.unsqueeze(0) for u in update])[0])
            loss = torch.stack(losses)
        self.evaluations += len(images)
        return loss + self.tv * total_variation(images) if self.tv else loss


@dataclass
class IGMultiOptions(IGOptions):
    """``ig``'s options and defaults (24,000 signed-Adam steps, cosine + TV 1e-4), matched
    on the simulated local training instead of one gradient."""


class IGMulti(InvertingGradients):
    """Inverting Gradients on a FedAvg weight update through simulated local SGD."""

    name = "ig-multi"
    summary = ("IG on FedAvg weight updates: candidates through the client's simulated "
               "local SGD (Geiping et al. 2020)")
    Options = IGMultiOptions
    needs_protocol = "fedavg"

    def matching_objective(self, observation: Observation, *, distance: str,
                           layer_weights: str, tv: float, path: str = "auto",
                           chunk_size: int | None = None) -> UpdateMatching:
        return self.update_objective(observation, distance=distance,
                                     layer_weights=layer_weights, tv=tv)
