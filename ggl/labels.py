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

FedAvg updates over S local steps ("update-count", Dimitrov et al. 2022's interpolated
restoration): ``update / lr`` sums the S steps' mean-batch gradients, so its bias part is
``sum_s (mean_{i in s} p^(s)_ic - share of class c in batch s)``. With every batch holding
class c in its overall share ``f_c``, ``f_c = mean_s p^(s)_c - (update / lr)_c / S``; the
softmax along the unobserved trajectory is interpolated linearly between the model the
server sent (``w0``) and the one the client returned (``w0 - update``), each probed on the
public images, and ``n_c = N f_c`` is rounded as above.
"""
from __future__ import annotations

import copy
import dataclasses

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


def _round_counts(estimate: torch.Tensor, total: int) -> torch.Tensor:
    """Non-negative counts ``(K,)`` summing to ``total`` from real estimates ``(K,)``:
    scaled to the total, floored, the remainder to the largest fractional parts (a
    non-finite estimate, from a diverged update, counts as 0)."""
    estimate = torch.nan_to_num(estimate.double().cpu(), nan=0.0, posinf=0.0,
                                neginf=0.0).clamp_min(0)
    if not estimate.sum() > 0:            # nothing to go by: the classes alike
        estimate = torch.ones_like(estimate)
    estimate = estimate * total / estimate.sum()
    counts = estimate.floor().long()
    remainder = estimate - counts
    for c in remainder.argsort(descending=True)[: total - int(counts.sum())]:
        counts[c] += 1
    return counts


def _class_shares(weight_grad: torch.Tensor, bias_grad: torch.Tensor | None, probabilities: torch.Tensor,
                  feature_sum: torch.Tensor, steps: int) -> torch.Tensor:
    """Each class's share of the images ``(K,)`` from the head's gradient summed over
    ``steps`` mean-batch steps, the mean softmax and the mean feature sum."""
    if bias_grad is not None:
        return probabilities - bias_grad / steps
    return probabilities - weight_grad.sum(dim=1) / feature_sum / steps


def count_labels(observation: Observation, samples: int = 64, seed: int = 0) -> torch.Tensor:
    """Label-count restoration for B >= 1 ("bias-count"): sorted labels ``(B,)``."""
    batch = observation.batch_size
    weight_grad, bias_grad = _head_gradients(observation)
    probabilities, feature_sum = _expected_softmax_and_features(observation, samples, seed)
    shares = _class_shares(weight_grad, bias_grad, probabilities, feature_sum, 1)
    counts = _round_counts(batch * shares, batch)
    return torch.repeat_interleave(torch.arange(len(counts)), counts).to(observation.device)


def count_labels_over_steps(observation: Observation, samples: int = 64,
                            seed: int = 0) -> torch.Tensor:
    """Label counts from a FedAvg update over several local steps ("update-count"):
    sorted labels ``(N,)``; see the module docstring."""
    shared = observation.weight_update
    steps = shared.training.num_steps(shared.images)
    weight_grad, bias_grad = _head_gradients(observation)        # update / lr
    start_p, start_f = _expected_softmax_and_features(observation, samples, seed)
    end_model = copy.deepcopy(observation.model)
    with torch.no_grad():
        for p, u in zip(end_model.parameters(), shared.update):
            p.sub_(u)
    end_p, end_f = _expected_softmax_and_features(
        dataclasses.replace(observation, model=end_model), samples, seed)
    # step s of S sees the weights a fraction s / S of the way: their mean is (S - 1) / 2S
    along = (steps - 1) / (2 * steps)
    probabilities = (1 - along) * start_p + along * end_p
    feature_sum = (1 - along) * start_f + along * end_f
    shares = _class_shares(weight_grad, bias_grad, probabilities, feature_sum,
                           steps)
    counts = _round_counts(shared.images * shares, shared.images)
    return torch.repeat_interleave(torch.arange(len(counts)), counts).to(observation.device)


#: name -> inference(observation) -> labels (B,)
LABEL_METHODS: Registry = Registry("label method")
LABEL_METHODS.add("idlg", idlg_label, "B = 1: the head's bias gradient (iDLG), else its "
                                      "weight rows")
LABEL_METHODS.add("bias-count", count_labels, "B >= 1: label counts from the head's bias "
                                              "gradient and the public images' mean softmax")
LABEL_METHODS.add("update-count", count_labels_over_steps,
                  "FedAvg, N > 1: label counts from the update over its S local steps, the "
                  "softmax interpolated between the sent and the returned model (DLF)")


def label_method(observation: Observation) -> str:
    """How an attack gets its labels: ``known``, else iDLG (B = 1: its sign rule holds for
    a sum of steps too) or counts (B > 1: over the local steps of a FedAvg update)."""
    if observation.labels is not None:
        return "known"
    if observation.batch_size == 1:
        return "idlg"
    return "bias-count" if observation.weight_update is None else "update-count"


def infer_labels(observation: Observation) -> torch.Tensor:
    """The labels an attack uses: the known ones if granted, else iDLG (B = 1) or counts."""
    method = label_method(observation)
    if method == "known":
        return observation.labels
    return LABEL_METHODS[method](observation)
