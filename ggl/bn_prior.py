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
from torch import nn

from ggl.errors import GGLError


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class BatchNormPrior:
    """``R_BN`` of candidate batches for ``model`` (module docstring).

    The candidates go through a private copy of ``model`` in the model's own mode whose
    BatchNorm layers keep their running statistics fixed (momentum 0), so a train-mode
    copy normalises with the candidates' batch statistics as the client did, and
    nothing of the observed model changes.

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
            layer.momentum = 0.0
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.targets = [(layer.running_mean.clone(), layer.running_var.clone())
                        for layer in self.layers]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``R_BN`` of ``images (B, C, H, W)``: a scalar, differentiable in ``images``."""
        inputs: list[torch.Tensor] = []
        hooks = [layer.register_forward_pre_hook(lambda _, args: inputs.append(args[0]))
                 for layer in self.layers]
        try:
            self.model(images)
        finally:
            for hook in hooks:
                hook.remove()
        total = images.new_zeros(())
        for x, (mean, var) in zip(inputs, self.targets):
            dims = [d for d in range(x.dim()) if d != 1]          # all but the channels
            total = total + torch.linalg.vector_norm(x.mean(dims) - mean) + \
                torch.linalg.vector_norm(x.var(dims, unbiased=False) - var)
        return total
