"""What every defense is: a client-side transform of the update and its attacker-side model.

A defense has two faces:

* ``apply(gradient, context) -> gradient``: what the client does to its update before
  sharing it. It works on a copy: the client's own gradient is never modified.
* ``attacker_model(observed, known, batch_size)``: the adaptive attacker's model of it
  (``--adaptive``):
  a differentiable map of trial gradients (each ``(P, *param_shape)``), the layers it drops
  from the loss, and for noise the likelihood that replaces the gradient distance.
  ``known`` says whether the attacker knows the defense's parameters (``--defense-known``)
  or estimates them from the received gradient (``--defense-estimated``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar, Sequence

import torch

from ggl.contracts import Gradients
from ggl.errors import GGLError

Transform = Callable[[Gradients], Gradients]
#: ``(trial, target, weights (L,)) -> (P,)``, the signature of ``ggl.objective.DISTANCES``
Distance = Callable[[Gradients, Gradients, torch.Tensor], torch.Tensor]


@dataclass
class AttackerModel:
    """The attacker's model of one defense (or of a chain, see ``ggl.defenses.model_chain``).

    Attributes:
        transform: applied to trial gradients before they are compared (``None``: identity).
        dropped_layers: parameter indices left out of the loss.
        likelihood: the negative log-likelihood of the received gradient given a trial one,
            replacing the gradient distance (noise defenses); ``None`` keeps the attack's.
        likelihood_name: how the likelihood is named in records, e.g. ``gaussian(0.1)``.
        facts: what was modelled and with which (known or estimated) parameters.
    """

    transform: Transform | None = None
    dropped_layers: tuple[int, ...] = ()
    likelihood: Distance | None = None
    likelihood_name: str | None = None
    facts: dict = field(default_factory=dict)


class BaseDefense:
    """Base class. Subclasses set ``name``, ``param_name``, ``default_param`` and
    ``options`` (``key -> (parser, default, help)`` for ``NAME:PARAM,key=value``) and
    implement ``apply``; ``attacker_model`` defaults to "nothing to model"."""

    name: ClassVar[str]
    param_name: ClassVar[str]
    default_param: ClassVar[float]
    summary: ClassVar[str]
    options: ClassVar[dict[str, tuple[Callable[[str], object], object, str]]] = {}
    #: whether ``apply`` is a function of the gradient alone (no random draw)
    deterministic: ClassVar[bool] = True
    #: whether ``apply`` computes the update from the data itself (must come first in a
    #: chain); such a defense also has ``local_update`` for a FedAvg client's local steps
    replaces_gradient: ClassVar[bool] = False
    #: whether the defense changes the victim itself (``wrap_model``; PRECODE)
    wraps_model: ClassVar[bool] = False

    def __init__(self, param: float | None = None, **options):
        self.param = float(self.default_param if param is None else param)
        unknown = set(options) - set(self.options)
        if unknown:
            raise GGLError(self._unknown_options_message(unknown))
        for key, (_, default, _) in self.options.items():
            setattr(self, key, options.get(key, default))
        self.check()

    @classmethod
    def _unknown_options_message(cls, unknown) -> str:
        valid = ", ".join(f"{k}= ({h})" for k, (_, _, h) in cls.options.items()) or "none"
        return (f"defense {cls.name!r} has no option(s) {', '.join(sorted(unknown))}; "
                f"its options: {valid}")

    def check(self) -> None:
        """Raise ``GGLError`` when the parameters are outside what the defense accepts."""

    def __repr__(self) -> str:
        extra = "".join(f",{k}={getattr(self, k)}" for k, (_, default, _) in self.options.items()
                        if getattr(self, k) != default)
        return f"{self.name}:{self.param:g}{extra}"

    def describe(self) -> dict:
        """The canonical form runs record: ``{"spec": "pruning:50,noise=0.1", "name",
        "param", "options": {key: value, ...}}`` (aliases resolved, every option given)."""
        return {"spec": repr(self), "name": self.name, "param": self.param,
                "options": {key: getattr(self, key) for key in self.options}}

    def apply(self, gradient: Sequence[torch.Tensor], context: dict) -> list[torch.Tensor]:
        """A defended copy of ``gradient`` (one tensor per parameter)."""
        raise NotImplementedError

    def attacker_model(self, observed: Sequence[torch.Tensor], known: bool = True,
                       batch_size: int = 1) -> AttackerModel:
        return AttackerModel()

    def wrap_model(self, model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
        """Model extensions (PRECODE) change the victim itself, seeded by ``seed``; the
        others leave it as it is. Called once when the victim is built."""
        return model


def draw(shape: torch.Size, like: torch.Tensor, generator: torch.Generator | None,
         kind: str = "normal") -> torch.Tensor:
    """Random numbers drawn on the CPU by ``generator`` and moved to ``like``'s device, so a
    seed gives the same defense on every device. ``kind``: ``normal`` or ``uniform``."""
    values = (torch.randn if kind == "normal" else torch.rand)(shape, generator=generator,
                                                                dtype=torch.float64)
    return values.to(device=like.device, dtype=like.dtype)


def flat_magnitudes(gradient: Sequence[torch.Tensor]) -> torch.Tensor:
    """``|g|`` of every entry of every tensor, as one vector."""
    return torch.cat([g.detach().abs().flatten() for g in gradient])


def percentile(values: torch.Tensor, percent: float) -> torch.Tensor:
    """``numpy.percentile(values, percent)`` (linear interpolation), for any tensor size."""
    flat = values.flatten()
    if flat.numel() <= 16_000_000:            # torch.quantile's input limit
        return torch.quantile(flat, percent / 100)
    position = (flat.numel() - 1) * percent / 100
    low = int(position)
    lower = flat.kthvalue(low + 1).values
    upper = flat.kthvalue(min(low + 2, flat.numel())).values
    return lower + (upper - lower) * (position - low)


def check_percent(name: str, p: float) -> None:
    if not 0 <= p < 100:
        raise GGLError(f"{name}: p must be in [0, 100) (a percentage of entries), got {p:g}")


def check_non_negative(name: str, what: str, value: float) -> None:
    if not value >= 0:       # also rejects NaN
        raise GGLError(f"{name}: {what} must be >= 0, got {value:g}")
