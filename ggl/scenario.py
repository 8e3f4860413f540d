"""The federated client (threat model): a private batch becomes a shared, defended gradient.

``Scenario.observe()`` returns two things that are kept apart:

* ``Observation`` — what the honest-but-curious server sees and the only thing an attack
  receives: the model it sent out, the shared gradient, the batch size, and the labels only
  when the threat model says they are known.
* ``Secret`` — the private images, labels and the indices they came from. Only metrics read it.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ggl.contracts import Defense, Observation, Secret, WeightUpdate
from ggl.dropout import recorded_masks, set_dropout
from ggl.errors import GGLError
from ggl.local_training import ESTIMATED, LocalTraining, estimate_training, simulate_update

if TYPE_CHECKING:
    from ggl.federation import OtherClients

DEFENSE_SEED_OFFSET = 1_000_003
#: the client's shuffling of its local batches draws from a stream of its own (secret)
SHUFFLE_SEED_OFFSET = 2_000_003


def client_gradient(model: nn.Module, images: torch.Tensor,
                    labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """FedSGD update: gradient of the mean cross-entropy of the batch w.r.t. every parameter.

    Args:
        images: ``(B, C, H, W)``; labels: ``(B,)``.
    Returns:
        one detached tensor per parameter of ``model.parameters()``.
    """
    params = [p for p in model.parameters()]
    loss = F.cross_entropy(model(images), labels)
    return tuple(g.detach() for g in torch.autograd.grad(loss, params))


def choose_indices(num_private: int, batch_size: int, index: Sequence[int] | None,
                   seed: int, pool: str = "the private split") -> list[int]:
    """Private indices of the client's batch (positions in ``pool``, which is named in
    the errors: the private split, or a client's share of it).

    ``index`` may list B indices, or one index that starts B consecutive ones; ``None``
    draws B distinct indices with a generator seeded by ``seed``.
    """
    if batch_size <= 0:
        raise GGLError(f"--batch-size must be positive, got {batch_size}")
    if batch_size > num_private:
        raise GGLError(f"--batch-size {batch_size} is larger than {pool} "
                       f"({num_private} images)")
    if not index:
        generator = torch.Generator().manual_seed(seed)
        return torch.randperm(num_private, generator=generator)[:batch_size].tolist()
    index = list(index)
    if len(index) == 1 and batch_size > 1:
        index = list(range(index[0], index[0] + batch_size))
    if len(index) != batch_size:
        raise GGLError(f"got {len(index)} --index values for --batch-size {batch_size}: give "
                       f"one start index or exactly {batch_size} indices")
    for i in index:
        if not 0 <= i < num_private:
            raise GGLError(f"--index {i} is out of range: {pool} has "
                           f"{num_private} images (indices 0..{num_private - 1})")
    return index


def client_share(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 local_training: LocalTraining | None, defenses: Sequence[Defense],
                 seed: int) -> tuple[tuple[torch.Tensor, ...], list[list[int]],
                                     tuple[torch.Tensor, ...]]:
    """What one client shares: its FedSGD gradient (``local_training`` None) or its FedAvg
    update ``w0 - wE``, with ``defenses`` applied in order.

    The client works on a copy of ``model`` with its dropout layers on (a train-mode
    BatchNorm may update the copy's buffers). ``seed`` seeds its shuffling and its
    defenses' draws, each on a stream of its own.

    Returns:
        ``(shared, order, masks)``: one detached tensor per parameter; the batch order of
        its local steps (``[]`` for FedSGD); the dropout masks it drew (``()`` without).
    """
    client_model = set_dropout(copy.deepcopy(model), True)
    context = {"model": client_model, "images": images, "labels": labels,
               # the attack seeds torch.Generator(seed): keep the defense's draws apart
               "generator": torch.Generator().manual_seed(seed + DEFENSE_SEED_OFFSET)}
    # a defense that computes the update from the data (DP-SGD, first in its chain) trains
    # the FedAvg client's local steps itself
    trainer = defenses[0] if defenses and getattr(defenses[0], "replaces_gradient", False) \
        else None
    order: list[list[int]] = []
    if local_training is None:
        gradient: Sequence[torch.Tensor] = client_gradient(client_model, images, labels)
    else:
        order = local_training.batch_order(
            len(labels), torch.Generator().manual_seed(seed + SHUFFLE_SEED_OFFSET))
        if trainer is not None:
            gradient = trainer.local_update(client_model, images, labels, local_training,
                                            order, context)
        else:
            gradient = simulate_update(client_model, images, labels, local_training, order)
    masks = recorded_masks(client_model)
    for defense in defenses:
        if defense is trainer and local_training is not None:
            continue                          # already the local training
        gradient = defense.apply(gradient, context)
    return tuple(g.detach().clone() for g in gradient), order, masks


def server_observation(server_model: nn.Module, shared: Sequence[torch.Tensor], *,
                       images: int, image_shape: tuple[int, int, int], num_classes: int,
                       mean: Sequence[float], std: Sequence[float],
                       labels: torch.Tensor | None, defenses: Sequence[Defense],
                       public_images: torch.Tensor | None, domain: str | None,
                       local_training: LocalTraining | None, local_known: bool = True,
                       public_labels: torch.Tensor | None = None,
                       clients: int = 1, server_sent: dict | None = None) -> Observation:
    """The server's view of a shared update (a simulated client's, or one captured from a
    real FL run, ``ggl.flower``).

    Args:
        server_model: the model the server sent, in the mode the client used.
        shared: FedSGD: the gradient; FedAvg (``local_training`` given): ``w0 - wE``, one
            tensor per parameter of ``server_model.parameters()``.
        images: N, the images behind the update; labels ``(N,)`` only when known.
        local_training: what the server knows of the client's local training (None:
            FedSGD); with ``local_known`` False it estimates the rest from the update and
            its public images (labelled by ``public_labels``).
        clients: 1, or the number of clients whose aggregate ``shared`` is.
        server_sent: what a malicious server changed in the model it sent (None: honest).
    """
    weight_update = None
    if local_training is not None:          # what a FedSGD attack reads from an update
        known = local_training
        if not local_known:                 # the server's estimate, from public data
            known = estimate_training(server_model, shared, public_images, public_labels,
                                      known, images)
        weight_update = WeightUpdate(tuple(shared), known, images, clients=clients,
                                     estimated=() if local_known else ESTIMATED)
        shared = tuple(u / known.lr for u in shared)
    return Observation(model=server_model, gradient=tuple(shared), batch_size=images,
                       image_shape=tuple(image_shape), num_classes=num_classes,
                       mean=tuple(mean), std=tuple(std), labels=labels,
                       defenses=tuple(defenses), public_images=public_images,
                       domain=domain, weight_update=weight_update, server_sent=server_sent)


class Scenario:
    """One federated client holding a private batch, and the server's view of its update.

    Args:
        model: the global model the server sent (not modified; the client works on a copy).
        images: private batch ``(B, C, H, W)``, normalized; labels: ``(B,)``.
        defenses: applied in order to a copy of the gradient before it is shared.
        known_labels: whether the server learns the labels (a stronger threat model).
        public_images: ``(N, C, H, W)`` public images the server holds (optional).
        domain: the dataset name, known to the server (picks GGL's default prior).
        seed: seeds the defenses' random draws (noise, masks), on a stream of its own.
        local_training: FedAvg: the client trains locally and shares ``w0 - wE`` (the
            server knows these hyperparameters unless ``local_known`` is False);
            ``None``: FedSGD, one gradient.
        other_clients: secure aggregation (``ggl.federation``): the round's other updates,
            summed with this client's before the server sees them.
        federation: facts of the simulated federation for the run's record (None: one
            client in round 1).
        local_known: the server knows ``local_training``; False: it knows the schedule and
            estimates the rest from the update and its public images, whose labels
            ``public_labels`` ``(N,)`` are then needed (``estimate_training``).
        server_sent: with a malicious server, what it changed in ``model`` (which is then
            the modified model the client trains); None: an honest server.
    """

    def __init__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                 num_classes: int, mean: Sequence[float], std: Sequence[float],
                 indices: Sequence[int] = (), defenses: Sequence[Defense] = (),
                 known_labels: bool = False, public_images: torch.Tensor | None = None,
                 domain: str | None = None, seed: int = 0,
                 local_training: LocalTraining | None = None,
                 other_clients: "OtherClients | None" = None,
                 federation: dict | None = None, local_known: bool = True,
                 public_labels: torch.Tensor | None = None,
                 server_sent: dict | None = None):
        self.model = model
        self.images, self.labels = images, labels
        self.num_classes, self.mean, self.std = num_classes, tuple(mean), tuple(std)
        self.indices = tuple(indices)
        self.defenses = list(defenses)
        self.known_labels = known_labels
        self.public_images = public_images
        self.domain = domain
        self.seed = seed
        self.local_training = local_training
        self.other_clients = other_clients
        self.federation = federation
        self.local_known = local_known
        self.public_labels = public_labels
        self.server_sent = server_sent

    def observe(self) -> tuple[Observation, Secret]:
        """Run the client step and return ``(Observation, Secret)``."""
        # the client trains with its dropout layers on (masks drawn, kept secret); the
        # server's copy has them off: attacks that model the masks supply their own
        server_model = set_dropout(copy.deepcopy(self.model), False)
        shared, order, masks = client_share(self.model, self.images, self.labels,
                                            self.local_training, self.defenses, self.seed)
        if self.other_clients is not None:       # secure aggregation: only the aggregate
            shared = self.other_clients.aggregate(shared, len(self.labels))
        observation = server_observation(
            server_model, shared, images=len(self.labels),
            image_shape=tuple(self.images.shape[1:]), num_classes=self.num_classes,
            mean=self.mean, std=self.std,
            labels=self.labels.clone() if self.known_labels else None,
            defenses=self.defenses, public_images=self.public_images,
            public_labels=self.public_labels, domain=self.domain,
            local_training=self.local_training, local_known=self.local_known,
            clients=1 if self.other_clients is None else 1 + len(self.other_clients.sizes),
            server_sent=self.server_sent)
        secret = Secret(self.images.clone(), self.labels.clone(), self.indices,
                        tuple(m.clone() for m in masks), tuple(map(tuple, order)))
        return observation, secret
