"""Latent-space optimizers for GGL, behind one interface (:mod:`ggl.optimizers.base`).

``--ng_method`` names the method:

* ``adam``: gradient descent in latent space (:mod:`ggl.optimizers.adam`);
* ``BO`` or ``turbo``: TuRBO-1 on BoTorch (:mod:`ggl.optimizers.turbo`);
* any name of nevergrad's registry (``CMA``, ``DiagonalCMA``, ``TwoPointsDE``, ``PSO``,
  ...): :mod:`ggl.optimizers.nevergrad_search`.
"""
from __future__ import annotations

import difflib

from ggl.errors import GGLError
from ggl.optimizers.adam import AdamSearch
from ggl.optimizers.base import LatentOptimizer, SearchResult
from ggl.optimizers.turbo import TuRBO

#: ggl's own methods (nevergrad's registry names come on top)
OWN_METHODS = {"adam": AdamSearch, "BO": TuRBO, "turbo": TuRBO}
#: nevergrad methods shown first in messages
POPULAR_NEVERGRAD = ("CMA", "DiagonalCMA", "TwoPointsDE", "PSO", "NGOpt", "OnePlusOne")


def method_names() -> list[str]:
    """Every accepted ``--ng_method``: ggl's own, then nevergrad's registry."""
    from ggl.optimizers.nevergrad_search import registry

    return [*OWN_METHODS, *sorted(registry())]


def build_optimizer(method: str, *, population: int | None = None, seed: int = 0,
                    bounds: float | None = None, **options) -> LatentOptimizer:
    """The optimizer for ``--ng_method method`` (``population=None``: the method's default)."""
    sized = {} if population is None else {"population": population}
    if method in OWN_METHODS:
        return OWN_METHODS[method](seed=seed, bounds=bounds, **sized, **options)
    from ggl.optimizers.nevergrad_search import NevergradSearch, registry

    if method in registry():
        return NevergradSearch(method, seed=seed, bounds=bounds, **sized, **options)
    names = method_names()
    nevergrad_count = len([n for n in names if n not in OWN_METHODS])
    close = difflib.get_close_matches(method, names, n=5)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise GGLError(f"unknown --ng_method {method!r}{hint}. Valid: {', '.join(OWN_METHODS)}, or "
                   f"any of nevergrad's {nevergrad_count} other optimizers, e.g. "
                   f"{', '.join(POPULAR_NEVERGRAD)} (all listed by `ggl list`)")


__all__ = ["LatentOptimizer", "SearchResult", "build_optimizer", "method_names"]
