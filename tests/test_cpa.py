"""Cocktail Party Attack (`cpa`): ICA unmixes the first linear layer's gradient.

Exact where the math says so (independent sources mixed by a full-rank matrix), the
bias gradient fixes each source's sign and scale, a real MNIST batch comes back from an
MLP's gradient, the conv path beats its random-gradient control, and every misuse is one
clear error.
"""
from __future__ import annotations

import dataclasses
from dataclasses import replace

import pytest
import torch
import torch.nn as nn

from ggl import RunConfig
from ggl.api import prepare, run
from ggl.attacks.cpa import CocktailParty, fastica_unmixing, whiten
from ggl.contracts import Observation
from ggl.errors import GGLError
from ggl.plan import resolve

MLP8 = RunConfig(attack="cpa", model="mlp", batch_size=8, device="cpu", seed=0)


def _observation(config: RunConfig) -> Observation:
    scenario, _ = prepare(resolve(config))
    observation, _ = scenario.observe()
    return observation


def test_fastica_unmixes_independent_sparse_sources_and_the_bias_fixes_their_scale():
    """Six independent sparse non-negative 'images' of 4,096 pixels, mixed into 64 rows
    by a random matrix: dW = G X, db = G 1. ICA needs nothing else."""
    generator = torch.Generator().manual_seed(0)
    batch, rows, pixels = 6, 64, 4096
    on = torch.rand(batch, pixels, generator=generator) < 0.1
    sources = on.double() * (0.5 + 0.5 * torch.rand(batch, pixels, generator=generator).double())
    mixing = torch.randn(rows, batch, generator=generator).double()
    dW, db = mixing @ sources, mixing.sum(1)
    whitening, spectrum = whiten(dW, batch)
    assert spectrum["next"] < 1e-6 < spectrum["kept"]            # rank exactly B
    unmixing = fastica_unmixing(whitening @ (dW - dW.mean(1, keepdim=True)), seed=0) @ whitening
    found = (unmixing @ dW) / (unmixing @ db).unsqueeze(1)        # the bias rule
    correlation = torch.corrcoef(torch.cat([found, sources]))[:batch, batch:]
    best = correlation.max(1)
    assert sorted(best.indices.tolist()) == list(range(batch))   # each source once
    assert best.values.min() > 0.999                             # positive: sign right
    # scale right too: what is left is the sample correlation ICA's whitening removes
    error = (found - sources[best.indices]).norm(dim=1) / sources[best.indices].norm(dim=1)
    assert error.max() < 0.05


def test_cpa_recovers_an_mlp_batch_of_real_digits():
    record = run(MLP8, write=False).record
    psnr = record["metrics"]["per_image"]["psnr"]
    assert sum(p >= 40 for p in psnr) >= 6                       # measured: 7 of 8 at 80+ dB
    assert record["metrics"]["judge_accuracy"] >= 0.75          # measured: 0.875
    assert record["info"]["case"] == "image"
    assert record["info"]["spectrum"]["next"] < 1e-5             # a rank-8 mixture
    control = run(replace(MLP8, control="random-gradient"), write=False).record
    assert max(control["metrics"]["per_image"]["psnr"]) < 20
    assert control["info"]["spectrum"]["next"] > 1e-3            # noise: no rank gap


def test_fastica_alone_is_worse_on_digits_than_the_box_prior():
    """MNIST digits in one batch correlate, which ICA's whitening assumes away."""
    alone = run(replace(MLP8, extra={"prior": "none"}), write=False).record
    psnr = alone["metrics"]["per_image"]["psnr"]
    assert alone["info"]["prior"] == "none"
    assert sum(p >= 40 for p in psnr) <= 2


def test_the_conv_path_inverts_features_and_beats_its_control():
    config = RunConfig(attack="cpa", model="convfc", batch_size=4, device="cpu", seed=0,
                       budget=1000, extra={"fi_budget": 300})
    record = run(config, write=False).record
    control = run(replace(config, control="random-gradient"), write=False).record
    assert record["info"]["case"] == "features + feature inversion"
    # measured: 23.5 dB (300 inversion steps) against the control's 5.3
    assert record["metrics"]["psnr"] > 18
    assert record["metrics"]["psnr"] > control["metrics"]["psnr"] + 10


def test_a_layer_with_fewer_rows_than_the_batch_is_one_error():
    observation = _observation(RunConfig(attack="cpa", model="lenet", batch_size=16,
                                         device="cpu", seed=0))
    with pytest.raises(GGLError, match="at least B = 16 rows .* it has 10"):
        CocktailParty().reconstruct(observation)


def test_a_model_without_a_linear_layer_is_one_error():
    observation = _observation(MLP8)
    convolutional = nn.Sequential(nn.Conv2d(1, 10, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    gradient = tuple(torch.zeros_like(p) for p in convolutional.parameters())
    observation = replace(observation, model=convolutional, gradient=gradient)
    with pytest.raises(GGLError, match="has none: use a model with a fully connected"):
        CocktailParty().reconstruct(observation)


def test_a_gradient_that_is_not_finite_is_one_error():
    observation = _observation(MLP8)
    gradient = list(observation.gradient)
    gradient[0] = gradient[0].clone()
    gradient[0][0, 0] = float("nan")
    with pytest.raises(GGLError, match="not finite"):
        CocktailParty().reconstruct(replace(observation, gradient=tuple(gradient)))


@pytest.mark.parametrize("options, message", [
    ({"budget": 0}, "budget"),
    ({"candidates": 0}, "candidates must be at least 1"),
    ({"lr": 0.0}, "lr must be positive"),
    ({"box": -1.0}, "box must be non-negative"),
    ({"fi_budget": 0}, "fi_budget must be at least 1"),
    ({"prior": "ica"}, "prior"),
])
def test_bad_cpa_options_are_one_error(options, message):
    with pytest.raises(GGLError, match=message):
        CocktailParty(**options)


def test_options_carry_the_papers_values():
    defaults = {f.name: f.default for f in dataclasses.fields(CocktailParty.Options)}
    assert (defaults["decor"], defaults["temperature"], defaults["tv"]) == (1.47, 12.4, 3.1)
    assert (defaults["nv"], defaults["l1"]) == (0.13, 5.0)
