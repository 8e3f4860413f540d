"""The one interface GGL's attack sees: a generative prior that draws images in the victim's
input space.

A :class:`Prior` wraps a GAN generator whose raw output lies in ``[-1, 1]`` (tanh), with its
own channel count and resolution, and maps that output into the victim's input space:

    z (N, latent_dim) [+ labels (N,)] -> generator -> (N, C_g, R_g, R_g) in [-1, 1]
      -> [0, 1] -> channels (gray <-> RGB) -> resize to the victim's (H, W) (area when
      shrinking, bilinear when enlarging) -> normalize with the victim's mean / std
      -> (N, C, H, W)

The ``--generator`` specs that name a prior are in :mod:`ggl.generators` (``GENERATORS``).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ggl.errors import GGLError

class Prior(nn.Module):
    """A generator seen from the victim: latents ``(N, latent_dim)`` -> images ``(N, C, H, W)``.

    Args:
        net: the generator; called as ``net(z)`` or, when ``num_classes`` is set,
            ``net(z, labels)``; returns ``(N, C_g, R_g, R_g)`` in ``[-1, 1]``.
        name: how the prior is reported (e.g. ``"wgan-gp:generators/weights/mnist-wgan-gp"``).
        latent_dim: size of one latent.
        num_classes: ``None`` for an unconditional generator, else its number of classes
            (the attack gives it the inferred labels).
        channels, resolution: the generator's own output shape.
        truncation: when set, ``sample_latent`` draws from a normal truncated to
            ``[-2, 2]`` scaled by it (BigGAN's truncation trick); otherwise ``N(0, I)``.

    Call :meth:`bind` once with the victim's image shape and normalization before use.
    The generator is kept in ``eval()`` mode, so an image depends on its latent alone and
    not on the other candidates of a population.
    """

    def __init__(self, net: nn.Module, *, name: str, latent_dim: int,
                 num_classes: int | None, channels: int, resolution: int,
                 truncation: float | None = None):
        super().__init__()
        self.net = net.eval()
        self.name = name
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        self.channels = channels
        self.resolution = resolution
        self.truncation = truncation
        self.image_shape: tuple[int, int, int] | None = None
        self.register_buffer("mean", torch.zeros(1, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.ones(1, 1, 1, 1), persistent=False)
        for parameter in self.net.parameters():
            parameter.requires_grad_(False)

    @property
    def conditional(self) -> bool:
        return self.num_classes is not None

    def train(self, mode: bool = True) -> "Prior":
        """A prior always stays in eval mode (population-independent samples)."""
        return super().train(False)

    def bind(self, image_shape: tuple[int, int, int], mean, std) -> "Prior":
        """Map outputs to the victim's ``image_shape (C, H, W)`` and normalization."""
        channels = image_shape[0]
        if channels != self.channels and 1 not in (channels, self.channels):
            raise GGLError(f"the prior {self.name} draws {self.channels}-channel images; the "
                           f"victim takes {channels} channels: only 1 <-> C conversions "
                           f"are defined (gray to RGB by repetition, RGB to gray by mean)")
        if len(mean) != channels or len(std) != channels:
            raise GGLError(f"normalization has {len(mean)} means / {len(std)} stds for "
                           f"{channels} channels")
        device = self.mean.device
        self.image_shape = tuple(image_shape)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        return self

    def check_labels(self, num_classes: int) -> None:
        """A conditional prior must draw the victim's classes."""
        if self.conditional and self.num_classes != num_classes:
            raise GGLError(f"the conditional prior {self.name} draws {self.num_classes} "
                           f"classes, the victim predicts {num_classes}: they must agree")

    def sample_latent(self, count: int, generator: torch.Generator | None = None
                      ) -> torch.Tensor:
        """``count`` latents ``(count, latent_dim)`` on the CPU from the prior's distribution."""
        z = torch.randn(count, self.latent_dim, generator=generator)
        if self.truncation is not None:
            while True:                     # resample the entries outside [-2, 2]
                outside = z.abs() > 2
                if not outside.any():
                    break
                z[outside] = torch.randn(int(outside.sum()), generator=generator)
            z = z * self.truncation
        return z

    def raw(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The generator's own output ``(N, C_g, R_g, R_g)`` in [-1, 1]."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise GGLError(f"latents must be (N, {self.latent_dim}), got {tuple(z.shape)}")
        if self.conditional:
            if labels is None:
                raise GGLError(f"the prior {self.name} is class-conditional: give labels")
            return self.net(z, labels)
        return self.net(z)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images ``(N, C, H, W)`` in the victim's normalized input space.

        Args:
            z: ``(N, latent_dim)`` latents on the prior's device.
            labels: ``(N,)`` class indices, required by conditional priors, else ignored.
        """
        return self.to_victim(self.raw(z, labels))

    def to_victim(self, raw: torch.Tensor) -> torch.Tensor:
        """The generator's output ``(N, C_g, R_g, R_g)`` in [-1, 1] -> the victim's normalized
        input space ``(N, C, H, W)`` (also for outputs of a tuned copy of the generator)."""
        if self.image_shape is None:
            raise GGLError(f"the prior {self.name} is not bound to a victim: call bind()")
        images = (raw + 1) / 2                            # [0, 1]
        channels, height, width = self.image_shape
        if images.shape[1] != channels:
            images = (images.mean(1, keepdim=True) if channels == 1
                      else images.expand(-1, channels, -1, -1))
        if images.shape[-2:] != (height, width):
            shrinking = images.shape[-1] > width
            images = (F.interpolate(images, size=(height, width), mode="area") if shrinking
                      else F.interpolate(images, size=(height, width), mode="bilinear",
                                         align_corners=False))
        return (images - self.mean) / self.std


def wgan_gp_prior(path: str | Path) -> Prior:
    """A :class:`Prior` around a ``ggl train-prior`` checkpoint (folder or file)."""
    from ggl.generators.wgan_gp import load_generator

    net = load_generator(path)
    config = net.config
    return Prior(net, name=f"wgan-gp:{path}", latent_dim=config.latent_dim,
                 num_classes=config.num_classes, channels=config.channels,
                 resolution=config.resolution)
