"""Closed-form attacks: the input of a linear layer read off its own gradient.

For one example (B = 1) and a linear layer ``y = W x + b`` with any loss L downstream,
``dL/dW = g x^T`` and ``dL/db = g`` with ``g = dL/dy``: every row i with ``g_i != 0`` gives
``x = dW[i] / db[i]`` exactly. This holds whatever comes after the layer, random or not,
so a PRECODE bottleneck behind the model's first linear layer hides nothing from it.

* ``precode-analytic``: recover the input of the model's first ``nn.Linear`` (in forward
  order). When that input is the flattened image (``mlp``) it IS the reconstruction; when
  the layer sits after convolutions (``lenet``, ``resnet18``; with PRECODE it is the
  bottleneck's encoder) the recovered vector is the feature vector there, and the image is
  found by pixel-space Adam that makes the sub-network up to the layer reproduce it.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn as nn

from ggl.attacks.base import Attack, Progress, Reconstruction, step_in_box
from ggl.attacks.pixel import INITS, Snapshots, initial_images, read_back
from ggl.contracts import Observation
from ggl.errors import GGLError
from ggl.labels import infer_labels
from ggl.objective import total_variation


class _Captured(Exception):
    """Raised by the capture hook: the rest of the forward pass is not needed."""


def capture_input(model: nn.Module, layer: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The input of ``layer`` when ``model`` runs on ``images (B, C, H, W)``, as it is fed to
    the layer (differentiable w.r.t. ``images``). The forward stops at the layer."""
    captured = {}

    def hook(module, inputs):
        captured["x"] = inputs[0]
        raise _Captured

    handle = layer.register_forward_pre_hook(hook)
    try:
        model(images)
    except _Captured:
        pass
    finally:
        handle.remove()
    if "x" not in captured:
        raise GGLError("the model's forward pass never reached its first nn.Linear")
    return captured["x"]


def feature_distance(reached: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``||reached - target||^2 / ||target||^2`` of two feature vectors ``(F,)``: squared L2
    relative to the target's size, so one ``tv`` weight suits features of any scale."""
    return (reached - target).pow(2).sum() / target.pow(2).sum().clamp_min(1e-12)


def first_linear(model: nn.Module, probe: torch.Tensor, reader: str = "precode-analytic"
                 ) -> nn.Linear:
    """The first ``nn.Linear`` that ``model``'s forward pass calls on ``probe (1, C, H, W)``
    (``reader``: the attack that reads it, for the error message)."""
    called = []
    handles = [m.register_forward_pre_hook(lambda module, inputs: called.append(module))
               for m in model.modules() if isinstance(m, nn.Linear)]
    if not handles:
        raise GGLError(f"{reader} reads the model's first nn.Linear, and this model has "
                       f"none: use a model with a fully connected layer (mlp, convfc)")
    try:
        with torch.no_grad():
            model(probe)
    finally:
        for handle in handles:
            handle.remove()
    if not called:
        raise GGLError("the model's forward pass calls none of its nn.Linear layers")
    return called[0]


def solve_layer_input(weight_grad: torch.Tensor, bias_grad: torch.Tensor,
                      row_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The input ``x (in,)`` of a linear layer from ``dW (out, in)`` and ``db (out,)``, B = 1.

    Every row i gives ``x = dW[i] / db[i]``; rows with ``|db[i]| >= row_fraction * max|db|``
    are averaged with weights ``|db[i]|``, which is ``sum_i sign(db_i) dW[i] / sum_i |db_i|``:
    rows with tiny ``db`` would divide rounding error by a tiny number. Computed in float64.

    Returns:
        ``x (in,)`` in the gradient's dtype, and the indices of the rows used ``(R,)``.
    """
    dW, db = weight_grad.double(), bias_grad.double()
    magnitude = db.abs()
    largest = magnitude.max()
    if not largest > 0:
        raise GGLError("every entry of the first linear layer's bias gradient is zero: "
                       "there is no row to divide by, the closed form cannot recover its input")
    rows = (magnitude >= row_fraction * largest).nonzero().flatten()
    x = (db[rows].sign().unsqueeze(1) * dW[rows]).sum(0) / magnitude[rows].sum()
    return x.to(weight_grad.dtype), rows


@dataclass
class PrecodeAnalyticOptions:
    """``row_fraction``: rows of the first layer whose ``|db|`` is at least this fraction of
    the largest are averaged. When that layer does not read the image itself: ``budget`` Adam
    steps from ``init`` (``rand``: uniform in the pixel box, ``randn``, ``zeros``) with lr
    ``lr`` annealed by a cosine schedule, on ``feature_distance`` plus ``tv`` x total
    variation.

    The TV prior decides the result: LeNet's 768 features do not determine its 1024 pixels,
    and matching them with little TV (relative error ~1e-3) left 15-17 dB. Measured on the
    PRECODE LeNet, offline MNIST digits 3, 0, 7, 2000 steps from mid-gray (about 8 s each
    on the CPU): tv 3e-5 -> 15-17 dB, 1e-4 -> 32-36, 3e-4 -> 39-45 (the same from ``rand``),
    1e-3 -> 32-38. From mid-gray a bias-free ResNet-18 starts at features 0 behind dead
    ReLUs and never moves, hence ``rand``.
    """

    budget: int = 2000
    lr: float = 0.1
    tv: float = 3e-4
    init: Annotated[str, INITS] = "rand"
    row_fraction: float = 1e-3


class PrecodeAnalytic(Attack):
    """Analytic attack on PRECODE: the first linear layer's input in closed form (B = 1).

    It ignores ``adaptive``: it is adaptive by construction (the closed form holds for any
    layers after the first linear one, PRECODE's sampled bottleneck included), and it does
    not model defenses of the update (noise, clipping, ...): it reads the update as sent.

    Labels come from ``ggl.labels.infer_labels``. Its iDLG rule for B = 1 assumes that the
    head's input is non-negative, which PRECODE's decoder output is not: over private
    digits 0-39 it named the right label for 68% (mlp) and 40% (lenet) of them, while
    ``argmin`` of the head's bias gradient was right for all.
    """

    name = "precode-analytic"
    needs_defense = "precode"
    summary = "closed-form input of the first linear layer, then feature inversion (B = 1)"
    Options = PrecodeAnalyticOptions

    def _validate(self):
        super()._validate()
        o = self.options
        if not o.lr > 0:
            raise GGLError(f"--lr must be positive, got {o.lr}")
        if not o.tv >= 0:
            raise GGLError(f"--tv must be non-negative, got {o.tv}")
        if not 0 < o.row_fraction <= 1:
            raise GGLError(f"row_fraction must be in (0, 1], got {o.row_fraction}")

    def _reconstruct(self, observation: Observation, progress: Progress) -> Reconstruction:
        if observation.batch_size != 1:
            raise GGLError(f"precode-analytic needs batch size 1, got {observation.batch_size}: "
                           f"the closed form x = dW[i] / db[i] separates one image per bias "
                           f"entry only for B = 1 (a batch's gradient mixes the inputs)")
        # a copy: a train-mode model would update its BatchNorm buffers in every pass
        model = copy.deepcopy(observation.model).requires_grad_(False)
        layer, weight_index, bias_index = linear_layer(model, observation, self.name)
        features, rows = solve_layer_input(observation.gradient[weight_index],
                                           observation.gradient[bias_index],
                                           self.options.row_fraction)
        labels = infer_labels(observation)
        low, high = observation.pixel_bounds()
        if reads_image(model, layer, observation, self.generator()):
            images = torch.max(torch.min(features.view(1, *observation.image_shape), high), low)
            history, snapshots, case = [], [], "image"
            progress(1, 1, 0.0)
        else:
            o = self.options
            images, history, snapshots = invert_features(
                model, layer, features[None], observation, init=o.init, lr=o.lr, tv=o.tv,
                steps=o.budget, generator=self.generator(), progress=progress)
            case = "features + optimization"
        with torch.no_grad():
            loss = feature_distance(capture_input(model, layer, images).flatten(),
                                    features).item()
        snapshots.append((len(history), images.detach().cpu().clone()))
        return Reconstruction(
            images=images.detach(), labels=labels, loss=loss, history=history,
            snapshots=snapshots, evaluations=len(history), iterations=len(history),
            info={"case": case, "layer": {"weight": weight_index, "bias": bias_index,
                                          "in_features": layer.in_features},
                  "rows_used": len(rows), "rows": rows.tolist(),
                  "feature_loss": loss,
                  "label_method": "known" if observation.labels is not None else "inferred",
                  "adaptive": "ignored: the closed form needs no model of the defense"})


def invert_features(model: nn.Module, layer: nn.Module, features: torch.Tensor,
                    observation: Observation, *, init: str, lr: float, tv: float, steps: int,
                    generator: torch.Generator, progress: Progress):
    """Pixel-space Adam (lr cosine-annealed over ``steps``, pixels boxed) so that each
    image's input to ``layer`` becomes its row of ``features (B, F)``: the loss is the
    summed relative feature distance plus ``tv`` x the images' summed total variation.

    Returns ``images (B, C, H, W)``, the summed feature distance of every step and GIF
    snapshots.
    """
    low, high = observation.pixel_bounds()
    images = initial_images(observation, init, generator)
    images = torch.max(torch.min(images, high), low).requires_grad_(True)
    optimizer = torch.optim.Adam([images], lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    history, snapshots, pending = [], Snapshots(steps), []
    for step in range(steps):
        reached = capture_input(model, layer, images).flatten(1)                 # (B, F)
        distance = sum(feature_distance(r, t) for r, t in zip(reached, features))
        loss = distance + tv * total_variation(images.unsqueeze(1)).sum()
        step_in_box(loss, optimizer, scheduler, images, low, high)
        pending.append(distance.detach())
        snapshots.maybe(step, images)
        if read_back(pending, history, step + 1 == steps):
            progress(step + 1, steps, history[-1])
    return images.detach(), history, snapshots.frames


def linear_layer(model: nn.Module, observation: Observation, reader: str
                 ) -> tuple[nn.Linear, int, int]:
    """The model's first linear layer and the indices of its weight and bias in
    ``parameters()``, checked for what a closed-form reading of its input needs: a bias,
    and one input vector per image (``reader``: the attack, for the error messages)."""
    probe = torch.zeros(1, *observation.image_shape, device=observation.device)
    layer = first_linear(model, probe, reader)
    if layer.bias is None:
        raise GGLError(f"{reader} divides the first linear layer's weight gradient by its "
                       f"bias gradient, but that layer has no bias")
    with torch.no_grad():
        vectors = capture_input(model, layer, probe).numel() // layer.in_features
    if vectors != 1:
        raise GGLError(f"the model's first linear layer is applied to {vectors} vectors per "
                       f"image; {reader} recovers its input only when it sees exactly one")
    index = {id(p): i for i, p in enumerate(model.parameters())}
    return layer, index[id(layer.weight)], index[id(layer.bias)]


def reads_image(model: nn.Module, layer: nn.Linear, observation: Observation,
                generator: torch.Generator) -> bool:
    """Whether ``layer``'s input is the flattened image itself (only ``nn.Flatten`` between
    input and layer), checked on a random probe drawn by ``generator``."""
    if layer.in_features != math.prod(observation.image_shape):
        return False
    low, high = observation.pixel_bounds()
    noise = torch.rand(1, *observation.image_shape, generator=generator)
    probe = low + noise.to(observation.device) * (high - low)
    with torch.no_grad():
        reached = capture_input(model, layer, probe)
    return torch.equal(reached.flatten(), probe.flatten())
