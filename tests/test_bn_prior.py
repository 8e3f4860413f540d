"""GradInversion's BatchNorm-statistics prior (`--set bn_prior=...` for ig, ig-adam and
the attacks built on them)."""
from __future__ import annotations

import copy

import pytest
import torch

from ggl import RunConfig
from ggl.api import run
from ggl.bn_prior import BatchNormPrior, batchnorm_layers, group_consistency
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


def test_a_population_scores_each_batch_as_that_batch_alone(trained_convnet):
    """A population of P batches in one pass gives each batch's own R_BN: train-mode
    layers normalise a batch with its own statistics, never the population's."""
    model, real = trained_convnet
    prior = BatchNormPrior(model)
    batches = torch.stack([real[:4], real[4:], torch.randn_like(real[:4])])
    together = prior(batches)
    alone = torch.stack([prior(batch) for batch in batches])
    assert together.shape == (3,)
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
    # and one batch alone is scored through the same forward pass the client ran
    reference = copy.deepcopy(model)
    seen = []
    for layer in batchnorm_layers(reference):
        layer.momentum = 0.0
        layer.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    reference(real[:4])
    expected = sum(torch.linalg.vector_norm(x.mean((0, 2, 3)) - l.running_mean) +
                   torch.linalg.vector_norm(x.var((0, 2, 3), unbiased=False) - l.running_var)
                   for x, l in zip(seen, batchnorm_layers(reference)))
    torch.testing.assert_close(alone[0], expected, rtol=1e-5, atol=1e-5)


def test_group_consistency_pulls_members_to_their_mean():
    members = torch.randn(3, 2, 1, 4, 4, requires_grad=True)
    value = group_consistency(members)
    consensus = members.detach().mean(0)
    expected = sum(torch.linalg.vector_norm(m - consensus) for m in members.detach())
    torch.testing.assert_close(value, expected)
    value.backward()
    # the gradient points away from the consensus: a step against it moves members closer
    step = members.detach() - 0.1 * members.grad
    assert group_consistency(step) < value


def test_ig_with_a_group_returns_its_best_member_and_group_one_changes_nothing():
    base = dict(attack="ig-adam", model="convnet", width=8, model_mode="train", batch_size=2,
                budget=8, device="cpu", seed=0, victim_steps=5, control="none")
    plain = run(RunConfig(**base), write=False).record
    one = run(RunConfig(**base, extra={"group": 1}), write=False).record
    assert one["metrics"]["psnr"] == plain["metrics"]["psnr"]
    grouped = run(RunConfig(**base, extra={"group": 3, "group_weight": 0.01,
                                           "bn_prior": 0.1}), write=False).record
    losses = grouped["info"]["group_losses"]
    assert len(losses) == 1 and len(losses[0]) == 3
    assert grouped["info"]["restart_losses"] == [min(losses[0])]


def test_ggl_takes_the_bn_prior_as_an_extra_term():
    def search(weight):
        config = RunConfig(attack="ggl", model="convnet", width=8, model_mode="train",
                           batch_size=2, budget=60, device="cpu", seed=0, victim_steps=5,
                           control="none", extra={"ng_method": "CMA", "bn_prior": weight,
                                                  "population": 10})
        return run(config, write=False).record

    plain, prior = search(0.0), search(50.0)
    assert prior["attack_options"]["bn_prior"] == 50.0
    # same seed, same draws: only the prior's term can make the search choose differently
    assert prior["info"]["latent"] != plain["info"]["latent"]


@pytest.mark.parametrize("attack,extra,message", [
    ("ig", {"group": 0}, "group must be at least 1"),
    ("ig-adam", {"group_weight": -1.0}, "group_weight must be non-negative"),
    ("ggl", {"bn_prior": -0.1}, "bn_prior must be >= 0"),
])
def test_group_and_ggl_bn_prior_errors(attack, extra, message):
    with pytest.raises(GGLError, match=message):
        resolve(RunConfig(attack=attack, extra=extra))


def test_group_is_refused_by_attacks_with_extra_variables():
    with pytest.raises(GGLError, match="group > 1 is for attacks that optimize the images"):
        resolve(RunConfig(attack="dia", dropout=0.1, model="mlp", extra={"group": 2}))
