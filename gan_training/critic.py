"""The WGAN-GP critic: strided convolutions, no normalization (the gradient penalty needs none)."""
from __future__ import annotations

import torch
from torch import nn

from ggl.generators.wgan_gp import WGANConfig


class Critic(nn.Module):
    """Images ``(N, C, R, R)`` [+ ``labels (N,)``] -> scores ``(N,)``.

    ``log2(R / 4)`` convolutions (kernel 3, stride 2, LeakyReLU 0.2) widen ``width`` ->
    ``width * 2**(n-1)`` channels down to 4x4, then a linear layer scores (GGL's 32x32 critic:
    three convolutions). A conditional critic adds the projection term
    ``<embed(label), features>`` (Miyato & Koyama, 2018) and a class head on the same
    features (:meth:`classify`, the auxiliary classifier of AC-GAN, Odena et al. 2017): the
    critic learns the classes from real images and the generator is trained to draw images
    it classifies as the class asked for.
    """

    def __init__(self, config: WGANConfig):
        super().__init__()
        layers, channels_in, channels = [], config.channels, config.width
        for _ in range(config.upsamplings):
            layers += [nn.Conv2d(channels_in, channels, 3, stride=2, padding=1),
                       nn.LeakyReLU(0.2, inplace=True)]
            channels_in, channels = channels, channels * 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        feature_dim = channels_in * 16
        self.score = nn.Linear(feature_dim, 1)
        self.projection = (nn.Embedding(config.num_classes, feature_dim)
                           if config.conditional else None)
        self.classes = (nn.Linear(feature_dim, config.num_classes)
                        if config.conditional else None)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.score_and_classify(images, labels)[0]

    def score_and_classify(self, images: torch.Tensor, labels: torch.Tensor | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(scores (N,), class logits (N, K) or None for an unconditional critic)``."""
        features = self.features(images)
        scores = self.score(features).squeeze(1)
        if self.projection is None:
            return scores, None
        scores = scores + (self.projection(labels) * features).sum(1)
        return scores, self.classes(features)


def gradient_penalty(critic: Critic, real: torch.Tensor, fake: torch.Tensor,
                     epsilon: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``(||grad_x critic(x)||_2 - 1)**2`` at ``x = eps * real + (1 - eps) * fake``.

    Args:
        real, fake: ``(N, C, R, R)``; epsilon: ``(N,)`` uniform in [0, 1].
    """
    eps = epsilon.view(-1, 1, 1, 1)
    mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
    scores = critic(mixed, labels)
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
