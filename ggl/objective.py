"""Gradient matching: how far a candidate's gradient is from the shared one.

A ``GradientMatching`` objective scores a batch of P candidates at once:
``images (P, B, C, H, W)`` (+ labels) ``-> losses (P,)``, differentiable w.r.t. the images
(and soft labels). Each candidate's trial gradient is the FedSGD gradient the client would
have sent had its batch been the candidate; the loss is a distance between trial and shared
gradient, summed over layers with layer weights, plus image priors (total variation).

Trial gradients are computed either one candidate at a time with autograd (``"loop"``) or
for the whole population at once with ``torch.func`` (``"vmap"``); both give the same numbers.
"""
from __future__ import annotations

import math
import typing
from typing import Callable, Literal, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ggl.allocator import MMAP_THRESHOLD_MAX
from ggl.contracts import Gradients
from ggl.errors import GGLError
from ggl.registry import Registry


#: how trial gradients are computed: one candidate at a time, batched, or chosen per call
EvaluationPath = Literal["auto", "loop", "vmap"]
#: on a GPU, the vmap path keeps per-candidate gradients within this fraction of free memory
GPU_MEMORY_FRACTION = 0.25
#: on the CPU, the vmap path keeps per-candidate gradients within this many bytes
CPU_VMAP_BYTES = 2 * 1024 ** 3
#: on the CPU, the vmap path keeps each per-chunk gradient tensor within this many bytes:
#: glibc's largest mmap threshold, below which freed blocks stay in the heap for reuse
#: (see ggl.allocator)
HEAP_BLOCK_BYTES = MMAP_THRESHOLD_MAX


# ---------------------------------------------------------------- distances (P, L) -> per layer
# A distance takes trial gradients (one (P, *shape) tensor per parameter), the target (one
# (*shape) tensor each) and layer weights (L,), and returns (P,) losses. The trial gradients
# of a population are large (P x the model's size), so no distance makes a temporary of that
# size: cosine and layer-cosine reduce with matrix-vector products and norms, and l2 and l1
# have an ``overwriting`` twin that works in the trial gradients' own memory, which
# GradientMatching uses when they are its scratch (no graph through them).
def _per_layer(trial: Gradients, fn) -> torch.Tensor:
    """Stack ``fn(l, trial_l)`` (each ``(P,)``) into ``(P, L)``."""
    return torch.stack([fn(l, t) for l, t in enumerate(trial)], dim=1)


def _dot(t: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``<t_p, g>`` for each candidate: ``t (P, *shape)``, ``g (*shape)`` -> ``(P,)``."""
    return torch.mv(t.flatten(1), g.flatten())


def _norm(t: torch.Tensor) -> torch.Tensor:
    """``||t_p||`` for each candidate: ``(P, *shape)`` -> ``(P,)``."""
    return torch.linalg.vector_norm(t.flatten(1), dim=1)


def squared_l2(trial: Gradients, target: Gradients, weights: torch.Tensor) -> torch.Tensor:
    """``sum_l w_l ||g~_l - g_l||^2``: DLG with unit weights, GGL with weights 1/L."""
    per_layer = _per_layer(trial, lambda l, t: (t - target[l]).pow(2).flatten(1).sum(1))
    return per_layer @ weights


def _squared_l2_overwriting(trial: Gradients, target: Gradients,
                            weights: torch.Tensor) -> torch.Tensor:
    """:func:`squared_l2`, computed in (and overwriting) the trial gradients' memory."""
    per_layer = _per_layer(trial, lambda l, t: t.sub_(target[l]).square_().flatten(1).sum(1))
    return per_layer @ weights


def l1(trial: Gradients, target: Gradients, weights: torch.Tensor) -> torch.Tensor:
    """``sum_l w_l ||g~_l - g_l||_1``."""
    per_layer = _per_layer(trial, lambda l, t: (t - target[l]).abs().flatten(1).sum(1))
    return per_layer @ weights


def _l1_overwriting(trial: Gradients, target: Gradients, weights: torch.Tensor) -> torch.Tensor:
    """:func:`l1`, computed in (and overwriting) the trial gradients' memory."""
    per_layer = _per_layer(trial, lambda l, t: t.sub_(target[l]).abs_().flatten(1).sum(1))
    return per_layer @ weights


squared_l2.overwriting = _squared_l2_overwriting
l1.overwriting = _l1_overwriting


def cosine(trial: Gradients, target: Gradients, weights: torch.Tensor) -> torch.Tensor:
    """Inverting Gradients' global form: ``1 - <g~, g>_w / (||g~||_w ||g||_w)`` over all layers."""
    dot = _per_layer(trial, lambda l, t: _dot(t, target[l])) @ weights
    trial_sq = _per_layer(trial, lambda l, t: _norm(t).square()) @ weights
    target_sq = torch.stack([g.pow(2).sum() for g in target]) @ weights
    return 1 - dot / (trial_sq.sqrt() * target_sq.sqrt()).clamp_min(1e-12)


def layer_cosine(trial: Gradients, target: Gradients, weights: torch.Tensor) -> torch.Tensor:
    """``sum_l w_l (1 - cos(g~_l, g_l))``: every layer's direction counts on its own."""
    per_layer = _per_layer(trial, lambda l, t: 1 - _dot(t, target[l]) / (
        _norm(t) * target[l].norm()).clamp_min(1e-12))
    return per_layer @ weights


#: name -> distance(trial, target, layer_weights (L,)) -> (P,)
DISTANCES: Registry[Callable[[Gradients, Gradients, torch.Tensor], torch.Tensor]] = \
    Registry("distance")
DISTANCES.add("l2", squared_l2, "squared L2 per layer, weighted (DLG, GGL)")
DISTANCES.add("l1", l1, "L1 per layer, weighted")
DISTANCES.add("cosine", cosine, "1 - cosine similarity over all layers (Inverting Gradients)")
DISTANCES.add("layer-cosine", layer_cosine, "1 - cosine similarity of each layer, weighted")


# ---------------------------------------------------------------- layer weights
def _mean_weights(num_layers: int) -> torch.Tensor:
    return torch.ones(num_layers) / num_layers


def _sum_weights(num_layers: int) -> torch.Tensor:
    return torch.ones(num_layers)


def _exponential_weights(num_layers: int) -> torch.Tensor:
    weights = torch.ones(num_layers)
    for i in range(min(20, math.ceil(num_layers / 3))):
        weights[3 * i:3 * i + 3] /= 2 ** i
    return weights / num_layers


def _pair_exponential_weights(num_layers: int) -> torch.Tensor:
    return torch.exp(-(torch.arange(num_layers) // 2).float())


#: name -> weights(num_layers) -> (L,), in ``model.parameters()`` order
LAYER_WEIGHTS: Registry[Callable[[int], torch.Tensor]] = Registry("layer weights",
                                                                  "layer weights")
LAYER_WEIGHTS.add("mean", _mean_weights, "1/L each (GGL's mean over layers)")
LAYER_WEIGHTS.add("sum", _sum_weights, "1 each (DLG's plain sum)")
LAYER_WEIGHTS.add("exponential", _exponential_weights,
                  "GGL's ImageNet weights: w[3i:3i+3] /= 2**i for i < 20, then 1/L")
LAYER_WEIGHTS.add("pair-exponential", _pair_exponential_weights,
                  "exp(-k) for the k-th (weight, bias) pair from the input (DLF's)")


def layer_weights(scheme: str, num_layers: int) -> torch.Tensor:
    """Weights ``(L,)`` of the parameter tensors by ``scheme`` (see ``LAYER_WEIGHTS``)."""
    return LAYER_WEIGHTS.choose(scheme)(num_layers)


_layer_weights = layer_weights       # GradientMatching's argument of that name shadows it


# ---------------------------------------------------------------- priors
def total_variation(images: torch.Tensor) -> torch.Tensor:
    """IG's anisotropic TV per candidate: ``mean|dx| + mean|dy|`` over ``(B, C, H, W)``.

    Args:
        images: ``(P, B, C, H, W)``. Returns: ``(P,)``.
    """
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().flatten(1).mean(1)
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().flatten(1).mean(1)
    return dx + dy


# ---------------------------------------------------------------- trial gradients
def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy; ``labels`` are class indices ``(B,)`` or probabilities ``(B, K)``."""
    if labels.is_floating_point():
        return -(labels * F.log_softmax(logits, dim=-1)).sum(-1).mean()
    return F.cross_entropy(logits, labels)


def vmappable(model: nn.Module) -> bool:
    """False when a module updates buffers in the forward pass (train-mode BatchNorm)."""
    return not any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
                   for m in model.modules())


class GradientMatching:
    """Score candidates by how well their trial gradients match the shared gradient.

    Args:
        model: the victim (the Observation's copy); its mode is left as it is.
        target: the shared gradient, one tensor per parameter.
        distance: a name in ``DISTANCES``, or a function of that signature (the
            likelihood an adaptive attacker uses against noise, see ``ggl.defenses``).
        layer_weights: ``"mean"``, ``"sum"`` or ``"exponential"`` (see ``layer_weights``).
        tv: weight of the total-variation prior.
        path: ``"loop"``, ``"vmap"`` or ``"auto"`` (vmap for P > 1 when the model allows it).
        chunk_size: candidates whose trial gradients are held at once (``None``: as many
            as fit in memory, see ``_auto_chunk``); the loss is reduced chunk by chunk, so
            memory does not grow with P (TuRBO scores 256 initial points in one call).
        trial_transform: optional attacker-side model of a defense, applied to the trial
            gradients (each ``(P, *shape)``) before the distance.
        dropped_layers: parameter indices left out of the loss (weight 0).

    Call it with ``images (P, B, C, H, W)`` and ``labels`` either ``(B,)`` shared by all
    candidates, ``(P, B)`` class indices or ``(P, B, K)`` class probabilities; it returns
    ``(P,)`` losses and counts ``P`` evaluations in ``self.evaluations``.
    """

    def __init__(self, model: nn.Module, target: Sequence[torch.Tensor], *,
                 distance: str = "l2", layer_weights: str = "mean", tv: float = 0.0,
                 path: str = "auto", chunk_size: int | None = None,
                 trial_transform: Callable[[Gradients], Gradients] | None = None,
                 dropped_layers: Sequence[int] = ()):
        if path not in typing.get_args(EvaluationPath):     # a caller of the library itself
            raise GGLError(f"unknown evaluation path {path!r}; valid: "
                           f"{', '.join(typing.get_args(EvaluationPath))}")
        self.model = model
        self.params = [p for p in model.parameters()]
        self.target = [g.detach() for g in target]
        if len(self.target) != len(self.params) or any(
                g.shape != p.shape for g, p in zip(self.target, self.params)):
            raise GGLError("the shared gradient does not match the model's parameters "
                           f"({len(self.target)} tensors for {len(self.params)} parameters)")
        if callable(distance):
            self.distance_name = getattr(distance, "__name__", "custom")
            self.distance = distance
        else:
            self.distance_name = distance
            self.distance = DISTANCES.choose(distance)
        self.weights = _layer_weights(layer_weights, len(self.params)).to(
            self.target[0].device, self.target[0].dtype)
        if dropped_layers:
            if len(set(dropped_layers)) >= len(self.params):
                raise GGLError("every layer of the gradient would be dropped from the loss")
            self.weights[list(dropped_layers)] = 0
        self.tv = tv
        self.path = path
        if path == "vmap" and not vmappable(model):
            raise GGLError("the vmap path cannot run this model (train-mode BatchNorm "
                           "updates its buffers); use path 'loop' or 'auto'")
        self.parameter_count = sum(p.numel() for p in self.params)
        self.chunk_size = chunk_size
        self.trial_transform = trial_transform
        self.evaluations = 0

    # -- trial gradients -------------------------------------------------------------
    @staticmethod
    def _labels_for(labels: torch.Tensor, num_candidates: int) -> torch.Tensor:
        # (B,) indices or (B, K) probabilities are shared by all candidates; a float 2-D
        # tensor is always (B, K), also when P == B (per-candidate ones are (P, B, K))
        if labels.dim() == 1 or (labels.dim() == 2 and labels.is_floating_point()):
            return labels.unsqueeze(0).expand(num_candidates, *labels.shape)
        return labels

    def choose_path(self, num_candidates: int) -> str:
        """``auto``: vmap for a population (P > 1) of a vmappable model, else the loop.

        Measured on the 2-core CPU (experiments/README.md), scoring 50 candidates without a
        graph: vmap is 4.9x faster than the loop for LeNet and 1.2-1.6x for ResNet-18."""
        if self.path != "auto":
            return self.path
        return "vmap" if num_candidates > 1 and vmappable(self.model) else "loop"

    def trial_gradients(self, images: torch.Tensor, labels: torch.Tensor) -> Gradients:
        """Per-candidate FedSGD gradients, a list of ``(P, *param_shape)`` tensors.

        Differentiable w.r.t. ``images`` (and float ``labels``).
        """
        if images.dim() != 5:
            raise GGLError(f"candidates must be (P, B, C, H, W), got shape {tuple(images.shape)}")
        num_candidates = images.shape[0]
        labels = self._labels_for(labels, num_candidates)
        if self.choose_path(num_candidates) == "loop":
            # black-box searches score candidates that need no graph through the gradient
            create_graph = images.requires_grad or labels.requires_grad
            with torch.enable_grad():
                per_candidate = [torch.autograd.grad(
                    classification_loss(self.model(images[p]), labels[p]), self.params,
                    create_graph=create_graph) for p in range(num_candidates)]
            if num_candidates == 1:       # a view, not a copy of every gradient (pixel attacks)
                return [g.unsqueeze(0) for g in per_candidate[0]]
            return [torch.stack(layer) for layer in zip(*per_candidate)]
        return self._vmap_gradients(images, labels)

    def _vmap_gradients(self, images: torch.Tensor, labels: torch.Tensor) -> Gradients:
        from torch.func import functional_call, grad, vmap

        names = [n for n, _ in self.model.named_parameters()]
        params = {n: p.detach() for n, p in zip(names, self.params)}
        buffers = dict(self.model.named_buffers())

        def loss(params, x, y):
            return classification_loss(functional_call(self.model, (params, buffers), (x,)), y)

        per_sample = vmap(grad(loss), in_dims=(None, 0, 0), randomness="different")
        gradients = per_sample(params, images, labels)
        return [gradients[n] for n in names]

    def _auto_chunk(self, num_candidates: int) -> int:
        """Candidates per vmap call. On a GPU: as many as fit in ``GPU_MEMORY_FRACTION`` of
        free memory, about 4 gradient-sized buffers each. On the CPU: as many as keep every
        per-chunk gradient tensor within ``HEAP_BLOCK_BYTES``, so the allocator reuses those
        buffers from its heap instead of mapping them afresh and faulting them in page by
        page on every call (ResNet-18, 50 candidates, experiments/README.md: chunk 12 ran
        8.8 evaluations per CPU second with 38% of it in the kernel, chunks 1-4 ran
        12.2-13.8, chunk 3 the fastest), and all of them within ``CPU_VMAP_BYTES``."""
        device = self.target[0].device
        per_candidate = 4 * self.parameter_count * self.target[0].element_size()
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            return max(1, min(num_candidates, int(GPU_MEMORY_FRACTION * free // per_candidate)))
        largest = max(g.numel() for g in self.target) * self.target[0].element_size()
        return max(1, min(num_candidates, HEAP_BLOCK_BYTES // largest,
                          CPU_VMAP_BYTES // per_candidate))

    # -- loss ------------------------------------------------------------------------
    def _distance_of(self, trial: Gradients):
        """The distance to apply to ``trial``: its overwriting twin when ``trial`` is this
        call's scratch (no graph through it, plain contiguous tensors), else the distance."""
        overwriting = getattr(self.distance, "overwriting", None)
        if overwriting is not None and not any(t.requires_grad or not t.is_contiguous()
                                               for t in trial):
            return overwriting
        return self.distance

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self._losses(images, labels, None)[0]

    def split_losses(self, images: torch.Tensor, labels: torch.Tensor,
                     held_out: Gradients) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss on the gradient entries outside ``held_out`` and the distance on those
        inside, from one set of trial gradients (``P`` evaluations, as one call).

        Args:
            held_out: one 0/1 mask per parameter, shaped like it (see :func:`holdout_masks`).
        Returns:
            ``(fit (P,), held-out (P,))``; the TV term is part of ``fit`` only.
        """
        return self._losses(images, labels, held_out)

    def _losses(self, images: torch.Tensor, labels: torch.Tensor,
                held_out: Gradients | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if images.dim() != 5:
            raise GGLError(f"candidates must be (P, B, C, H, W), got shape {tuple(images.shape)}")
        num_candidates = images.shape[0]
        labels = self._labels_for(labels, num_candidates)
        step = self.chunk_size or self._auto_chunk(num_candidates)
        if held_out is not None:
            kept = [1 - m for m in held_out]
            fit_target = [g * m for g, m in zip(self.target, kept)]
            check_target = [g * m for g, m in zip(self.target, held_out)]
        losses, checks = [], []
        for start in range(0, num_candidates, step):
            trial = self.trial_gradients(images[start:start + step], labels[start:start + step])
            if self.trial_transform is not None:
                trial = self.trial_transform(trial)
            if held_out is None:
                losses.append(self._distance_of(trial)(trial, self.target, self.weights))
                continue
            fit = [t * m for t, m in zip(trial, kept)]
            losses.append(self._distance_of(fit)(fit, fit_target, self.weights))
            check = [t * m for t, m in zip(trial, held_out)]
            checks.append(self._distance_of(check)(check, check_target, self.weights))
        loss = torch.cat(losses)
        if self.tv:
            loss = loss + self.tv * total_variation(images)
        self.evaluations += images.shape[0]
        return loss, (torch.cat(checks) if checks else None)


def holdout_masks(target: Sequence[torch.Tensor], fraction: float, seed: int) -> Gradients:
    """0/1 masks choosing ``fraction`` of every parameter tensor's gradient entries at random
    (seeded; drawn on the CPU): the entries a stage holds out of its fit to see whether it
    still matches the gradient where it did not look (it stops improving there when it fits
    noise instead of the image)."""
    generator = torch.Generator().manual_seed(seed)
    return [(torch.rand(g.shape, generator=generator) < fraction).to(g.device, g.dtype)
            for g in target]
