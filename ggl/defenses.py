"""Client-side defenses and each one's attacker-side model.

A defense has two faces:

* ``apply(gradient, context) -> gradient``: what the client does to its update before
  sharing it. It works on a copy: the client's own gradient is never modified.
* ``attacker_model(observed) -> transform``: the adaptive attacker's model of the defense, a
  differentiable map applied to trial gradients (each ``(P, *param_shape)``) so that they
  are compared with the shared gradient on equal terms (``--adaptive``).

Defenses are named on the command line as ``--defense NAME[:PARAM]`` (repeatable; a chain
applies in the order given) with ``--d_param X`` for a single defense given without
``:PARAM``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from ggl.errors import GGLError

Gradients = list[torch.Tensor]
Transform = Callable[[Gradients], Gradients]


def _percentile_threshold(values: torch.Tensor, percent: float) -> torch.Tensor:
    """``numpy.percentile(values, percent)`` (linear interpolation), for any tensor size."""
    flat = values.flatten()
    if flat.numel() <= 16_000_000:            # torch.quantile's input limit
        return torch.quantile(flat, percent / 100)
    position = (flat.numel() - 1) * percent / 100
    low = int(position)
    lower = flat.kthvalue(low + 1).values
    upper = flat.kthvalue(min(low + 2, flat.numel())).values
    return lower + (upper - lower) * (position - low)


class Compression:
    """GGL's gradient sparsification: per parameter tensor, zero every entry whose magnitude
    is below the ``p``-th percentile of that tensor's magnitudes (``p`` in percent).

    Attacker side: the received zero pattern is the mask, applied to trial gradients by
    multiplication, so the modelled defense stays differentiable (GGL's own adaptive
    version recomputed percentiles in numpy, which is not).
    """

    name = "compression"
    default_param = 20.0          # GGL's command-line default; the paper's tables use 90

    def __init__(self, p: float = default_param):
        if not 0 <= p < 100:
            raise GGLError(f"compression keeps the entries above the p-th percentile: p must "
                           f"be in [0, 100), got {p}")
        self.p = float(p)

    def __repr__(self) -> str:
        return f"compression:{self.p:g}"

    def apply(self, gradient: Sequence[torch.Tensor], context: dict | None = None
              ) -> list[torch.Tensor]:
        defended = []
        for g in gradient:
            magnitude = g.abs()
            threshold = _percentile_threshold(magnitude, self.p)
            defended.append(torch.where(magnitude < threshold, torch.zeros_like(g), g))
        return defended

    def attacker_model(self, observed: Sequence[torch.Tensor]) -> Transform:
        masks = [(g != 0).to(g.dtype) for g in observed]
        return lambda trial: [t * m for t, m in zip(trial, masks)]


#: name -> defense class
DEFENSES: dict[str, type] = {"compression": Compression}


def parse_defenses(specs: Sequence[str], d_param: float | None = None) -> list:
    """``["compression:90", ...]`` (+ ``--d_param`` for one bare name) -> defense objects."""
    if d_param is not None and len(specs) != 1:
        raise GGLError("--d_param sets the parameter of a single --defense; for a chain "
                       "write each as NAME:PARAM, e.g. --defense compression:90")
    defenses = []
    for spec in specs:
        name, _, text = spec.partition(":")
        if name not in DEFENSES:
            raise GGLError(f"unknown defense {name!r}; valid defenses: {', '.join(sorted(DEFENSES))}"
                           f" (written NAME or NAME:PARAM)")
        if text:
            try:
                param = float(text)
            except ValueError:
                raise GGLError(f"--defense {spec!r}: the parameter after ':' must be a "
                               f"number") from None
            if d_param is not None:
                raise GGLError(f"--defense {spec!r} already names its parameter; drop --d_param")
        else:
            param = DEFENSES[name].default_param if d_param is None else d_param
        defenses.append(DEFENSES[name](param))
    return defenses


def attacker_transform(defenses: Sequence, observed: Sequence[torch.Tensor]) -> Transform | None:
    """The chain of the defenses' attacker-side models, in the order the client applied them."""
    models = [d.attacker_model(observed) for d in defenses]
    if not models:
        return None

    def transform(trial: Gradients) -> Gradients:
        for model in models:
            trial = model(trial)
        return trial

    return transform
