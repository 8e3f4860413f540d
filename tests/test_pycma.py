"""`--ng_method CMA` on pycma: one ask/tell per population, nevergrad's configuration of
CMA-ES, the budget counted in evaluations; nevergrad's CMA stays reachable as `ng-CMA`."""
from __future__ import annotations

import torch

from ggl.optimizers import OPTIMIZERS, build_optimizer
from ggl.optimizers.nevergrad_search import NevergradSearch
from ggl.optimizers.pycma_search import PyCMASearch, configuration


def _sphere(calls):
    def objective(latents):
        calls.append(latents.clone())
        return (latents - 1).pow(2).sum(1)
    return objective


def test_cma_is_pycma_and_nevergrads_cma_is_ng_cma():
    assert isinstance(build_optimizer("CMA"), PyCMASearch)
    ng = build_optimizer("ng-CMA", population=30)
    assert isinstance(ng, NevergradSearch) and ng.method == "CMA" and ng.population == 30
    assert "ng-CMA" in OPTIMIZERS.names(include_more=False)


def test_the_budget_counts_evaluations_and_populations_are_asked_whole():
    calls = []
    result = build_optimizer("CMA", seed=0).minimize(_sphere(calls), torch.zeros(16), 230)
    assert result.evaluations == 230 and len(result.history) == 230
    assert [len(c) for c in calls] == [50, 50, 50, 50, 30]     # the last one partial
    assert result.info["generations"] == 4
    assert result.loss == min(result.history) < 16              # better than the start


def test_a_seed_gives_the_same_search_and_another_seed_another():
    def search(seed):
        calls = []
        build_optimizer("CMA", seed=seed).minimize(_sphere(calls), torch.zeros(8), 100)
        return torch.cat(calls)
    assert torch.equal(search(3), search(3))
    assert not torch.equal(search(3), search(4))


def test_its_first_generation_is_nevergrads_and_it_searches_as_well():
    first, ng_first = [], []
    ours = build_optimizer("CMA", seed=0).minimize(_sphere(first), torch.zeros(32), 2000)
    theirs = build_optimizer("ng-CMA", seed=0).minimize(_sphere(ng_first), torch.zeros(32),
                                                        2000)
    torch.testing.assert_close(first[0], ng_first[0])     # same configuration, same draws
    assert ours.info["configuration"] == "CMApara"
    assert ours.loss < 2 * theirs.loss                      # on a par on the sphere


def test_bounds_keep_every_candidate_in_the_box():
    calls = []
    build_optimizer("CMA", seed=0, bounds=0.5).minimize(_sphere(calls), torch.zeros(20), 300)
    assert torch.cat(calls).abs().max() <= 0.5 + 1e-6


def test_nevergrads_table_of_configurations():
    assert configuration(128, 50, 25_000, False).nevergrad_name == "CMApara"
    assert configuration(128, 50, 25_000, False).popsize == 50
    assert configuration(128, 10, 25_000, False).nevergrad_name == "CMAstd"
    assert configuration(128, 10, 25_000, False).popsize == 4 + int(3 * 4.852)
    assert configuration(128, 10, 30, False).nevergrad_name == "CMAsmall"
    assert configuration(10, 4, 30, False).nevergrad_name == "CMAtuning"
    assert configuration(128, 50, 25_000, True).nevergrad_name == "CMAbounded"
