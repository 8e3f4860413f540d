"""A FedAvg client's local training, as a differentiable function of its data.

The client holds N private images, starts from the global weights ``w0`` and runs E local
epochs of SGD (learning rate, momentum, weight decay as ``torch.optim.SGD`` defines them)
over mini-batches of B images, reshuffled every epoch by a seeded generator; it shares its
weight update ``w0 - wE`` (or the new weights ``wE``). FedSGD is the special case E = 1,
B = N: then ``(w0 - wE) / lr`` is exactly the batch's gradient.

:func:`simulate_update` is the one implementation of those steps, used twice: by the client
(``create_graph=False``) and by attacks that invert multi-step updates (``create_graph=True``
through ``torch.func.functional_call``, so candidate images receive gradients through every
local step). Tensors are in ``model.parameters()`` order, like every ``Gradients`` in ggl.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from ggl import checks
from ggl.errors import GGLError

#: what a client shares after local training
SHARES = ("delta", "weights")


@dataclass(frozen=True)
class LocalTraining:
    """The client's local hyperparameters (``--local-*``).

    Attributes:
        epochs: E, passes over the client's N images.
        steps: S, the number of local SGD steps instead (``--local-steps``; None: E
            epochs): batches are taken epoch after epoch, reshuffled at each, until S.
        batch_size: B, images per local step (None: all N, one step per epoch).
        lr: SGD learning rate.
        momentum, weight_decay: as ``torch.optim.SGD``'s (0: plain SGD).
        shuffle: reshuffle the images every epoch (seeded); False: in order.
    """

    epochs: int = 1
    steps: int | None = None
    batch_size: int | None = None
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    shuffle: bool = True

    def check(self) -> "LocalTraining":
        checks.at_least("--local-epochs", self.epochs, 1)
        if self.steps is not None:
            checks.at_least("--local-steps", self.steps, 1)
            if self.epochs != 1:
                raise GGLError(f"give --local-epochs or --local-steps, not both (got "
                               f"{self.epochs} epochs and {self.steps} steps)")
        if self.batch_size is not None:
            checks.at_least("--local-batch-size", self.batch_size, 1)
        checks.positive("--local-lr", self.lr)
        checks.at_least("--local-momentum", self.momentum, 0)
        checks.at_least("--local-weight-decay", self.weight_decay, 0)
        return self

    def num_steps(self, images: int) -> int:
        """Local SGD steps over ``images`` images: S, or E x ceil(N / B)."""
        size = self.batch_size or images
        return self.steps or self.epochs * -(-images // size)

    def batch_order(self, images: int, generator: torch.Generator) -> list[list[int]]:
        """Per local step, the indices of its mini-batch (the last one of an epoch may be
        smaller), epoch after epoch; drawn from ``generator`` when ``shuffle``."""
        size = self.batch_size or images
        order: list[list[int]] = []
        while len(order) < self.num_steps(images):
            epoch = (torch.randperm(images, generator=generator).tolist() if self.shuffle
                     else list(range(images)))
            order += [epoch[i:i + size] for i in range(0, images, size)]
        return order[:self.num_steps(images)]


def sgd_step(weights: Sequence[torch.Tensor], grads: Sequence[torch.Tensor],
             velocity: list[torch.Tensor] | None, training: LocalTraining
             ) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    """One step of ``torch.optim.SGD``'s rule: ``d = g + wd * w``; with momentum
    ``v = d`` on the first step, ``v = momentum * v + d`` after; ``w = w - lr * (v or d)``.
    Returns the new weights and velocity (None without momentum)."""
    # torch.add(..., alpha=) as torch.optim.SGD writes it, so both round alike (bit for bit)
    moves = [torch.add(g, w, alpha=training.weight_decay) if training.weight_decay else g
             for g, w in zip(grads, weights)]
    if training.momentum:
        velocity = moves if velocity is None else \
            [torch.add(training.momentum * v, m) for v, m in zip(velocity, moves)]
        moves = velocity
    return [torch.add(w, m, alpha=-training.lr) for w, m in zip(weights, moves)], velocity


def simulate_update(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    training: LocalTraining, order: Sequence[Sequence[int]],
                    create_graph: bool = False) -> list[torch.Tensor]:
    """The weight update ``w0 - wE`` of local SGD from ``model``'s current weights.

    Args:
        model: the global model (its parameters are ``w0``; not modified). Buffers (e.g.
            BatchNorm statistics) are read, never updated.
        images: ``(N, C, H, W)``; labels: ``(N,)`` class indices, or ``(N, K)`` soft labels
            (probabilities) for attacks that optimize them.
        training: the local hyperparameters.
        order: per step, the indices of its mini-batch (``LocalTraining.batch_order``).
        create_graph: keep the graph through every step (attacks differentiate the update
            with respect to ``images``/``labels``).

    Returns:
        One tensor per parameter of ``model.parameters()``: ``w0 - wE``.
    """
    names = [name for name, _ in model.named_parameters()]
    start = [p.detach() for p in model.parameters()]
    weights = [p.clone().requires_grad_(True) for p in start]
    buffers = dict(model.named_buffers())
    velocity: list[torch.Tensor] | None = None
    for batch in order:
        index = torch.as_tensor(list(batch), device=images.device)
        outputs = functional_call(model, {**dict(zip(names, weights)), **buffers},
                                  (images[index],))
        target = labels[index]
        loss = (F.cross_entropy(outputs, target) if target.dim() == 1 else
                torch.mean(torch.sum(-target * F.log_softmax(outputs, dim=-1), dim=-1)))
        grads = torch.autograd.grad(loss, weights, create_graph=create_graph)
        weights, velocity = sgd_step(weights, grads, velocity, training)
        if not create_graph:
            weights = [w.detach().requires_grad_(True) for w in weights]
            velocity = None if velocity is None else [v.detach() for v in velocity]
    return [w0 - w if create_graph else (w0 - w).detach() for w0, w in zip(start, weights)]


def simulate_updates(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                     training: LocalTraining, order: Sequence[Sequence[int]]
                     ) -> list[torch.Tensor]:
    """:func:`simulate_update` for P candidate batches at once (``torch.func.vmap`` over
    ``torch.func.grad``), without a graph back to the images: black-box searches score
    whole populations this way.

    Args:
        images: ``(P, N, C, H, W)``; labels: ``(N,)`` class indices, shared by the batches.

    Returns:
        One ``(P, *param_shape)`` tensor per parameter: each candidate's ``w0 - wE``.
    """
    from torch.func import grad, vmap

    names = [name for name, _ in model.named_parameters()]
    start = tuple(p.detach() for p in model.parameters())
    buffers = {name: b.detach() for name, b in model.named_buffers()}
    steps = [torch.as_tensor(list(batch), device=images.device) for batch in order]

    def batch_loss(weights, inputs, targets):
        outputs = functional_call(model, {**dict(zip(names, weights)), **buffers}, (inputs,))
        return F.cross_entropy(outputs, targets)

    def one(candidate: torch.Tensor) -> tuple[torch.Tensor, ...]:
        weights, velocity = start, None
        for index in steps:
            grads = grad(batch_loss)(weights, candidate[index], labels[index])
            weights, velocity = sgd_step(weights, grads, velocity, training)
        return tuple(w0 - w for w0, w in zip(start, weights))

    with torch.no_grad():
        return list(vmap(one)(images.detach()))


#: the hyperparameters ``estimate_training`` estimates (the rest the server knows)
ESTIMATED = ("lr", "momentum", "weight_decay")
#: learning rates the server tries when it estimates the client's: 1e-4 .. 1, 16 per decade
LR_GRID = tuple(10 ** (k / 16) for k in range(-64, 1))


def estimate_training(model: nn.Module, update: Sequence[torch.Tensor],
                      public_images: torch.Tensor, public_labels: torch.Tensor,
                      known: LocalTraining, images: int) -> LocalTraining:
    """The server's estimate of a client's local training when it knows only the
    schedule (``--local-estimated``): epochs or steps, batch size and N, which FedAvg's
    configuration and aggregation weights give it; momentum and weight decay are taken as
    0 (plain SGD) and the learning rate is the one of ``LR_GRID`` whose simulated update on
    N public images (in order) has the norm of the shared ``update``.

    Args:
        public_images: ``(M, C, H, W)``, cycled when M < N; public_labels: ``(M,)``.
        known: the client's training; only its epochs, steps and batch size are read.
    """
    repeat = -(-images // len(public_labels))
    stand_in = public_images.repeat(repeat, 1, 1, 1)[:images]
    stand_in_labels = public_labels.repeat(repeat)[:images]
    schedule = LocalTraining(epochs=known.epochs, steps=known.steps,
                             batch_size=known.batch_size, shuffle=False)
    order = schedule.batch_order(images, torch.Generator())
    target = torch.log(torch.sqrt(sum(u.double().pow(2).sum() for u in update)))
    best, best_gap = LR_GRID[0], float("inf")
    for lr in LR_GRID:
        trial = dataclasses.replace(schedule, lr=lr)
        simulated = simulate_update(model, stand_in, stand_in_labels, trial, order)
        norm = torch.sqrt(sum(u.double().pow(2).sum() for u in simulated))
        gap = abs(float(torch.log(norm) - target))
        if gap < best_gap:
            best, best_gap = lr, gap
    return dataclasses.replace(schedule, lr=best, shuffle=known.shuffle)
