"""The WGAN-GP generator's inference pass as a chain of matrix products.

A frozen generator in eval mode (a prior) computes the same function with less work:
- each eval-mode BatchNorm is an affine map per channel, folded into the weights and bias of
  the layer before it;
- a transposed convolution with a 2 x 2 kernel and stride 2 writes every input pixel into
  its own 2 x 2 output block, so it is one matrix product of the pixels' features
  ``(N * H * W, C_in)`` with the weights ``(C_in, 2 * 2 * C_out)``; as every layer after the
  first acts on each pixel alone, the blocks are put in place once, on the image.

The products run at about twice the rate of PyTorch's transposed convolutions on the CPU
(experiments/README.md, "Speed"). The folded weights are constants computed from the
module's parameters and buffers, rebuilt whenever one of them changes (their version
counters); the pass stays differentiable w.r.t. the latents (the adam stage).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn


def _fold_batchnorm(weight: torch.Tensor, bias: torch.Tensor, norm: nn.Module | None,
                    channel_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight``, ``bias`` of a layer followed by the eval-mode BatchNorm ``norm`` (over the
    layer's output channels, dimension ``channel_dim`` of ``weight``) as one affine layer."""
    if norm is None:
        return weight, bias
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    shape = [1] * weight.dim()
    shape[channel_dim] = -1
    return weight * scale.view(shape), (bias - norm.running_mean) * scale + norm.bias


class FoldedLayers:
    """The generator's layers folded for inference (see the module docstring).

    Args:
        project: ``Sequential(Linear, BatchNorm1d, ReLU)`` mapping the latent (and label
            embedding) to the first feature map ``(c0, 4, 4)``, flattened channel-first.
        upsample: ``[ConvTranspose2d(k=2, s=2), BatchNorm2d, ReLU] * n`` then
            ``ConvTranspose2d(k=2, s=2), Tanh``.
        first_channels: ``c0``.
    """

    def __init__(self, project: nn.Sequential, upsample: nn.Sequential, first_channels: int):
        with torch.no_grad():
            linear, norm = project[0], project[1]
            weight, bias = _fold_batchnorm(linear.weight, linear.bias, norm, 0)
            # output rows reordered from (c0, 4, 4) to (4, 4, c0): channels-last features
            weight = weight.view(first_channels, 4, 4, -1).permute(1, 2, 0, 3)
            self.project = (weight.reshape(-1, weight.shape[-1]).t().contiguous(),
                            bias.view(first_channels, 4, 4).permute(1, 2, 0).reshape(-1))
            self.first_channels = first_channels
            modules = list(upsample)
            self.blocks = []
            for start in range(0, len(modules), 3):
                conv = modules[start]
                norm = modules[start + 1] if isinstance(modules[start + 1],
                                                        nn.BatchNorm2d) else None
                weight, bias = _fold_batchnorm(conv.weight, conv.bias, norm, 1)
                inputs, outputs = weight.shape[:2]
                # (C_in, C_out, 2, 2) -> (C_in, 2, 2, C_out): a product's row is one 2 x 2
                # block of output pixels, each with its C_out channels
                self.blocks.append((weight.permute(0, 2, 3, 1).reshape(inputs, 4 * outputs)
                                    .contiguous(), bias.repeat(4), outputs))
            # the last layer has few outputs (the image's channels): its product runs
            # transposed, (2 * 2 * C, C_in) @ (C_in, rows), 5x faster than the skinny one
            weight, bias, self.channels = self.blocks.pop()
            self.last = (weight.t().contiguous(), bias.unsqueeze(1))
        self._image_order: dict[tuple[int, torch.device], torch.Tensor] = {}

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        """``inputs (N, d)`` (latents, with the label embedding when conditional) -> images
        ``(N, C, R, R)`` in [-1, 1]."""
        count = len(inputs)
        # one row per pixel: the first map's 4 x 4 pixels, then each up-sampling turns a row
        # into the 2 x 2 rows of its block, with no reshuffle in between (the layers act on
        # each pixel alone); rows stay in the order (n, i, j, a1, b1, ..., am, bm)
        rows = torch.addmm(self.project[1], inputs, self.project[0]).clamp_min_(0)
        rows = rows.view(-1, self.first_channels)
        for weight, bias, outputs in self.blocks:
            rows = torch.addmm(bias, rows, weight).view(-1, outputs).clamp_min_(0)
        weight, bias = self.last
        pixels = torch.mm(weight, rows.t()).add_(bias).tanh_()     # (2 * 2 * C, rows)
        return pixels.view(-1).index_select(0, self.image_order(count, pixels.device)) \
            .view(count, self.channels, *[4 * 2 ** (len(self.blocks) + 1)] * 2)

    def image_order(self, count: int, device: torch.device) -> torch.Tensor:
        """Where each image pixel is in the last product's output, flattened: that output's
        axes are (a, b, c) of the last block, then (n, i, j, a1, b1, ..., am, bm); the
        image's are (n, c, i, a1, ..., am, a, j, b1, ..., bm, b)."""
        if (count, device) not in self._image_order:
            depth = len(self.blocks)        # up-samplings before the last one
            shape = [2, 2, self.channels, count, 4, 4, *[2] * (2 * depth)]
            rows = (4, *range(6, 6 + 2 * depth, 2), 0)
            columns = (5, *range(7, 7 + 2 * depth, 2), 1)
            order = torch.arange(math.prod(shape), device=device).view(shape)
            self._image_order[count, device] = order.permute(3, 2, *rows, *columns).reshape(-1)
        return self._image_order[count, device]


def state_key(module: nn.Module) -> tuple:
    """Identity and version of every parameter and buffer: changes when any is replaced or
    updated in place (an optimizer step, ``load_state_dict``, ``.to(device)``)."""
    return tuple((id(t), t._version, t.device, t.dtype)
                 for t in (*module.parameters(), *module.buffers()))
