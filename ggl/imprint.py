"""Robbing the Fed's imprint block: what a malicious server puts before the victim.

Fowl et al., "Robbing the Fed" (ICLR 2022). The server sends ``ImprintedModel(block,
victim)``: the block reads the flattened image ``x`` (d values) through a linear layer of
k bins whose rows are all one measurement vector ``v`` and whose biases are ``-c_i``, the
cuts ``c_0 < ... < c_{k-1}`` of the measurement ``h(x) = v . x`` at its quantiles over
public data; then a ReLU, so that bin i fires exactly when ``h(x) > c_i``; then a linear
layer back to d values, added to ``x``, whose columns are all ``scale * u``. Because every
column is the same, a firing bin passes the same ``g(x) = scale * u . dL/d(out)`` back for
an image, so for a batch

    dL/dW_i = sum over images with h(x) > c_i of g(x) x,
    dL/db_i = sum over the same images of g(x),

and the differences of consecutive bins isolate the images whose measurement falls in
``[c_i, c_{i+1})``: one image alone in its bin is ``(dW_i - dW_{i+1}) / (db_i - db_{i+1})``,
exactly (``ggl.attacks.rtf``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ggl.registry import Registry

def brightness(size: int, seed: int) -> torch.Tensor:
    """the mean of the image's normalized pixels (v = 1/d)"""
    return torch.full((size,), 1.0 / size)


def random_projection(size: int, seed: int) -> torch.Tensor:
    """a fixed random projection (v ~ N(0, 1/d), seeded by the run)"""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(size, generator=generator) / math.sqrt(size)


#: the measurements h(x) = v . x the bins cut: name -> v (d,) from (d, seed)
STATISTICS = Registry.of("statistic", {"brightness": brightness,
                                       "random": random_projection})


def bin_cuts(values: torch.Tensor, bins: int) -> torch.Tensor:
    """``(bins,)`` increasing cuts at the quantiles 0, 1/k, ..., (k-1)/k of the public
    measurements ``values`` ``(N,)``; the first is moved below every public value by the
    values' range, so that bin 0 holds everything below the second cut."""
    levels = torch.arange(bins, dtype=torch.float64) / bins
    cuts = torch.quantile(values.double(), levels)
    cuts[0] = values.min().double() - (values.max() - values.min()).double() - 1.0
    return cuts.float()


class ImprintBlock(nn.Module):
    """``(B, C, H, W) -> (B, C, H, W)``: ``x + scale * u * sum_i relu(v . x - c_i)``.

    Args:
        image_shape: ``(C, H, W)``; cuts: ``(k,)`` increasing; v: ``(d,)``; u: ``(d,)``.
    """

    def __init__(self, image_shape: tuple[int, int, int], cuts: torch.Tensor,
                 v: torch.Tensor, u: torch.Tensor, scale: float):
        super().__init__()
        size, bins = math.prod(image_shape), len(cuts)
        self.image_shape = tuple(image_shape)
        self.imprint = nn.Linear(size, bins)
        self.restore = nn.Linear(bins, size)
        with torch.no_grad():
            self.imprint.weight.copy_(v.expand(bins, size))
            self.imprint.bias.copy_(-cuts)
            self.restore.weight.copy_(scale * u.view(size, 1).expand(size, bins))
            self.restore.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        return (flat + self.restore(F.relu(self.imprint(flat)))).view_as(x)


class ImprintedModel(nn.Module):
    """The model a malicious server sends: ``victim(block(x))``. Its parameters are the
    block's (imprint weight, imprint bias, restore weight, restore bias), then the
    victim's."""

    def __init__(self, block: ImprintBlock, victim: nn.Module):
        super().__init__()
        self.block, self.victim = block, victim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.victim(self.block(x))


def imprint(victim: nn.Module, public_images: torch.Tensor, *, bins: int, statistic: str,
            scale: float, seed: int) -> tuple[ImprintedModel, dict]:
    """``victim`` behind an imprint block whose ``bins`` cut ``statistic`` at its quantiles
    over ``public_images`` ``(N, C, H, W)``; returns the model and what the server did."""
    shape = tuple(public_images.shape[1:])
    size = math.prod(shape)
    v = STATISTICS.choose(statistic)(size, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    u = torch.randn(size, generator=generator) / math.sqrt(size)
    values = public_images.flatten(1).cpu() @ v
    cuts = bin_cuts(values, bins)
    device = next(victim.parameters()).device
    block = ImprintBlock(shape, cuts, v, u, scale).to(device)
    model = ImprintedModel(block, victim).train(victim.training)
    facts = {"threat_model": "active", "module": "Robbing the Fed's imprint block, before "
             "the model", "bins": bins, "statistic": statistic, "scale": scale,
             "cuts_from": f"quantiles of the measurement over {len(public_images)} public "
                          f"images"}
    return model, facts
