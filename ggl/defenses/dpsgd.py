"""DP-SGD (Abadi et al. 2016) through Opacus: per-example clipping and Gaussian noise.

The client recomputes its update from its data: Opacus's ``GradSampleModule`` gives the
per-example gradients and its ``DPOptimizer`` clips each to L2 norm C, sums them, adds
``N(0, (noise_multiplier * C)^2)`` per entry and divides by the batch size B. A FedAvg
client (``--protocol fedavg``) runs every one of its local steps that way
(:meth:`DPSGD.local_update`) and shares ``w0 - wE``.
"""
from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F

from ggl.defenses.base import BaseDefense, check_non_negative
from ggl.defenses.clipping import Clipping
from ggl.defenses.noise import noise_model
from ggl.errors import GGLError


def _device_generator(device: torch.device, generator: torch.Generator | None
                      ) -> torch.Generator | None:
    """Opacus draws on the parameters' device: seed a generator there from the CPU one."""
    if generator is None:
        return None
    seed = int(torch.randint(2 ** 62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


class DPSGD(BaseDefense):
    """DP-SGD's update: noise multiplier sigma (the parameter) and clipping bound C.

    Attacker side: for B = 1 the update is the clipped gradient plus noise of std
    ``sigma * C``: clipping (C known) and the Gaussian likelihood are modelled. For B > 1
    per-example clipping cannot be applied to a batch's trial gradient, so only the noise
    (std ``sigma * C / B``) is modelled.
    """

    name = "dpsgd"
    param_name = "noise_multiplier"
    default_param = 1.0
    summary = "DP-SGD via Opacus: per-example clip to C (clip=), noise multiplier sigma"
    options = {"clip": (float, 1.0, "per-example L2 bound C (Opacus max_grad_norm)")}
    deterministic = False
    replaces_gradient = True

    def check(self):
        check_non_negative(self.name, "the noise multiplier", self.param)
        if not self.clip > 0:
            raise GGLError(f"dpsgd: clip (the per-example bound C) must be > 0, got {self.clip:g}")

    def _private(self, model):
        """An Opacus ``GradSampleModule`` of a copy of ``model`` and its parameters."""
        from opacus import GradSampleModule

        try:
            private = GradSampleModule(copy.deepcopy(model), loss_reduction="mean")
        except Exception as error:      # Opacus refuses layers without per-example gradients
            raise GGLError(f"dpsgd needs per-example gradients, which Opacus cannot compute "
                           f"for this model ({error}); BatchNorm mixes the examples of a "
                           f"batch: use a model without it (lenet, mlp)") from None
        # Opacus records activations only in training mode; layers with parameters behave
        # the same in both modes, so only they switch (dropout keeps the client's mode)
        for module in private.modules():
            if any(True for _ in module.parameters(recurse=False)):
                module.training = True
        parameters = [p for p in private.parameters() if p.requires_grad]
        if len(parameters) != len(list(model.parameters())):
            raise GGLError("dpsgd: the model has frozen parameters; every parameter must "
                           "take part in the update")
        return private, parameters

    def _optimizer(self, sgd: torch.optim.Optimizer, batch_size: int, device, context):
        from opacus.optimizers import DPOptimizer

        return DPOptimizer(sgd, noise_multiplier=self.param, max_grad_norm=self.clip,
                           expected_batch_size=batch_size, loss_reduction="mean",
                           generator=_device_generator(device, context.get("generator")))

    def apply(self, gradient, context):
        model, images, labels = context["model"], context["images"], context["labels"]
        private, parameters = self._private(model)
        optimizer = self._optimizer(torch.optim.SGD(parameters, lr=0.0), len(labels),
                                    images.device, context)
        optimizer.zero_grad()
        with warnings.catch_warnings():       # Opacus's hooks fire without input gradients
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            F.cross_entropy(private(images), labels).backward()
        optimizer.pre_step()                           # clip, sum, add noise, divide by B
        return [p.grad.detach().clone() for p in parameters]

    def local_update(self, model, images, labels, training, order, context):
        """A FedAvg client's local training with DP-SGD: every step of ``order`` is an
        Opacus ``DPOptimizer`` step (per-example clip to C, noise of std sigma x C, divided
        by the step's batch size) around ``torch.optim.SGD`` with the client's lr, momentum
        and weight decay. Returns ``w0 - wE``, one tensor per parameter."""
        private, parameters = self._private(model)
        start = [p.detach().clone() for p in parameters]
        sgd = torch.optim.SGD(parameters, lr=training.lr, momentum=training.momentum,
                              weight_decay=training.weight_decay)
        optimizer = self._optimizer(sgd, len(order[0]), images.device, context)
        for batch in order:
            index = torch.as_tensor(list(batch), device=images.device)
            # the mean over this step's batch, as the plain client's (an epoch's last
            # batch may be smaller than B; Opacus would divide by B)
            optimizer.expected_batch_size = len(index)
            optimizer.zero_grad()
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                F.cross_entropy(private(images[index]), labels[index]).backward()
            optimizer.step()
        return [w0 - p.detach() for w0, p in zip(start, parameters)]

    def attacker_model(self, observed, known=True, batch_size=1):
        noise = noise_model("gaussian", self.param * self.clip / batch_size, observed, known)
        if batch_size == 1:
            clipping = Clipping(self.clip).attacker_model(observed, known=True)
            noise.transform = clipping.transform
            noise.facts.update(clipping.facts)
        return noise
