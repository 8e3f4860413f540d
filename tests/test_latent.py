"""GGL: generators in the victim's space, latent optimizers, batched evaluation, the attack."""
import json

import pytest
import torch
from click.testing import CliRunner

from ggl.generators import build_prior
from ggl.generators.prior import Prior, wgan_gp_prior
from ggl.generators.wgan_gp import WGANConfig, WGANGenerator
from ggl import RunConfig, run
from ggl.attacks.latent import GGL, latent_kl
from ggl.cli import cli
from ggl.errors import GGLError
from ggl.labels import infer_labels
from ggl.metrics import psnr, to_unit_range
from ggl.objective import GradientMatching
from ggl.optimizers import build_optimizer
from ggl.optimizers.turbo import TrustRegion

MEAN, STD = (0.5,), (0.5,)


def tiny_prior(num_classes=None, seed=0, channels=1) -> Prior:
    """A random 16x16 WGAN-GP generator (latent 8) bound to the 1x32x32 mnist victim."""
    torch.manual_seed(seed)
    net = WGANGenerator(WGANConfig(channels=channels, resolution=16, latent_dim=8, width=8,
                                   num_classes=num_classes)).eval()
    return Prior(net, name="tiny", latent_dim=8, num_classes=num_classes, channels=channels,
                 resolution=16).bind((1, 32, 32), MEAN, STD)


@pytest.fixture
def matching_problem(lenet):
    """A gradient-matching objective over latents whose optimum (a known latent) is at 0."""
    prior = tiny_prior()
    secret_latent = prior.sample_latent(1, torch.Generator().manual_seed(5))
    secret = prior(secret_latent)
    labels = torch.tensor([3])
    target = torch.autograd.grad(torch.nn.functional.cross_entropy(lenet(secret), labels),
                                 list(lenet.parameters()))
    objective = GradientMatching(lenet, target, distance="l2")

    def loss(latents):
        return objective(prior(latents).unsqueeze(1), labels)

    return loss, secret_latent[0]


# --- generators ---------------------------------------------------------------------------
def test_prior_maps_output_into_the_victims_space():
    class Constant(torch.nn.Module):      # draws white RGB 8x8 images
        def forward(self, z):
            return torch.ones(len(z), 3, 8, 8)

    prior = Prior(Constant(), name="white", latent_dim=4, num_classes=None, channels=3,
                  resolution=8).bind((1, 32, 32), (0.1307,), (0.3081,))
    images = prior(torch.zeros(2, 4))
    assert images.shape == (2, 1, 32, 32)
    assert torch.allclose(images, torch.full_like(images, (1 - 0.1307) / 0.3081))
    gray = tiny_prior()
    rgb = Prior(gray.net, name="gray", latent_dim=8, num_classes=None, channels=1,
                resolution=16).bind((3, 16, 16), (0.5,) * 3, (0.5,) * 3)
    z = gray.sample_latent(2)
    out = rgb(z)
    assert out.shape == (2, 3, 16, 16) and torch.equal(out[:, 0], out[:, 2])
    assert torch.allclose(out[:, :1], gray.net(z), atol=1e-6)  # same [-1, 1] space, no resize


def test_prior_output_of_a_candidate_does_not_depend_on_the_population():
    prior = tiny_prior()
    z = prior.sample_latent(6, torch.Generator().manual_seed(0))
    assert torch.allclose(prior(z)[2:3], prior(z[2:3]), atol=1e-6)
    prior.train()
    assert not prior.net.training


def test_shipped_default_prior_is_used_for_mnist():
    prior = build_prior("default-unconditional", "mnist").bind((1, 32, 32), MEAN, STD)
    assert prior.latent_dim == 128 and not prior.conditional
    images = prior(prior.sample_latent(3))
    assert images.shape == (3, 1, 32, 32) and images.min() >= -1 and images.max() <= 1


def test_default_prefers_the_shipped_conditional_prior():
    chosen = build_prior("default", "mnist")
    conditional = build_prior("default-conditional", "mnist")
    assert chosen.conditional and chosen.name == conditional.name
    assert chosen.num_classes == 10 and chosen.name.endswith("mnist-wgan-gp-conditional")


def test_shipped_conditional_prior_draws_the_class_it_is_given():
    """The independent judge (trained on the public split only) sees the class asked for."""
    from ggl.data import load_dataset
    from ggl.judge import load_judge

    data = load_dataset("mnist")
    judge, _ = load_judge(data)
    prior = build_prior("default-conditional", "mnist").bind((1, 32, 32), MEAN, STD)
    labels = torch.arange(10).repeat_interleave(30)
    with torch.no_grad():
        images = prior(prior.sample_latent(len(labels), torch.Generator().manual_seed(0)),
                       labels)
    agreed = (judge.predict(images) == labels).float()
    assert agreed.mean() >= 0.9, agreed.mean()
    assert min(agreed[labels == c].mean() for c in range(10)) >= 0.6


def test_a_conditional_prior_must_draw_the_victims_classes(tmp_path):
    from ggl.gan_training.checkpoint import save_generator

    five = WGANGenerator(WGANConfig(width=4, latent_dim=8, num_classes=5))
    save_generator(tmp_path / "five", five, {"generator": five.config.to_dict(), "step": 0})
    result = CliRunner().invoke(cli, ["run", "--generator", f"wgan-gp:{tmp_path / 'five'}",
                                      "--ng_method", "CMA", "--budget", "100", "--quiet",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: ") and "Traceback" not in result.output
    assert "draws 5 classes, the victim predicts 10" in result.output
    assert not (tmp_path / "run").exists()


def test_generator_spec_errors(tmp_path):
    with pytest.raises(GGLError, match="accepted: default, default-unconditional"):
        build_prior("stylegan:x", "mnist")
    with pytest.raises(GGLError, match="ships a prior for mnist only"):
        build_prior("default", "cifar10")
    with pytest.raises(GGLError, match="does not exist: give a `ggl train-prior --out` folder"):
        wgan_gp_prior(tmp_path / "nothing")
    with pytest.raises(GGLError, match="config.json and pytorch_model.bin"):
        build_prior(f"biggan-deep-256:{tmp_path}", "mnist")


# --- optimizers ---------------------------------------------------------------------------
@pytest.mark.parametrize("method, budget, options", [
    ("CMA", 600, {}),
    ("TwoPointsDE", 600, {}),
    ("adam", 150, {"lr": 0.05}),
    ("BO", 120, {"population": 10, "initial_points": 30, "candidates": 300}),
])
def test_each_optimizer_lowers_the_objective(matching_problem, method, budget, options):
    loss, _ = matching_problem
    init = torch.randn(8, generator=torch.Generator().manual_seed(9))  # z = 0 is a dead ReLU point
    population = options.pop("population", None)
    optimizer = build_optimizer(method, seed=1, population=population, **options)
    start = loss(init[None]).item()
    global_state = torch.get_rng_state()
    result = optimizer.minimize(loss, init, budget)
    assert torch.equal(torch.get_rng_state(), global_state)    # seeded on its own streams
    assert result.evaluations == budget == len(result.history)
    assert all(a >= b for a, b in zip(result.history, result.history[1:]))  # best so far
    assert result.loss < 0.5 * start, (method, start, result.loss)
    assert abs(loss(result.latent[None]).item() - result.loss) < 1e-4 * max(1, result.loss)


def test_unknown_method_and_small_budget_are_clear_errors():
    with pytest.raises(GGLError, match=r"unknown --ng_method 'CMAES'.*CMA.*DiagonalCMA"):
        build_optimizer("CMAES")
    with pytest.raises(GGLError, match="smaller than one population of CMA \\(50"):
        build_optimizer("CMA").minimize(lambda z: z.sum(1), torch.zeros(4), 49)


def test_trust_region_follows_turbo_rules():
    region = TrustRegion(dim=128, batch_size=10, best_value=0.0)
    assert region.failure_tolerance == 13
    for value in (1.0, 2.0, 3.0):                 # 3 successes in a row: length doubles
        region.update(torch.tensor([value]))
    assert region.length == 1.6
    for _ in range(13):                           # 13 failures: length halves
        region.update(torch.tensor([0.0]))
    assert region.length == 0.8 and not region.collapsed


def test_latent_kl_is_zero_for_standard_normal_statistics():
    z = torch.tensor([[1.0, -1.0, 1.0, -1.0], [2.0, 2.0, 2.0, 2.0]])
    kl = latent_kl(z)
    assert kl[0].abs() < 1e-6 and kl[1] > 1


# --- batched evaluation -------------------------------------------------------------------
@pytest.mark.parametrize("model", ["lenet", "convnet"])
def test_batched_population_equals_one_at_a_time(make_victim, model):
    victim = make_victim(model)
    prior = tiny_prior()
    candidates = prior(prior.sample_latent(6, torch.Generator().manual_seed(2))).unsqueeze(1)
    target = [torch.randn_like(p) * 1e-2 for p in victim.parameters()]
    labels = torch.tensor([4])
    batched = GradientMatching(victim, target, path="vmap", chunk_size=4)(candidates, labels)
    looped = GradientMatching(victim, target, path="loop")(candidates, labels)
    assert torch.allclose(batched, looped, rtol=1e-4, atol=1e-6)


def test_losses_are_reduced_chunk_by_chunk_without_holding_every_gradient(make_victim,
                                                                          monkeypatch):
    victim = make_victim("lenet")
    candidates = torch.randn(7, 1, 1, 32, 32)
    target = [torch.randn_like(p) * 1e-2 for p in victim.parameters()]
    labels = torch.tensor([4])
    whole = GradientMatching(victim, target, chunk_size=7)(candidates, labels)
    chunked = GradientMatching(victim, target, chunk_size=3)
    held = []
    original = chunked.trial_gradients
    monkeypatch.setattr(chunked, "trial_gradients",
                        lambda x, y: held.append(len(x)) or original(x, y))
    assert torch.allclose(chunked(candidates, labels), whole, rtol=1e-5, atol=1e-7)
    assert held == [3, 3, 1]


def test_auto_path_batches_populations_the_model_allows(make_victim):
    def matching(model):
        return GradientMatching(model, [torch.zeros_like(p) for p in model.parameters()])

    large = matching(make_victim("resnet18"))
    assert large.choose_path(50) == "vmap" and large.choose_path(1) == "loop"
    assert 1 <= large._auto_chunk(50) < 50          # 11 M parameters: chunked within 2 GiB
    assert matching(make_victim("lenet"))._auto_chunk(50) == 50
    training = matching(make_victim("resnet18", mode="train"))
    assert training.choose_path(50) == "loop"      # train-mode BatchNorm cannot be vmapped


# --- the attack ---------------------------------------------------------------------------
def test_conditional_prior_receives_the_inferred_label(lenet, observe, tmp_path, monkeypatch):
    observation, secret, _ = observe(lenet, [7])
    prior = tiny_prior(num_classes=10)
    seen = []
    original = prior.net.forward
    monkeypatch.setattr(prior.net, "forward",
                        lambda z, labels: seen.append(labels.clone()) or original(z, labels))
    attack = GGL(budget=100, ng_method="CMA")
    monkeypatch.setattr(attack, "prior", lambda obs: prior)
    attack.reconstruct(observation)
    inferred = infer_labels(observation)
    assert seen and all(torch.equal(labels, inferred.repeat(len(labels))) for labels in seen)
    assert inferred.item() == secret.labels.item()


def test_ggl_with_adam_reconstructs_a_digit_in_the_shipped_prior():
    result = run(RunConfig(attack="ggl", index=(0,), budget=200, extra={"ng_method": "adam"}),
                 write=False)
    metrics = result.record["metrics"]
    assert metrics["psnr"] > 15 and metrics["label_accuracy"] == 1.0, metrics
    assert result.record["evaluations"] >= 200 and len(result.record["info"]["latent"]) == 128


def test_ggl_batch_of_two_uses_one_latent_per_image():
    result = run(RunConfig(attack="ggl", index=(0, 1), batch_size=2, budget=100,
                           extra={"ng_method": "CMA", "n_trials": 2}), write=False)
    assert result.reconstruction.images.shape == (2, 1, 32, 32)
    assert len(result.record["info"]["latent"]) == 2 * 128
    assert len(result.record["info"]["trial_gradient_losses"]) == 2


def test_refinement_is_kept_only_when_it_lowers_the_loss():
    result = run(RunConfig(attack="ggl", index=(3,), budget=100,
                           extra={"ng_method": "CMA", "refine_steps": 30}), write=False)
    refinement = result.record["info"]["refinement"]
    assert refinement["gradient_loss_after"] <= refinement["gradient_loss_before"]
    assert result.reconstruction.loss == refinement["gradient_loss_after"]


def test_refinement_tv_keeps_the_image_smoother_than_refinement_without_it():
    from ggl.objective import total_variation

    def refined_tv(weight):
        result = run(RunConfig(attack="ggl", index=(3,), budget=100, extra={
            "ng_method": "CMA", "refine_steps": 60, "refine_lr": 0.05, "refine_tv": weight}),
            write=False)
        assert result.record["info"]["refinement"]["kept"]
        return total_variation(result.reconstruction.images[None])[0].item()

    assert refined_tv(1.0) < 0.9 * refined_tv(0.0)


def test_biggan_small_config_runs_end_to_end(tmp_path):
    from pytorch_pretrained_biggan import BigGAN, BigGANConfig
    from safetensors.torch import save_file

    from ggl.generators.biggan import initialise_random

    config = BigGANConfig(output_dim=32, z_dim=16, class_embed_dim=16, channel_width=4,
                          num_classes=10, attention_layer_position=2,
                          layers=[(True, 16, 8), (True, 8, 4), (False, 4, 2), (True, 2, 1)])
    torch.manual_seed(0)
    model = initialise_random(BigGAN(config))
    (tmp_path / "config.json").write_text(config.to_json_string())
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(tmp_path / "model.safetensors"))
    result = run(RunConfig(attack="ggl", index=(2,), budget=60,
                           extra={"ng_method": "CMA", "generator": f"biggan-deep-128:{tmp_path}",
                                  "population": 20, "truncation": 0.5}), write=False)
    images = result.reconstruction.images
    assert images.shape == (1, 1, 32, 32) and torch.isfinite(images).all()
    assert result.record["info"]["generator"].startswith("biggan-deep-128:")
    (tmp_path / "model.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(GGLError, match="corrupt, truncated"):
        build_prior(f"biggan-deep-128:{tmp_path}", "mnist")


# --- the command --------------------------------------------------------------------------
def test_cli_runs_ggl_and_writes_the_usual_outputs(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", "--ng_method", "CMA", "--budget", "100",
                                      "--index", "5", "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ggl on lenet/mnist private [5]")
    record = json.loads((out / "run.json").read_text())
    assert record["config"]["attack"] == "ggl" and record["attack_options"]["ng_method"] == "CMA"
    assert {"original.png", "reconstruction.png", "progress.gif"} <= {p.name for p in out.iterdir()}


@pytest.mark.parametrize("args, mentions", [
    (["--ng_method", "CMAES"], ["unknown --ng_method 'CMAES'", "CMA", "ggl list"]),
    (["--budget", "10"], ["--budget 10 is too small for the default search", ">= 500",
                          "--ng_method NAME"]),
    (["--ng_method", "CMA", "--budget", "10"],
     ["--budget 10 evaluations is smaller than one population", "50"]),
    (["--ng_method", "BO", "--budget", "5"], ["smaller than one population of turbo"]),
    (["--generator", "biggan:/x"], ["unknown --generator", "wgan-gp:PATH"]),
    (["--n_trials", "0"], ["--n_trials (--restarts) must be at least 1"]),
])
def test_cli_bad_latent_options(tmp_path, args, mentions):
    result = CliRunner().invoke(cli, ["run", *args, "--quiet", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: ") and "Traceback" not in result.output
    for text in mentions:
        assert text in result.output, result.output


# --- compression, the defense GGL's central claim is about ----------------------------------
def test_compression_zeroes_exactly_p_percent_per_layer_on_a_copy(lenet, observe):
    from ggl.defenses import Compression

    observation, secret, _ = observe(lenet, [4])
    clean = [g.clone() for g in observation.gradient]
    defended = Compression(90).apply(observation.gradient, {})
    for before, after, original in zip(clean, defended, observation.gradient):
        assert torch.equal(before, original)                       # input not mutated
        kept = after != 0
        assert torch.equal(after[kept], before[kept])              # survivors unchanged
        expected_zeros = int((before.abs() < torch.quantile(before.abs().flatten(), 0.9)).sum())
        assert int((~kept).sum()) == expected_zeros
        assert abs((~kept).float().mean().item() - 0.9) <= 1.0 / before.numel() + 1e-6


def test_true_image_is_a_zero_loss_point_of_the_adaptive_objective(lenet, observe):
    from ggl.defenses import Compression, model_chain

    observation, secret, _ = observe(lenet, [4], defenses=[Compression(90)])
    labels = secret.labels
    adaptive = GradientMatching(lenet, observation.gradient,
                                trial_transform=model_chain(observation.defenses,
                                                            observation.gradient).transform)
    plain = GradientMatching(lenet, observation.gradient)
    truth = secret.images.unsqueeze(0)
    assert adaptive(truth, labels).item() < 1e-12 < plain(truth, labels).item()


@pytest.mark.parametrize("args, mentions", [
    (["--defense", "blur"], ["unknown defense 'blur'", "compression"]),
    (["--defense", "compression", "--d_param", "100"], ["p must be in [0, 100)", "100"]),
    (["--defense", "compression:x"], ["must be a number"]),
    (["--defense", "compression:90", "--d_param", "20"], ["drop --d_param"]),
])
def test_bad_defense_options(tmp_path, args, mentions):
    result = CliRunner().invoke(cli, ["run", *args, "--quiet", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and result.output.startswith("Error: "), result.output
    for text in mentions:
        assert text in result.output, result.output
    assert not (tmp_path / "r").exists()


def test_adaptive_ggl_under_compression_runs_from_the_command_line(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["run", "--ng_method", "CMA", "--defense", "compression",
                                      "--d_param", "90", "--adaptive", "--budget", "100",
                                      "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "run.json").read_text())
    assert record["config"]["defense"] == ["compression"] and record["config"]["adaptive"]
