"""The contracts at the bottom of ggl that attacks, defenses and the client all speak.

* :class:`Observation`: what the honest-but-curious server sees of one client's update, and
  the only thing an attack receives.
* :class:`Secret`: the client's private data; only metrics read it.
* :class:`Defense`: what a client-side defense is to the client and to an adaptive attacker.
* ``Gradients``: one tensor per parameter of ``model.parameters()``, in that order (each
  ``(P, *param_shape)`` for a population of P trial gradients).

This module imports nothing of ggl: every other room may import it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import torch
import torch.nn as nn

Gradients = list[torch.Tensor]


@dataclass(frozen=True)
class WeightUpdate:
    """What the server sees of a FedAvg client beyond FedSGD's gradient.

    Attributes:
        update: the shared (possibly defended) ``w0 - wE``, one tensor per parameter.
        training: the client's local hyperparameters as the server knows them (a
            ``ggl.local_training.LocalTraining``: epochs, batch size, lr, ...).
        images: N, the number of images the client trained on.
        clients: 1, or under secure aggregation the number of clients whose size-weighted
            mean ``update`` is (the server cannot tell the target's part from the rest).
        estimated: the hyperparameters in ``training`` the server estimated rather than
            knew (``--local-estimated``); () when it knows them all.
    """

    update: tuple[torch.Tensor, ...]
    training: object
    images: int
    clients: int = 1
    estimated: tuple[str, ...] = ()


@dataclass(frozen=True)
class Observation:
    """What the server sees of one client's round of FedSGD.

    Attributes:
        model: the server's copy of the victim, in the mode the client used.
        gradient: the shared (possibly defended) update, one tensor per parameter of
            ``model.parameters()``, in that order.
        batch_size: B, the number of private images behind the gradient.
        image_shape: ``(C, H, W)`` of one input.
        num_classes: K, the number of labels.
        mean, std: the normalization of the data domain (per channel), which fixes the
            valid pixel box ``[(0 - mean) / std, (1 - mean) / std]``.
        labels: ``(B,)`` true labels when the threat model grants them (``--known-labels``),
            otherwise ``None``.
        defenses: the defenses the client applied, in order, with their parameters: what
            an adaptive attacker models (``--adaptive``).
        public_images: ``(N, C, H, W)`` images of the public split: the server's own data
            of the domain (GGL's threat model), disjoint from every client's private data.
        domain: the name of the data domain (a dataset name such as ``"mnist"``), which
            the server knows; GGL picks its default generative prior by it.
        weight_update: with ``--protocol fedavg``, the client's shared weight update and
            what the server knows of its local training; ``gradient`` then holds the
            update divided by the local lr, the gradient a FedSGD attack reads from it
            (the sum of the local steps' gradients: exactly the batch's gradient when E = 1
            and B = N). ``None`` for FedSGD.
        server_sent: what a malicious server changed in the model before sending it (the
            ``active`` threat model, e.g. Robbing the Fed's imprint block); ``model`` is
            then the modified model. ``None``: the honest server sent its model.
    """

    model: nn.Module
    gradient: tuple[torch.Tensor, ...]
    batch_size: int
    image_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    labels: torch.Tensor | None = None
    defenses: tuple = ()
    public_images: torch.Tensor | None = None
    domain: str | None = None
    weight_update: WeightUpdate | None = None
    server_sent: dict | None = None

    @property
    def device(self) -> torch.device:
        return self.gradient[0].device

    def pixel_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower and upper bound of valid normalized pixels, each ``(C, 1, 1)``."""
        mean = torch.tensor(self.mean, device=self.device).view(-1, 1, 1)
        std = torch.tensor(self.std, device=self.device).view(-1, 1, 1)
        return (0 - mean) / std, (1 - mean) / std


@dataclass(frozen=True)
class Secret:
    """The client's private data: ``images (B, C, H, W)`` normalized, ``labels (B,)``, and
    the dropout masks its forward pass drew (one ``(B, *activation)`` 0/1 tensor per dropout
    layer of the model, in ``ggl.dropout.dropout_layers`` order; empty without dropout) and,
    under FedAvg, the shuffled order of its local steps: kept for oracle baselines and
    tests, never shown to an attack."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: tuple[int, ...]
    dropout_masks: tuple[torch.Tensor, ...] = ()
    batch_order: tuple[tuple[int, ...], ...] = ()   # FedAvg: each local step's images


class Defense(Protocol):
    """A client-side defense (``ggl.defenses.BaseDefense`` implements it for the built-in
    ones): ``apply`` returns a defended copy of the gradient and never mutates it; the
    attacker's model of it serves ``--adaptive``; ``wrap_model`` changes the victim itself
    (model extensions such as PRECODE, ``wraps_model = True``)."""

    name: str
    wraps_model: bool

    def apply(self, gradient: Sequence[torch.Tensor], context: dict) -> Gradients:
        ...

    def attacker_model(self, observed: Sequence[torch.Tensor], known: bool = True,
                       batch_size: int = 1):
        ...

    def wrap_model(self, model: nn.Module, seed: int = 0) -> nn.Module:
        ...
