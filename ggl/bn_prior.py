"""GradInversion's BatchNorm-statistics prior (Yin et al., CVPR 2021).

A victim with BatchNorm layers carries statistics of the data it was trained on: each
layer's running mean and variance per channel. A batch of candidates whose per-layer
batch statistics stray from them is unlike real data, so GradInversion adds

    R_BN(x) = sum over BN layers l of ||mu_l(x) - running_mean_l||_2
                                    + ||var_l(x) - running_var_l||_2

to the gradient-matching loss, where ``mu_l(x)`` and ``var_l(x)`` are the per-channel mean
and (biased) variance of the layer's input over the batch and its positions.

The targets are the running statistics of the model the server sent: for an eval-mode
client the statistics the client normalises with; for a train-mode client (which
normalises with its own batch's statistics, which the server does not see) they are the
population statistics the global model has learnt, GradInversion's proxy.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ggl.errors import GGLError


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class BatchNormPrior:
    """``R_BN`` of candidate batches for ``model`` (module docstring), one value per batch.

    The candidates go through a private copy of ``model`` in the model's own mode whose
    BatchNorm layers normalise each batch of B candidates by itself: a population of P
    batches runs as one ``(P * B)`` pass, and a train-mode layer uses each batch's own
    statistics, as the client's did, never the population's. The copy's running
    statistics are never updated, and nothing of the observed model changes.

    Raises:
        GGLError: ``model`` has no BatchNorm layer (or one without running statistics).
    """

    def __init__(self, model: nn.Module):
        self.model = copy.deepcopy(model)
        self.layers = batchnorm_layers(self.model)
        if not self.layers:
            raise GGLError("bn_prior matches the victim's BatchNorm statistics, and this "
                           "victim has no BatchNorm layer (convnet and resnet18 have): "
                           "leave bn_prior at 0")
        for layer in self.layers:
            if layer.running_mean is None:
                raise GGLError("bn_prior needs BatchNorm layers that track running "
                               "statistics (track_running_stats=True)")
            layer.forward = self._batchwise(layer)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.targets = [(layer.running_mean.clone(), layer.running_var.clone())
                        for layer in self.layers]
        self._batch = 1
        self._inputs: list[torch.Tensor] = []

    def _batchwise(self, layer: nn.modules.batchnorm._BatchNorm):
        """``layer``'s forward on ``(P * B, C, ...)`` that records its input and, in train
        mode, normalises each consecutive group of B samples with that group's statistics."""

        def forward(x: torch.Tensor) -> torch.Tensor:
            self._inputs.append(x)
            if not layer.training:
                return F.batch_norm(x, layer.running_mean, layer.running_var, layer.weight,
                                    layer.bias, False, 0.0, layer.eps)
            groups = x.reshape(-1, self._batch, x.shape[1], x[0, 0].numel())  # (P, B, C, n)
            mean = groups.mean((1, 3), keepdim=True)
            var = groups.var((1, 3), unbiased=False, keepdim=True)
            out = (groups - mean) * torch.rsqrt(var + layer.eps)
            if layer.affine:
                out = out * layer.weight.view(1, 1, -1, 1) + layer.bias.view(1, 1, -1, 1)
            return out.reshape(x.shape)

        return forward

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``R_BN`` of ``images``: a batch ``(B, C, H, W)`` gives a scalar, a population of
        batches ``(P, B, C, H, W)`` gives ``(P,)``; differentiable in ``images``."""
        population = images.dim() == 5
        batches = images if population else images.unsqueeze(0)
        count, self._batch = batches.shape[:2]
        self._inputs = []
        try:
            self.model(batches.flatten(0, 1))
            total = batches.new_zeros(count)
            for x, (mean, var) in zip(self._inputs, self.targets):
                groups = x.reshape(count, self._batch, x.shape[1], x[0, 0].numel())
                total = total + torch.linalg.vector_norm(
                    groups.mean((1, 3)) - mean, dim=1) + torch.linalg.vector_norm(
                    groups.var((1, 3), unbiased=False) - var, dim=1)
        finally:
            self._inputs = []
        return total if population else total[0]


def group_consistency(members: torch.Tensor) -> torch.Tensor:
    """GradInversion's group-consistency term of ``members (G, B, C, H, W)``: each member's
    L2 distance to the group's consensus (their pixel-wise mean, held fixed for the step),
    summed over the group: a scalar. GradInversion registers the members to each other
    before averaging (RANSAC-flow on ImageNet photos); ggl averages them as they are."""
    consensus = members.detach().mean(0, keepdim=True)
    return torch.linalg.vector_norm((members - consensus).flatten(1), dim=1).sum()
