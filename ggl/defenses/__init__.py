"""Client-side defenses and the adaptive attacker's model of each (see ``base``).

Defenses are named on the command line as ``--defense NAME[:PARAM][,KEY=VALUE...]``
(repeatable; a chain applies in the order given), with ``--d_param X`` for the parameter of
a single defense given without ``:PARAM``. Examples: ``noise:0.1``, ``clipping:4``,
``compression:90``, ``pruning:50,noise=0.1``, ``quantization:4,rounding=stochastic``,
``soteria:80,model=drop``, ``dpsgd:1.0,clip=1.0``, ``precode``.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ggl.defenses.base import AttackerModel, Defense, Gradients
from ggl.defenses.clipping import Clipping
from ggl.defenses.dpsgd import DPSGD
from ggl.defenses.noise import GaussianNoise, LaplaceNoise, gaussian_nll, laplace_nll
from ggl.defenses.precode import Precode
from ggl.defenses.quantization import Quantization
from ggl.defenses.soteria import Soteria
from ggl.defenses.sparsification import Compression, Pruning
from ggl.errors import GGLError

#: name -> defense class
DEFENSES: dict[str, type[Defense]] = {cls.name: cls for cls in (
    GaussianNoise, LaplaceNoise, Clipping, Compression, Pruning, Quantization, Soteria, DPSGD,
    Precode)}
#: other names accepted on the command line
ALIASES = {"representation": "soteria", "gaussian": "noise", "sparsification": "compression"}

__all__ = ["AttackerModel", "DEFENSES", "Defense", "model_chain", "parse_defenses",
           "gaussian_nll", "laplace_nll", *(c.__name__ for c in DEFENSES.values())]


def _valid_names() -> str:
    aliases = ", ".join(f"{a} (= {n})" for a, n in ALIASES.items())
    return f"{', '.join(DEFENSES)}; aliases {aliases}"


def parse_defense(spec: str, d_param: float | None = None) -> Defense:
    """``"NAME[:PARAM][,KEY=VALUE...]"`` -> a defense object."""
    head, *pairs = spec.strip().split(",")
    name, colon, text = head.partition(":")
    name = ALIASES.get(name.strip().lower(), name.strip().lower())
    if name not in DEFENSES:
        raise GGLError(f"unknown defense {name!r} in --defense {spec!r}; valid defenses: "
                       f"{_valid_names()} (written NAME[:PARAM][,KEY=VALUE...])")
    cls = DEFENSES[name]
    param = None
    if colon:
        try:
            param = float(text)
        except ValueError:
            raise GGLError(f"--defense {spec!r}: the parameter after ':' ({cls.param_name}) "
                           f"must be a number, got {text!r}") from None
        if d_param is not None:
            raise GGLError(f"--defense {spec!r} already names its parameter; drop --d_param")
    elif d_param is not None:
        param = d_param
    options = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        key = key.strip()
        if key not in cls.options:
            raise GGLError(f"--defense {spec!r}: " + cls._unknown_options_message([key]))
        if not equals:
            raise GGLError(f"--defense {spec!r}: {pair!r} is not KEY=VALUE; write {key}=VALUE")
        parser = cls.options[key][0]
        try:
            options[key] = parser(value.strip())
        except ValueError:
            raise GGLError(f"--defense {spec!r}: {key}= takes a {parser.__name__}, got "
                           f"{value!r}") from None
    return cls(param, **options)


def parse_defenses(specs: Sequence[str], d_param: float | None = None) -> list[Defense]:
    """``["clipping:4", "noise:0.01"]`` (+ ``--d_param`` for one bare name) -> a chain."""
    if d_param is not None and len(specs) != 1:
        raise GGLError("--d_param sets the parameter of a single --defense; for a chain "
                       "write each as NAME:PARAM, e.g. --defense clipping:4 --defense noise:0.01")
    chain = [parse_defense(spec, d_param) for spec in specs]
    for position, defense in enumerate(chain):
        if defense.replaces_gradient and position > 0:
            raise GGLError(f"{defense.name} computes the update from the data itself, so it "
                           f"must be the first --defense of a chain")
    return chain


def model_chain(defenses: Sequence[Defense], observed: Sequence[torch.Tensor], *,
                known: bool = True, batch_size: int = 1) -> AttackerModel | None:
    """The attacker's model of a chain, in the order the client applied it: transforms
    composed, dropped layers united; the likelihood of the last noise in the chain.

    Estimated parameters (``known=False``) are read off the received gradient: exact for a
    single defense, approximate for earlier defenses of a chain (e.g. a clipping bound
    estimated after compression sees the compressed norm)."""
    models = [d.attacker_model(observed, known=known, batch_size=batch_size) for d in defenses]
    if not models:
        return None
    transforms = [m.transform for m in models if m.transform is not None]
    likelihoods = [m for m in models if m.likelihood is not None]

    def transform(trial: Gradients) -> Gradients:
        for step in transforms:
            trial = step(trial)
        return trial

    return AttackerModel(
        transform=transform if transforms else None,
        dropped_layers=tuple(sorted({i for m in models for i in m.dropped_layers})),
        likelihood=likelihoods[-1].likelihood if likelihoods else None,
        likelihood_name=likelihoods[-1].likelihood_name if likelihoods else None,
        facts={repr(d): m.facts for d, m in zip(defenses, models)})
