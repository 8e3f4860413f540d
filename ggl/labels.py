"""Label inference from the shared gradient of the classifier head.

For a linear head ``logits = W r + b`` and mean cross-entropy over a batch of B images,

* ``dL/dW_c = (1/B) sum_i (p_ic - y_ic) r_i`` and ``dL/db_c = (1/B) sum_i (p_ic - y_ic)``.

B = 1 (iDLG): ``dL/db_c = p_c - y_c`` is negative only for the true class, so with a bias
``argmin_c dL/db_c`` is exact whatever the features; without one (or when a defense left no
negative bias entry) the weight rows are used: with non-negative features r (after
sigmoid/ReLU) the row of the true class is the only one with a negative sum, so
``argmin_c sum_j dL/dW_cj`` is exact. Features of either sign (after PRECODE's
bottleneck) break the row rule: on private digits 0..39 it was right for 68% (mlp) and 40%
(lenet), the bias rule for all of them.

B > 1 (label-count restoration, "bias-count"): ``n_c = B (mean_i p_ic - dL/db_c)``. The mean
softmax ``mean_i p_ic`` is unknown to the server; it is estimated from the model's output on
the server's public images of the domain (random inputs in the valid pixel box when it has
none, which is markedly less accurate: see experiments/README.md), and the counts are rounded to integers that sum to B
(largest remainder). Without a bias, the weight-row sums are used with the mean feature sum
estimated the same way.
"""
from __future__ import annotations

import copy

import torch

from ggl.contracts import Observation
from ggl.errors import GGLError
from ggl.models import last_linear
from ggl.registry import Registry


def _head_gradients(observation: Observation) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gradient of the classifier head's weight ``(K, D)`` and bias ``(K,)`` (or None)."""
    head = last_linear(observation.model)
    by_param = {id(p): g for p, g in zip(observation.model.parameters(), observation.gradient)}
    if head.weight.shape[0] != observation.num_classes:
        raise GGLError(f"the victim's last linear layer has {head.weight.shape[0]} outputs, "
                       f"not the {observation.num_classes} classes: labels cannot be inferred")
    bias = by_param.get(id(head.bias)) if head.bias is not None else None
    return by_param[id(head.weight)], bias


def idlg_label(observation: Observation) -> torch.Tensor:
    """iDLG for B = 1: ``argmin`` of the head's bias gradient when it has a negative entry,
    else of the row sums of the head's weight gradient. ``(1,)``."""
    weight_grad, bias_grad = _head_gradients(observation)
    if bias_grad is not None and bias_grad.min() < 0:
        return bias_grad.argmin().view(1)
    return weight_grad.sum(dim=1).argmin().view(1)


@torch.no_grad()
def _expected_softmax_and_features(observation: Observation, samples: int, seed: int):
    """Mean softmax ``(K,)`` and mean feature sum of the model on public (or random) inputs."""
    if observation.public_images is not None:
        images = observation.public_images[:samples].to(observation.device)
    else:
        low, high = observation.pixel_bounds()
        generator = torch.Generator().manual_seed(seed)
        noise = torch.rand(samples, *observation.image_shape, generator=generator)
        images = low + noise.to(observation.device) * (high - low)
    # a train-mode model would update its BatchNorm buffers: probe a copy instead
    model = copy.deepcopy(observation.model) if observation.model.training else observation.model
    features = []
    hook = last_linear(model).register_forward_hook(
        lambda module, inputs, output: features.append(inputs[0]))
    try:
        probabilities = model(images).softmax(dim=-1).mean(0)
    finally:
        hook.remove()
    return probabilities, features[0].flatten(1).sum(1).mean()


def count_labels(observation: Observation, samples: int = 64, seed: int = 0) -> torch.Tensor:
    """Label-count restoration for B >= 1 ("bias-count"): sorted labels ``(B,)``."""
    batch = observation.batch_size
    weight_grad, bias_grad = _head_gradients(observation)
    probabilities, feature_sum = _expected_softmax_and_features(observation, samples, seed)
    if bias_grad is not None:
        estimate = batch * (probabilities - bias_grad)
    else:
        estimate = batch * (probabilities - weight_grad.sum(dim=1) / feature_sum)
    estimate = estimate.clamp_min(0).double().cpu()
    if estimate.sum() > 0:
        estimate = estimate * batch / estimate.sum()
    counts = estimate.floor().long()
    remainder = estimate - counts
    for c in remainder.argsort(descending=True)[: batch - int(counts.sum())]:
        counts[c] += 1
    return torch.repeat_interleave(torch.arange(len(counts)), counts).to(observation.device)


#: name -> inference(observation) -> labels (B,)
LABEL_METHODS: Registry = Registry("label method")
LABEL_METHODS.add("idlg", idlg_label, "B = 1: the head's bias gradient (iDLG), else its "
                                      "weight rows")
LABEL_METHODS.add("bias-count", count_labels, "B >= 1: label counts from the head's bias "
                                              "gradient and the public images' mean softmax")


def label_method(observation: Observation) -> str:
    """How an attack gets its labels: ``known``, else iDLG (B = 1) or counts (B > 1)."""
    if observation.labels is not None:
        return "known"
    return "idlg" if observation.batch_size == 1 else "bias-count"


def infer_labels(observation: Observation) -> torch.Tensor:
    """The labels an attack uses: the known ones if granted, else iDLG (B = 1) or counts."""
    method = label_method(observation)
    if method == "known":
        return observation.labels
    return LABEL_METHODS[method](observation)
