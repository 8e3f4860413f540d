"""Dropout whose masks the client records and an attacker can supply.

A client that trains with dropout computes its gradient under random masks the server never
sees. ``MaskedDropout`` is ordinary inverted dropout (``x * m / (1 - p)``, ``m`` ~
Bernoulli(1 - p)) with two additions:

* it keeps the mask it drew last (``recorded``), so the client's masks can go into the
  ``Secret`` (for oracle baselines and tests) — never into the ``Observation``;
* ``supplied_masks(model, masks)`` makes every dropout layer use given masks instead of
  drawing, continuous ones included: the Dropout Inversion Attack optimizes them.

Like ``nn.Dropout`` it is the identity in eval mode and for ``p = 0``.
"""
from __future__ import annotations

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
        if not self.training or self.p == 0:
            return x
        if self.supplied is not None:
            if self.supplied.shape != x.shape:
                raise GGLError(f"a supplied dropout mask has shape {tuple(self.supplied.shape)}"
                               f" but the layer's activation is {tuple(x.shape)}")
            return x * self.supplied / (1 - self.p)
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


def activate_dropout(model: nn.Module) -> nn.Module:
    """Put only the dropout layers in train mode (the client trains with dropout; other
    layers, BatchNorm included, keep the mode the run asked for). Returns ``model``."""
    for layer in dropout_layers(model):
        layer.train()
    return model
