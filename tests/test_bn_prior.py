"""GradInversion's BatchNorm-statistics prior (`--set bn_prior=...` for ig, ig-adam and
the attacks built on them)."""
from __future__ import annotations

import pytest
import torch

from ggl import RunConfig
from ggl.api import run
from ggl.bn_prior import BatchNormPrior, batchnorm_layers
from ggl.data import load_dataset
from ggl.errors import GGLError
from ggl.models import build_victim, train_victim
from ggl.plan import resolve


@pytest.fixture(scope="module")
def trained_convnet():
    data = load_dataset("mnist")
    model = build_victim("convnet", 1, 32, 10, width=8, mode="train")
    train_victim(model, data.public, 30, seed=0, device=torch.device("cpu"))
    real = torch.stack([data.public[i][0] for i in range(8)])
    return model, real


def test_real_digits_fit_the_running_statistics_better_than_noise(trained_convnet):
    model, real = trained_convnet
    prior = BatchNormPrior(model)
    noise = torch.randn_like(real)
    assert prior(real) < 0.5 * prior(noise)


def test_the_prior_is_differentiable_and_leaves_the_observed_model_alone(trained_convnet):
    model, real = trained_convnet
    before = [layer.running_mean.clone() for layer in batchnorm_layers(model)]
    images = torch.randn_like(real).requires_grad_(True)
    BatchNormPrior(model)(images).backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    after = [layer.running_mean for layer in batchnorm_layers(model)]
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert model.training                     # a train-mode client's model stays so


def test_ig_adam_with_the_prior_runs_on_a_train_mode_convnet():
    config = RunConfig(attack="ig-adam", model="convnet", width=8, model_mode="train",
                       batch_size=2, budget=5, device="cpu", seed=0, victim_steps=5,
                       control="none", extra={"bn_prior": 0.1})
    record = run(config, write=False).record
    assert record["attack_options"]["bn_prior"] == 0.1
    assert record["metrics"]["psnr"] > 0


def test_bn_prior_errors():
    with pytest.raises(GGLError, match="bn_prior must be non-negative, got -1"):
        resolve(RunConfig(attack="ig-adam", extra={"bn_prior": -1.0}))
    config = RunConfig(attack="ig-adam", model="lenet", batch_size=1, budget=2, device="cpu",
                       control="none", extra={"bn_prior": 0.1})
    with pytest.raises(GGLError, match="this victim has no BatchNorm layer"):
        run(config, write=False)
