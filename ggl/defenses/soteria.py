"""Soteria (Sun et al. CVPR 2021), GGL's "representation" defense.

The client perturbs the representation r fed to the last fully connected layer (the head):
for each feature f it scores how much the input moves r_f,
``s_f = sum_b ||d r_bf / d x_b|| / (|r_bf| + 1e-10)``, and zeros the head's weight-gradient
columns of the ``p`` percent of features with the lowest score (features that reveal the
input at little cost to r).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ggl.defenses.base import AttackerModel, BaseDefense, check_percent, percentile
from ggl.errors import GGLError
from ggl.models import last_linear

MODELS = ("mask", "drop")
#: features whose input-gradients are computed in one batched backward pass
FEATURE_CHUNK = 64


def head_layer(model: nn.Module) -> tuple[nn.Linear, int]:
    """The last ``nn.Linear`` of ``model`` and the index of its weight in ``parameters()``."""
    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        raise GGLError("soteria perturbs the input of the model's last fully connected layer, "
                       "but this model has no nn.Linear")
    head = last_linear(model)
    index = next(i for i, p in enumerate(model.parameters()) if p is head.weight)
    return head, index


def feature_scores(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Soteria's per-feature score ``(F,)`` of the head's input for the batch ``(B, C, H, W)``."""
    head, _ = head_layer(model)
    captured = {}
    hook = head.register_forward_hook(lambda module, inputs, output:
                                      captured.__setitem__("r", inputs[0]))
    x = images.detach().clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            model(x)
    finally:
        hook.remove()
    r = captured["r"]                                      # (B, F)
    num_features = r.shape[1]
    norms = []
    for start in range(0, num_features, FEATURE_CHUNK):
        stop = min(start + FEATURE_CHUNK, num_features)
        # one-hot cotangents: row j selects feature start + j of every image in the batch
        cotangents = torch.zeros(stop - start, *r.shape, dtype=r.dtype, device=r.device)
        cotangents[torch.arange(stop - start), :, torch.arange(start, stop)] = 1
        (dx,) = torch.autograd.grad(r, x, cotangents, retain_graph=True, is_grads_batched=True)
        norms.append(dx.flatten(2).norm(dim=2))           # (chunk, B)
    norms = torch.cat(norms).T                             # (B, F)
    return (norms / (r.detach().abs() + 1e-10)).sum(0)


class Soteria(BaseDefense):
    """Zero the head's weight-gradient columns of the p% least-scored features (GGL: CLI
    default 10, paper 80). Attacker side: ``model=mask`` multiplies trial gradients of that
    layer by the received column pattern (GGL's adaptive attack); ``model=drop`` leaves the
    layer out of the loss (the Bayes paper's break)."""

    name = "soteria"
    param_name = "p"
    default_param = 10.0
    summary = "zero the head's weight-gradient columns of the p% least input-sensitive features"
    options = {"model": (str, "mask", "attacker side: mask or drop the defended layer")}

    def check(self):
        check_percent(self.name, self.param)
        if self.model not in MODELS:
            raise GGLError(f"soteria: model must be one of {', '.join(MODELS)}, got "
                           f"{self.model!r}")

    def columns_to_zero(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Boolean ``(F,)``: the features whose columns the client zeros."""
        scores = feature_scores(model, images)
        return scores < percentile(scores, self.param)

    def apply(self, gradient, context):
        model, images = context["model"], context["images"]
        _, index = head_layer(model)
        zero = self.columns_to_zero(model, images)
        defended = [g.clone() for g in gradient]
        defended[index][:, zero] = 0
        return defended

    def attacker_model(self, observed, known=True, batch_size=1):
        index = _defended_index(observed)
        if self.model == "drop":
            return AttackerModel(dropped_layers=(index,), facts={"soteria": "layer dropped",
                                                                 "layer": index})
        columns = (observed[index] != 0).any(dim=0).to(observed[index].dtype)

        def transform(trial):
            trial = list(trial)
            trial[index] = trial[index] * columns
            return trial

        return AttackerModel(transform=transform,
                             facts={"soteria": "received column mask", "layer": index,
                                    "zeroed_columns": int((columns == 0).sum())})


def _defended_index(observed) -> int:
    """The head's weight gradient: the last 2-D tensor of the update (the attacker knows the
    architecture; the last Linear's weight is the last matrix in ``parameters()``)."""
    return max(i for i, g in enumerate(observed) if g.dim() == 2)
