"""GRNN: Generative Regression Neural Network (Ren, Deng, Xie, ACM TIST 2022).

A generator is trained from scratch for each attack, with no public data and no pretrained
prior: from one fixed noise vector per image it produces the fake images (an image branch,
a small DCGAN-like upsampling generator) and the fake soft labels (a label branch: a linear
layer and a softmax), and its weights are optimized so that the victim's gradient of
(fake images, fake soft labels) matches the shared one. The recovered labels are the
argmax of the label branch.

Facts from the paper's code (github.com/Rand2AI/GRNN: ``GRNN.py``, ``Generator/model.py``,
``utils.py``, ``WassersteinDistance/wd.py``), which ggl follows:

* noise: ``z ~ N(0, 1)`` of size 128 per image, drawn once and kept fixed;
* label branch: ``softmax(Linear(128, K)(z))``;
* image branch: ``ConvTranspose2d(128, 2 * 4d, 4)`` + GLU to 4x4, then
  ``log2(R) - 3`` blocks of (nearest x2 upsampling, 3x3 conv without bias, BatchNorm
  (train mode: batch statistics), GLU) halving the channels from 4d down to d, d = 32, and a
  last such block to the image's channels, then a sigmoid: images in ``[0, 1]``;
* loss: ``||g~ - g||^2 + ||g~ - g|| + tv * TV2(x)`` over the whole flattened gradient.
  The paper calls its second term a Wasserstein distance; its code computes the Euclidean
  norm of the gradient difference (``wd.py``: ``(sum |a - b|^2)^(1/2)``). ``TV2`` is the
  squared-difference total variation ``2 (mean dx^2 + mean dy^2)`` of the ``[0, 1]`` images
  (``utils.TVLoss``), weighted 1e-3 for LeNet (1e-6 for ResNet-18);
* soft-label cross-entropy ``-mean_i sum_k y_ik log softmax(f(x_i))_k``;
* RMSprop, lr 1e-4, momentum 0.99, 1,000 iterations;
* init: the script calls ``weight_init(0, 0.02)``, but that walks only the generator's
  top-level containers (none a conv or linear layer), so in effect every layer keeps
  PyTorch's default init; ggl draws that same default from the run's seed.

ggl's adaptations: images are produced in ``[0, 1]`` and mapped into the victim's
normalized space (``(x - mean) / std``: always inside ``observation.pixel_bounds()``), the
last block outputs ``C`` channels of ``Observation.image_shape`` (MNIST is ``1x32x32``;
the paper's MNIST was grayscale copied to RGB), an image whose side is not a power of two
(or not square) is generated at the next power of two and resized (bilinear,
antialiased); the lowest-loss iterate is returned (the paper returns the last); known
labels (``--known-labels``) replace the label branch, and ``labels="inferred"`` replaces
it with ggl's label inference (an ablation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ggl.attacks.base import Attack, Progress, Reconstruction
from ggl.attacks.pixel import LossLog, Snapshots, _check_common
from ggl.contracts import Gradients, Observation
from ggl.errors import GGLError
from ggl.labels import infer_labels
from ggl.objective import DISTANCES, LAYER_WEIGHTS, squared_l2


# --------------------------------------------------------------------------- the generator
def _up_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """GRNN's ``upBlock``: ``(N, in, s, s) -> (N, out, 2s, 2s)``."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(in_channels, 2 * out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(2 * out_channels),
        nn.GLU(dim=1))


class GRNNGenerator(nn.Module):
    """The two-branch generator of GRNN.

    Args:
        noise_dim: size of the noise vector of one image (the paper's ``g_in``, 128).
        num_classes: K, the label branch's outputs.
        channels: C, the image branch's output channels.
        side: the side of the square images it generates, a power of two >= 8.
        width: d, the channels of the last hidden block (32); the first has ``d * side / 8``.

    ``forward(noise (B, noise_dim)) -> (images (B, C, side, side) in [0, 1], soft labels
    (B, K))``. Its BatchNorm layers stay in train mode (batch statistics), as in the paper.
    """

    def __init__(self, noise_dim: int, num_classes: int, channels: int, side: int,
                 width: int = 32):
        super().__init__()
        blocks = int(math.log2(side)) - 3
        if side < 8 or 2 ** (blocks + 3) != side:
            raise GGLError(f"the GRNN generator needs a power-of-two side >= 8, got {side}")
        self.label_branch = nn.Linear(noise_dim, num_classes)
        top = width * 2 ** blocks
        self.stem = nn.Sequential(                      # (B, noise_dim, 1, 1) -> (B, top, 4, 4)
            nn.ConvTranspose2d(noise_dim, 2 * top, kernel_size=4, stride=1, padding=0),
            nn.GLU(dim=1))
        self.blocks = nn.Sequential(*[
            _up_block(width * 2 ** (b + 1), width * 2 ** b) for b in reversed(range(blocks))])
        self.out = _up_block(width, channels)

    def forward(self, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        soft_labels = self.label_branch(noise).softmax(dim=-1)
        hidden = self.stem(noise.view(*noise.shape, 1, 1))
        images = torch.sigmoid(self.out(self.blocks(hidden)))
        return images, soft_labels

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """PyTorch's default init (what the paper's generator trains from), drawn from
        ``generator`` (CPU): weights and biases of convs and linear layers from
        ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, BatchNorm scale 1 and shift 0."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                fan_in, _ = nn.init._calculate_fan_in_and_fan_out(module.weight)
                bound = 1 / math.sqrt(fan_in)
                for tensor in (module.weight, module.bias):
                    if tensor is not None:
                        tensor.copy_((torch.rand(tensor.shape, generator=generator) * 2 - 1)
                                     * bound)
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()


def generated_side(height: int, width: int) -> int:
    """The side the generator draws at: the smallest power of two >= 8 covering the image."""
    return max(8, 2 ** math.ceil(math.log2(max(height, width))))


def squared_total_variation(images01: torch.Tensor) -> torch.Tensor:
    """GRNN's TV: ``2 (mean dy^2 + mean dx^2)`` over ``(B, C, H, W)`` in ``[0, 1]``
    (the mean is over the differences of all B images). Returns a scalar."""
    dy = (images01[..., 1:, :] - images01[..., :-1, :]).pow(2).mean()
    dx = (images01[..., :, 1:] - images01[..., :, :-1]).pow(2).mean()
    return 2 * (dy + dx)


def with_norm(distance, weight: float):
    """``distance(trial, target, w) + weight * sqrt(sum_l w_l ||g~_l - g_l||^2)``: GRNN's
    "Wasserstein" term, the Euclidean norm of the (layer-weighted) gradient difference.

    Returns a distance of :data:`ggl.objective.DISTANCES`' signature (``(P,)`` losses)."""
    if weight == 0:
        return distance

    def distance_plus_norm(trial: Gradients, target: Gradients,
                           weights: torch.Tensor) -> torch.Tensor:
        # sqrt'(0) is infinite: an exact match (only reachable on a noiseless toy) stays finite
        norm = squared_l2(trial, target, weights).clamp_min(1e-30).sqrt()
        return distance(trial, target, weights) + weight * norm

    return distance_plus_norm


# --------------------------------------------------------------------------- the attack
@dataclass
class GRNNOptions:
    """GRNN's defaults (the paper's code, LeNet): 1,000 RMSprop iterations at lr 1e-4 with
    momentum 0.99; loss ``||g~ - g||^2 + 1 * ||g~ - g|| + 1e-3 * TV2`` over the whole
    gradient (``distance`` "l2", ``layer_weights`` "sum", ``wasserstein`` 1, ``tv`` 1e-3; the
    paper used ``tv`` 1e-6 for ResNet-18); noise of 128 per image, generator width 32.

    ``labels``: ``"branch"`` learns them with the label branch (the paper), ``"inferred"``
    takes ggl's inference from the head's gradient instead (``ggl.labels``); known labels
    (``--known-labels``) are always used as given. ``restarts`` > 1 trains that many
    generators from fresh draws and keeps the one with the lowest loss.
    """

    budget: int = 1000
    lr: float = 1e-4
    momentum: float = 0.99
    tv: float = 1e-3
    wasserstein: float = 1.0
    distance: Annotated[str, DISTANCES] = "l2"
    layer_weights: Annotated[str, LAYER_WEIGHTS] = "sum"
    noise_dim: int = 128
    width: int = 32
    labels: Literal["branch", "inferred"] = "branch"
    restarts: int = 1


class GRNN(Attack):
    """Generative Regression Neural Network: a generator trained from scratch per attack
    produces the images and soft labels whose victim gradient matches the shared one.

    ``budget`` counts RMSprop iterations, each one objective evaluation; the returned
    images are the lowest-loss iterate's, the labels its label branch's argmax.
    """

    name = "grnn"
    summary = ("GRNN: a generator trained from scratch outputs images and soft labels, "
               "L2 + norm + TV (Ren et al. 2022)")
    Options = GRNNOptions
    #: the labels come from the label branch unless the Observation carries them
    learns_labels = True

    def _validate(self):
        super()._validate()
        o = self.options
        _check_common(o)
        if not 0 <= o.momentum < 1:
            raise GGLError(f"momentum must be in [0, 1), got {o.momentum}")
        if not o.wasserstein >= 0:
            raise GGLError(f"wasserstein must be non-negative, got {o.wasserstein}")
        if o.noise_dim < 1:
            raise GGLError(f"noise_dim must be at least 1, got {o.noise_dim}")
        if o.width < 1:
            raise GGLError(f"width must be at least 1, got {o.width}")

    def _reconstruct(self, observation: Observation, progress: Progress) -> Reconstruction:
        o = self.options
        objective = self.matching_objective(
            observation, distance=with_norm(DISTANCES.choose(o.distance), o.wasserstein),
            layer_weights=o.layer_weights, tv=0.0)    # GRNN's own TV is added below
        if observation.labels is not None:
            fixed, label_method = observation.labels, "known"
        elif o.labels == "inferred":
            fixed, label_method = infer_labels(observation), "inferred"
        else:
            fixed, label_method = None, "label branch (softmax, learned jointly)"
        channels, height, width = observation.image_shape
        side = generated_side(height, width)
        mean = torch.tensor(observation.mean, device=observation.device).view(-1, 1, 1)
        std = torch.tensor(observation.std, device=observation.device).view(-1, 1, 1)
        low, high = observation.pixel_bounds()

        def victim_images(images01: torch.Tensor) -> torch.Tensor:
            """``(B, C, side, side)`` in [0, 1] -> ``(B, C, H, W)`` in the victim's space."""
            if (height, width) != (side, side):
                images01 = F.interpolate(images01, size=(height, width), mode="bilinear",
                                         align_corners=False, antialias=True)
            return torch.max(torch.min((images01 - mean) / std, high), low)

        generator = self.generator()
        history, snapshots, failures, restart_losses = [], Snapshots(o.budget), [], []
        losses_log = LossLog(o.budget, o.restarts, history, failures, progress,
                             note="; kept the best finite iterate")
        best = {"loss": math.inf}
        for restart in range(o.restarts):
            net = GRNNGenerator(o.noise_dim, observation.num_classes, channels, side, o.width)
            net.reset_parameters(generator)
            net.to(observation.device)
            noise = torch.randn(observation.batch_size, o.noise_dim,
                                generator=generator).to(observation.device)
            optimizer = torch.optim.RMSprop(net.parameters(), lr=o.lr, momentum=o.momentum)
            # the lowest-loss iterate, tracked on the device (no read-back per step)
            run_loss = torch.tensor(math.inf, device=observation.device)
            run_images = torch.zeros(observation.batch_size, *observation.image_shape,
                                     device=observation.device)
            run_soft = torch.zeros(observation.batch_size, observation.num_classes,
                                   device=observation.device)
            for iteration in range(o.budget):
                images01, soft_labels = net(noise)
                images = victim_images(images01)
                trial_labels = soft_labels if fixed is None else fixed
                loss = objective(images.unsqueeze(0), trial_labels)[0]
                if o.tv:
                    loss = loss + o.tv * squared_total_variation(images01)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():            # the iterate this loss belongs to
                    better = loss.detach() < run_loss
                    run_loss = torch.where(better, loss.detach(), run_loss)
                    run_images = torch.where(better, images.detach(), run_images)
                    run_soft = torch.where(better, soft_labels.detach(), run_soft)
                snapshots.maybe(iteration, images)
                if losses_log.step(loss, restart, iteration):
                    break
            final = run_loss.item()
            restart_losses.append(final)
            if final < best["loss"]:
                best = {"loss": final, "images": run_images, "soft_labels": run_soft}
        if "images" not in best:
            raise GGLError(f"{self.name} diverged: every iterate had a non-finite loss")
        snapshots.frames.append((o.budget * o.restarts, best["images"].cpu()))
        info = {"label_method": label_method, "final_loss": best["loss"],
                "restart_losses": restart_losses, "failures": failures,
                "generator_parameters": sum(p.numel() for p in net.parameters()),
                "generated_side": side}
        if fixed is None:           # the label branch's argmax, and how sure it is of it
            confidence, labels = best["soft_labels"].max(-1)
            info["label_confidence"] = confidence.tolist()
        else:
            labels = fixed
        return Reconstruction(
            images=best["images"], labels=labels, loss=best["loss"], history=history,
            snapshots=snapshots.frames, evaluations=objective.evaluations,
            iterations=len(history), info=info)
