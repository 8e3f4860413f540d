"""Dropout whose masks the client records and an attacker can supply.

A client that trains with dropout computes its gradient under random masks the server never
sees. ``MaskedDropout`` is ordinary inverted dropout (``x * m / (1 - p)``, ``m`` ~
Bernoulli(1 - p)) with two additions:

* it keeps the mask it drew last (``recorded``), so the client's masks can go into the
  ``Secret`` (for oracle baselines and tests) — never into the ``Observation``;
* ``supplied_masks(model, masks)`` makes every dropout layer use given masks instead of
  drawing, continuous ones included: the Dropout Inversion Attack optimizes them.

Like ``nn.Dropout`` it is the identity in eval mode and for ``p = 0`` — unless masks are
supplied, which apply in either mode: the server holds the model with dropout off (an
attack that ignores dropout evaluates it as deployed, as the original's IG does), and an
attack that models the masks supplies them.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
import torch.nn as nn

from ggl.errors import GGLError


def check_rate(p: float) -> float:
    """Validate a dropout rate: a number in [0, 1)."""
    if not 0 <= p < 1:
        raise GGLError(f"--dropout must be a rate in [0, 1), got {p:g}")
    return float(p)


class MaskedDropout(nn.Module):
    """Inverted dropout with rate ``p`` on any activation shape ``(B, ...)``.

    Attributes:
        supplied: a mask of the activation's shape to use instead of drawing one (set
            through ``supplied_masks``), values in [0, 1].
        recorded: the 0/1 mask of the last forward pass that drew one, ``(B, ...)``.
    """

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = check_rate(p)
        self.supplied: torch.Tensor | None = None
        self.recorded: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.supplied is not None:
            if self.supplied.shape != x.shape:
                raise GGLError(f"a supplied dropout mask has shape {tuple(self.supplied.shape)}"
                               f" but the layer's activation is {tuple(x.shape)}")
            return x * self.supplied / (1 - self.p)
        if not self.training or self.p == 0:
            return x
        keep = torch.bernoulli(torch.full_like(x, 1 - self.p))
        self.recorded = keep.detach()
        return x * keep / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def dropout_layers(model: nn.Module) -> list[MaskedDropout]:
    """The model's ``MaskedDropout`` layers with ``p > 0``, in forward (definition) order."""
    return [m for m in model.modules() if isinstance(m, MaskedDropout) and m.p > 0]


def recorded_masks(model: nn.Module) -> tuple[torch.Tensor, ...]:
    """The masks each dropout layer drew in the last forward pass, ``(B, *activation)`` each."""
    masks = []
    for layer in dropout_layers(model):
        if layer.recorded is None:
            raise GGLError("a dropout layer has not drawn a mask yet: run the model in "
                           "train mode first")
        masks.append(layer.recorded)
    return tuple(masks)


@contextmanager
def supplied_masks(model: nn.Module, masks: Sequence[torch.Tensor]) -> Iterator[None]:
    """Within the block, dropout layer ``i`` multiplies by ``masks[i]`` instead of drawing."""
    layers = dropout_layers(model)
    if len(masks) != len(layers):
        raise GGLError(f"got {len(masks)} dropout masks for {len(layers)} dropout layers")
    previous = [layer.supplied for layer in layers]
    try:
        for layer, mask in zip(layers, masks):
            layer.supplied = mask
        yield
    finally:
        for layer, mask in zip(layers, previous):
            layer.supplied = mask


def set_dropout(model: nn.Module, active: bool) -> nn.Module:
    """Switch only the dropout layers on (train mode: they draw masks) or off (identity
    unless masks are supplied); other layers, BatchNorm included, keep the mode the run
    asked for. Returns ``model``."""
    for layer in dropout_layers(model):
        layer.train(active)
    return model


def activation_shapes(model: nn.Module, inputs: torch.Tensor) -> list[tuple[int, ...]]:
    """``(B, *activation)`` at each dropout layer when ``model`` runs on ``inputs``."""
    shapes: list[tuple[int, ...]] = []
    hooks = [layer.register_forward_pre_hook(lambda _, args: shapes.append(tuple(args[0].shape)))
             for layer in dropout_layers(model)]
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


class MaskModel:
    """The attacker's model of the client's dropout masks (the Dropout Inversion Attack's
    idea): one continuous mask per dropout layer, ``(B, *activation)``, drawn Bernoulli(1 - p)
    at the start, kept in [0, 1], pulled towards each layer's drop rate by
    ``rate_gap = sum_layers |(1 - mean(m)) - p|``.

    ``flatten``/``unflatten`` pack the masks into one vector, for optimizers that take one
    (the latent attack's Adam searches latent and masks as one vector).
    """

    def __init__(self, model: nn.Module, batch_shape: Sequence[int], device):
        self.rates = [layer.p for layer in dropout_layers(model)]
        self.shapes = activation_shapes(model, torch.zeros(*batch_shape, device=device))
        self.device = device

    def initial(self, generator: torch.Generator) -> list[torch.Tensor]:
        """Bernoulli(1 - p) draws of every layer's mask shape (CPU generator, then device)."""
        return [torch.bernoulli(torch.full(shape, 1 - p), generator=generator).to(self.device)
                for shape, p in zip(self.shapes, self.rates)]

    def rate_gap(self, masks: Sequence[torch.Tensor]) -> torch.Tensor:
        """``sum_layers |(1 - mean(m)) - p|``, a scalar (0 without dropout layers)."""
        return sum((((1 - m.mean()) - p).abs() for m, p in zip(masks, self.rates)),
                   torch.zeros((), device=self.device))

    @staticmethod
    def project(masks: Sequence[torch.Tensor]) -> None:
        """Clip the masks to [0, 1] in place (after each optimizer step)."""
        with torch.no_grad():
            for mask in masks:
                mask.clamp_(0, 1)

    def flatten(self, masks: Sequence[torch.Tensor]) -> torch.Tensor:
        """Masks -> one vector (their entries, layer after layer)."""
        return torch.cat([m.reshape(-1) for m in masks]) if masks else \
            torch.zeros(0, device=self.device)

    def unflatten(self, vector: torch.Tensor) -> list[torch.Tensor]:
        """The inverse of ``flatten``: one vector -> the masks (views, so gradients flow)."""
        sizes = [math.prod(shape) for shape in self.shapes]
        return [part.view(shape) for part, shape in zip(vector.split(sizes), self.shapes)]

    def drop_rates(self, masks: Sequence[torch.Tensor]) -> list[float]:
        """``1 - mean(m)`` per layer: how much each mask drops."""
        return [1 - m.mean().item() for m in masks]
