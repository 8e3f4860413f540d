"""Controls: run variants that show what an attack reports when the update carries nothing.

A latent attack draws clean images from its prior whatever it is given; with the label read
from the gradient it can draw a plausible digit of the right class without any leak (Guo et
al., TPAMI 2025). The *random-gradient control* measures that: the same attack, with the same
labels and the same defense model, is handed noise in place of the shared update. Its PSNR,
judge accuracy and identifiability are what the prior and the labels alone give; the attack's
"leak over control" is what the shared update added.

The control is another Observation (the attack's one rule holds: it never sees the Secret):

* labels: the ones the attack would use on the real update (known, or inferred from the
  real shared gradient), now given as known;
* gradient: per layer, i.i.d. Gaussian noise rescaled to the L2 norm of the received layer,
  with as many zero entries as the received layer has (at random positions), so a sparsified
  update stays as sparse; its draws come from a stream of their own (the run's seed +
  ``CONTROL_SEED_OFFSET``). Nothing else of the private batch reaches it: its directions are
  the same for every private image.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from ggl.contracts import Observation
from ggl.registry import Registry

CONTROL_SEED_OFFSET = 2_000_029


def random_gradient(observation: Observation, seed: int) -> tuple[Observation, dict]:
    """The random-gradient control of ``observation``.

    Returns:
        ``(control observation, facts for the record)``.
    """
    from ggl.labels import infer_labels

    labels = infer_labels(observation)
    generator = torch.Generator().manual_seed(seed + CONTROL_SEED_OFFSET)
    noise = []
    for received in observation.gradient:
        draw = torch.randn(received.shape, generator=generator, dtype=torch.float64)
        zeros = int((received == 0).sum())
        if zeros:
            draw.view(-1)[torch.randperm(draw.numel(), generator=generator)[:zeros]] = 0
        norm = received.double().norm().cpu()
        draw = draw * (norm / draw.norm()) if draw.norm() > 0 else draw
        noise.append(draw.to(received.dtype).to(received.device))
    facts = {"kind": "random-gradient",
             "labels": "known" if observation.labels is not None
             else "inferred from the real shared gradient",
             "gradient": "Gaussian noise per layer at the received layer's L2 norm, with its "
                         "number of zero entries at random positions"}
    weight_update = observation.weight_update
    if weight_update is not None:       # FedAvg: the update the noise stands for, rescaled
        lr = weight_update.training.lr
        weight_update = dataclasses.replace(weight_update, update=tuple(n * lr for n in noise))
    control = dataclasses.replace(observation, gradient=tuple(noise), labels=labels.clone(),
                                  weight_update=weight_update)
    return control, facts


#: ``--control`` name -> ``(observation, seed) -> (observation, facts)``; ``none``: the
#: real update
CONTROLS: Registry[Callable | None] = Registry("control")
CONTROLS.add("none", None, "the shared update itself")
CONTROLS.add("random-gradient", random_gradient,
             "noise at each layer's norm instead of the update, the same labels and "
             "defense: what the prior and the labels alone give")
