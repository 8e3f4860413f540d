"""Latent-space optimizers for GGL, behind one interface (:mod:`ggl.optimizers.base`).

``--ng_method`` names the method:

* ``adam``: gradient descent in latent space (:mod:`ggl.optimizers.adam`);
* ``BO`` or ``turbo``: TuRBO-1 on BoTorch (:mod:`ggl.optimizers.turbo`);
* ``CMA``: CMA-ES on pycma, a whole population per ask/tell
  (:mod:`ggl.optimizers.pycma_search`); ``ng-CMA`` is nevergrad's CMA, for comparison;
* any other name of nevergrad's registry (``DiagonalCMA``, ``TwoPointsDE``, ``PSO``,
  ...): :mod:`ggl.optimizers.nevergrad_search`.
"""
from __future__ import annotations

from functools import partial

from ggl.optimizers.adam import AdamSearch
from ggl.optimizers.base import LatentOptimizer, SearchResult
from ggl.optimizers.nevergrad_search import NevergradSearch
from ggl.optimizers.pycma_search import PyCMASearch
from ggl.optimizers.turbo import TuRBO
from ggl.registry import Entry, Registry


def _nevergrad_entries() -> dict[str, Entry]:
    """Every optimizer of nevergrad's registry (imported on first need: ~1 s)."""
    from ggl.optimizers.nevergrad_search import NevergradSearch, registry

    return {name: Entry(name, partial(NevergradSearch, name), f"nevergrad's {name}")
            for name in sorted(registry())}


#: ``--ng_method`` name -> optimizer class (``factory(seed=, bounds=, population=, ...)``):
#: ggl's own, then nevergrad's registry
OPTIMIZERS: Registry[type[LatentOptimizer]] = Registry(
    "--ng_method", "latent optimizers", more=_nevergrad_entries,
    featured=("adam", "BO", "CMA", "DiagonalCMA", "TwoPointsDE", "PSO", "NGOpt", "OnePlusOne"))
OPTIMIZERS.add("adam", AdamSearch, "Adam in latent space, cosine lr ramp")
OPTIMIZERS.add("BO", TuRBO, "TuRBO-1 on BoTorch", aliases=("turbo",))
OPTIMIZERS.add("CMA", PyCMASearch, "CMA-ES on pycma, one ask/tell per population")
# what ``CMA`` was before pycma, kept for comparison
OPTIMIZERS.add("ng-CMA", partial(NevergradSearch, "CMA"),
               "nevergrad's CMA, one candidate per ask/tell")


def build_optimizer(method: str, *, population: int | None = None, seed: int = 0,
                    bounds: float | None = None, **settings) -> LatentOptimizer:
    """The optimizer for ``--ng_method method`` (``population=None``: the method's default);
    of ``settings`` (e.g. an attack's ``lr``) it gets those its class lists in
    ``LatentOptimizer.settings``."""
    factory = OPTIMIZERS.choose(method)
    takes = (factory.func if isinstance(factory, partial) else factory).settings
    sized = {} if population is None else {"population": population}
    return factory(seed=seed, bounds=bounds, **sized,
                   **{key: value for key, value in settings.items() if key in takes})


__all__ = ["OPTIMIZERS", "LatentOptimizer", "SearchResult", "build_optimizer"]
