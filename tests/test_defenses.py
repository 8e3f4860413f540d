"""Defenses do exactly what they say on real gradients, and the attacker's model of each."""
import math

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from ggl import RunConfig, run
from ggl.cli import cli
from ggl.defenses import (DEFENSES, Clipping, Compression, DPSGD, GaussianNoise, LaplaceNoise,
                          Pruning, Quantization, Soteria, model_chain, parse_defenses)
from ggl.errors import GGLError
from ggl.objective import GradientMatching
from ggl.scenario import client_gradient


@pytest.fixture
def batch(mnist):
    images, labels = mnist.private_batch([3, 4])
    return images, labels


def context_for(model, images, labels, seed=0):
    return {"model": model, "images": images, "labels": labels,
            "generator": torch.Generator().manual_seed(seed)}


# --- each defense does what it says, on a copy -------------------------------------------
def test_no_defense_mutates_its_input(lenet, batch):
    images, labels = batch
    gradient = client_gradient(lenet, images, labels)
    before = [g.clone() for g in gradient]
    for spec in ("noise:0.1", "laplace:0.1", "clipping:0.01", "compression:90", "pruning:50",
                 "pruning:50,noise=0.1", "quantization:2", "quantization:2,rounding=stochastic",
                 "soteria:80", "dpsgd:1,clip=0.01"):
        (defense,) = parse_defenses([spec])
        defended = defense.apply(gradient, context_for(lenet, images, labels))
        assert all(torch.equal(a, b) for a, b in zip(gradient, before)), spec
        assert not all(torch.equal(a, b) for a, b in zip(defended, before)), spec


def test_pruning_zeroes_a_random_p_percent(make_victim, batch):
    model = make_victim("mlp")
    images, labels = batch
    gradient = client_gradient(model, images, labels)
    defended = Pruning(30).apply(gradient, context_for(model, images, labels))
    total = sum(g.numel() for g in gradient)
    zeroed = sum(int(((d == 0) & (g != 0)).sum()) for d, g in zip(defended, gradient))
    nonzero = sum(int((g != 0).sum()) for g in gradient)
    assert abs(zeroed / nonzero - 0.30) < 0.005          # std 0.0007 over ~0.8 M entries
    kept = [d != 0 for d in defended]
    assert all(torch.equal(d[k], g[k]) for d, g, k in zip(defended, gradient, kept))
    assert total > 500_000


def test_clipping_bounds_the_global_norm(lenet, batch):
    images, labels = batch
    gradient = client_gradient(lenet, images, labels)
    norm = torch.sqrt(sum(g.pow(2).sum() for g in gradient)).item()
    for bound in (norm / 10, norm / 2):
        clipped = Clipping(bound).apply(gradient, {})
        clipped_norm = torch.sqrt(sum(g.pow(2).sum() for g in clipped)).item()
        assert clipped_norm <= bound * (1 + 1e-5)
        assert clipped_norm == pytest.approx(bound, rel=1e-4)
        ratio = clipped[0] / gradient[0]
        assert torch.allclose(ratio[gradient[0] != 0], ratio[gradient[0] != 0][0])  # a scaling
    unclipped = Clipping(norm * 2).apply(gradient, {})
    assert all(torch.allclose(a, b) for a, b in zip(unclipped, gradient))


@pytest.mark.parametrize("bits", [1, 2, 4])
@pytest.mark.parametrize("rounding", ["deterministic", "stochastic"])
def test_quantization_leaves_at_most_2_to_the_k_levels(lenet, batch, bits, rounding):
    images, labels = batch
    gradient = client_gradient(lenet, images, labels)
    defended = Quantization(bits, rounding=rounding).apply(
        gradient, context_for(lenet, images, labels))
    for g, q in zip(gradient, defended):
        assert len(torch.unique(q)) <= 2 ** bits
        step = (g.max() - g.min()) / (2 ** bits - 1)
        assert (q - g).abs().max() <= step * (1 if rounding == "stochastic" else 0.5) + 1e-6
        assert q.min() >= g.min() - 1e-6 and q.max() <= g.max() + 1e-6


def test_stochastic_rounding_is_unbiased(lenet, batch):
    images, labels = batch
    gradient = client_gradient(lenet, images, labels)[-2]          # the head, 840 entries
    draws = torch.stack([Quantization(2, rounding="stochastic").apply(
        [gradient], context_for(lenet, images, labels, seed=s))[0] for s in range(400)])
    step = ((gradient.max() - gradient.min()) / 3).item()
    assert (draws.mean(0) - gradient).abs().max().item() < 0.2 * step


@pytest.mark.parametrize("defense, std", [(GaussianNoise(0.1), 0.1),
                                          (LaplaceNoise(0.1), 0.1 * math.sqrt(2))])
def test_noise_has_the_stated_standard_deviation(make_victim, batch, defense, std):
    model = make_victim("mlp")
    images, labels = batch
    gradient = client_gradient(model, images, labels)
    defended = defense.apply(gradient, context_for(model, images, labels))
    noise = torch.cat([(d - g).flatten() for d, g in zip(defended, gradient)])
    assert noise.std().item() == pytest.approx(std, rel=0.05)
    assert abs(noise.mean().item()) < 0.01 * std
    again = defense.apply(gradient, context_for(model, images, labels))
    assert all(torch.equal(a, b) for a, b in zip(defended, again))       # seeded


def soteria_scores_by_loop(model, images):
    """Soteria's feature score, one backward pass per feature and image (GGL's loop)."""
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    store = {}
    handle = head.register_forward_hook(lambda m, i, o: store.__setitem__("r", i[0]))
    x = images.clone().requires_grad_(True)
    model(x)
    handle.remove()
    r = store["r"]
    scores = torch.zeros(r.shape[1])
    for b in range(r.shape[0]):
        for f in range(r.shape[1]):
            (dx,) = torch.autograd.grad(r[b, f], x, retain_graph=True)
            scores[f] += dx[b].norm() / (r[b, f].abs() + 1e-10)
    return scores


def test_soteria_zeroes_exactly_the_chosen_columns(lenet, batch):
    images, labels = batch
    gradient = client_gradient(lenet, images, labels)
    defended = Soteria(80).apply(gradient, context_for(lenet, images, labels))
    scores = soteria_scores_by_loop(lenet, images)
    expected = scores < torch.quantile(scores, 0.8)
    head_index = len(gradient) - 2
    zero_columns = (defended[head_index] == 0).all(dim=0)
    assert torch.equal(zero_columns, expected)
    assert int(expected.sum()) == int(0.8 * len(scores))
    assert torch.equal(defended[head_index][:, ~expected], gradient[head_index][:, ~expected])
    for i, (d, g) in enumerate(zip(defended, gradient)):
        if i != head_index:
            assert torch.equal(d, g)


def test_dpsgd_matches_per_example_clipping_and_adds_the_stated_noise(make_victim, mnist):
    model = make_victim("mlp", width=64)
    images, labels = mnist.private_batch([0, 1, 2, 3])
    clip = 0.05
    expected = None
    for x, y in zip(images, labels):                 # per-example gradients, clipped, averaged
        g = client_gradient(model, x[None], y[None])
        factor = min(1.0, clip / (torch.sqrt(sum(t.pow(2).sum() for t in g)).item() + 1e-6))
        scaled = [t * factor / len(labels) for t in g]
        expected = scaled if expected is None else [e + s for e, s in zip(expected, scaled)]
    context = context_for(model, images, labels)
    noiseless = DPSGD(0.0, clip=clip).apply(client_gradient(model, images, labels), context)
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(noiseless, expected))
    noisy = DPSGD(2.0, clip=clip).apply(client_gradient(model, images, labels),
                                        context_for(model, images, labels))
    noise = torch.cat([(n - e).flatten() for n, e in zip(noisy, expected)])
    assert noise.std().item() == pytest.approx(2.0 * clip / len(labels), rel=0.05)


def test_dpsgd_refuses_batchnorm_with_a_clear_message(make_victim, batch):
    images, labels = batch
    model = make_victim("resnet18", width=8)
    with pytest.raises(GGLError, match="BatchNorm"):
        DPSGD(1.0).apply(client_gradient(model, images, labels),
                         context_for(model, images, labels))


# --- the attacker's model --------------------------------------------------------------
@pytest.mark.parametrize("spec", ["compression:90", "clipping:0.5", "clipping:1000",
                                  "quantization:3", "soteria:80", "soteria:80,model=drop",
                                  "pruning:50", "clipping:0.5,compression:50"])
def test_true_image_is_a_zero_loss_point_of_every_deterministic_model(lenet, observe, spec):
    defenses = parse_defenses(spec.replace(",compression", "|compression").split("|"))
    observation, secret, _ = observe(lenet, [4], defenses=defenses)
    # estimates read the received gradient: exact for a single defense, not for the first
    # defense of a chain (the received norm is the norm after compression)
    for known in (True, False) if len(defenses) == 1 else (True,):
        model = model_chain(observation.defenses, observation.gradient, known=known)
        adaptive = GradientMatching(lenet, observation.gradient, trial_transform=model.transform,
                                    dropped_layers=model.dropped_layers)
        truth = secret.images.unsqueeze(0)
        assert adaptive(truth, secret.labels).item() < 1e-10, (spec, known)
    plain = GradientMatching(lenet, observation.gradient)
    if spec != "clipping:1000":                      # an inactive clip changes nothing
        assert plain(secret.images.unsqueeze(0), secret.labels).item() > 1e-8


def test_quantization_model_is_free_inside_the_rounding_bin_and_linear_outside(lenet, batch):
    images, labels = batch
    gradient = client_gradient(lenet, images, labels)
    quantization = Quantization(3)
    received = quantization.apply(gradient, context_for(lenet, images, labels))
    transform = quantization.attacker_model(received).transform
    half_steps = [(q.max() - q.min()) / (2 * 7) for q in received]
    inside = [q + 0.9 * h * (2 * torch.rand_like(q) - 1) for q, h in zip(received, half_steps)]
    assert all(torch.equal(m, q) for m, q in zip(transform(inside), received))
    beyond = [q + h + 0.25 for q, h in zip(received, half_steps)]      # 0.25 past the bin
    for modelled, q in zip(transform(beyond), received):
        assert torch.allclose(modelled - q, torch.full_like(q, 0.25), atol=1e-5)


def test_noise_model_is_the_likelihood_with_known_or_estimated_scale(make_victim, observe):
    model = make_victim("mlp")
    observation, secret, _ = observe(model, [4], defenses=[GaussianNoise(0.05)])
    known = model_chain(observation.defenses, observation.gradient, known=True)
    estimated = model_chain(observation.defenses, observation.gradient, known=False)
    assert known.likelihood_name == "gaussian(0.05)"
    sigma_hat = estimated.facts["noise:0.05"]["gaussian_scale"]
    assert sigma_hat == pytest.approx(0.05, rel=0.05)
    trial = [g.unsqueeze(0) * 0 for g in observation.gradient]
    value = known.likelihood(trial, list(observation.gradient),
                             torch.ones(len(observation.gradient)))
    expected = sum(g.pow(2).sum() for g in observation.gradient) / (2 * 0.05 ** 2)
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    clean = client_gradient(model, secret.images, secret.labels)
    laplace = model_chain([LaplaceNoise(0.05)], LaplaceNoise(0.05).apply(
        clean, {"generator": torch.Generator().manual_seed(1)}), known=False)
    assert laplace.facts["laplace:0.05"]["laplace_scale"] == pytest.approx(0.05, rel=0.05)


def test_adaptive_run_records_what_it_modelled():
    result = run(RunConfig(attack="ig", model="lenet", index=(3,), budget=5,
                           defense=("clipping:0.1", "noise:0.01"), adaptive=True,
                           defense_known=False), write=False)
    modelled = result.record["info"]["defense_model"]
    assert modelled["parameters"] == "estimated"
    assert modelled["likelihood"].startswith("gaussian(")
    assert modelled["defenses"]["clipping:0.1"]["bound"] == "estimated"
    plain = run(RunConfig(attack="ig", model="lenet", index=(3,), budget=5,
                          defense=("clipping:0.1",)), write=False)
    assert "defense_model" not in plain.record["info"]


# --- bad input -------------------------------------------------------------------------
@pytest.mark.parametrize("specs, d_param, mentions", [
    (["blur"], None, ["unknown defense 'blur'", "soteria", "dpsgd"]),
    (["compression:100"], None, ["p must be in [0, 100)"]),
    (["pruning:-1"], None, ["p must be in [0, 100)"]),
    (["noise:-0.1"], None, ["sigma must be >= 0"]),
    (["laplace:-1"], None, ["scale b must be >= 0"]),
    (["quantization:0"], None, ["integer in 1..32"]),
    (["quantization:2.5"], None, ["integer in 1..32"]),
    (["quantization:4,rounding=up"], None, ["deterministic, stochastic"]),
    (["clipping:0"], None, ["must be > 0"]),
    (["noise:abc"], None, ["must be a number", "sigma"]),
    (["pruning:50,sigma=0.1"], None, ["no option(s) sigma", "noise=", "laplace="]),
    (["pruning:50,noise"], None, ["KEY=VALUE"]),
    (["soteria:80,model=zero"], None, ["mask, drop"]),
    (["noise", "clipping"], 0.1, ["single --defense"]),
    (["clipping:4", "dpsgd"], None, ["must be the first --defense"]),
    (["noise:0.1"], 0.2, ["already names its parameter"]),
])
def test_bad_defense_specs_say_what_is_accepted(specs, d_param, mentions):
    with pytest.raises(GGLError) as error:
        parse_defenses(specs, d_param)
    for text in mentions:
        assert text in str(error.value), str(error.value)


def test_cli_lists_defenses_and_rejects_a_bad_one(tmp_path):
    listing = CliRunner().invoke(cli, ["list"])
    for name in DEFENSES:
        assert f"  {name}:" in listing.output
    result = CliRunner().invoke(cli, ["run", "--defense", "quantization:0", "--quiet",
                                      "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "integer in 1..32" in result.output
    assert not (tmp_path / "r").exists()
