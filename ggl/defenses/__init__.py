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

from ggl.contracts import Defense
from ggl.defenses.base import AttackerModel, BaseDefense, Gradients
from ggl.defenses.clipping import Clipping
from ggl.defenses.dpsgd import DPSGD
from ggl.defenses.noise import GaussianNoise, LaplaceNoise, gaussian_nll, laplace_nll
from ggl.defenses.precode import Precode
from ggl.defenses.quantization import Quantization
from ggl.defenses.soteria import Soteria
from ggl.defenses.sparsification import Compression, Pruning
from ggl.errors import GGLError
from ggl.registry import Registry
from ggl.specs import parse_spec

#: name -> defense class (names and aliases case-insensitive)
DEFENSES: Registry[type[BaseDefense]] = Registry("defense", fold_case=True)
for _cls, _aliases in ((GaussianNoise, ("gaussian",)), (LaplaceNoise, ()), (Clipping, ()),
                       (Compression, ("sparsification",)), (Pruning, ()), (Quantization, ()),
                       (Soteria, ("representation",)), (DPSGD, ()), (Precode, ())):
    DEFENSES.add(_cls.name, _cls, _cls.summary, _aliases)

__all__ = ["AttackerModel", "BaseDefense", "DEFENSES", "Defense", "model_chain",
           "parse_defenses", "gaussian_nll", "laplace_nll",
           *(c.__name__ for c in DEFENSES.values())]


def parse_defense(spec: str, d_param: float | None = None) -> BaseDefense:
    """``"NAME[:PARAM][,KEY=VALUE...]"`` -> a defense object."""
    parsed = parse_spec(spec, "--defense")
    cls = DEFENSES.choose(parsed.name.lower(), f" in --defense {spec!r} (written "
                                               f"NAME[:PARAM][,KEY=VALUE...])")
    param = None
    if parsed.arg is not None:
        try:
            param = float(parsed.arg)
        except ValueError:
            raise GGLError(f"--defense {spec!r}: the parameter after ':' ({cls.param_name}) "
                           f"must be a number, got {parsed.arg!r}") from None
        if d_param is not None:
            raise GGLError(f"--defense {spec!r} already names its parameter; drop --d_param")
    elif d_param is not None:
        param = d_param
    options = {}
    for key, value in parsed.options.items():
        if key not in cls.options:
            raise GGLError(f"--defense {spec!r}: " + cls._unknown_options_message([key]))
        parser = cls.options[key][0]
        try:
            options[key] = parser(value)
        except ValueError:
            raise GGLError(f"--defense {spec!r}: {key}= takes a {parser.__name__}, got "
                           f"{value!r}") from None
    return cls(param, **options)


def parse_defenses(specs: Sequence[str], d_param: float | None = None) -> list[BaseDefense]:
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
