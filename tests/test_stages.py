"""GGL's search as stages: plans, seeding, the hybrid, GIAS and GIFD (CPU, tiny priors)."""
import pytest
import torch
from click.testing import CliRunner

from ggl.generators.prior import Prior
from ggl.generators.wgan_gp import WGANConfig, WGANGenerator
from ggl.attacks.generator_stages import gias, gifd, project_l1_ball
from ggl.attacks.latent import GGL
from ggl.attacks.stages import parse_plan
from ggl.cli import cli
from ggl.errors import GGLError
from ggl.objective import GradientMatching, holdout_masks

MEAN, STD = (0.5,), (0.5,)


def tiny_prior(seed=0) -> Prior:
    """A random 16x16 WGAN-GP generator (latent 8, weights N(0, 0.3)) bound to the 1x32x32
    mnist victim."""
    torch.manual_seed(seed)
    net = WGANGenerator(WGANConfig(channels=1, resolution=16, latent_dim=8, width=8)).eval()
    with torch.no_grad():                    # weights large enough to draw varied images
        for weight in net.parameters():
            weight.normal_(0, 0.3)
    return Prior(net, name="tiny", latent_dim=8, num_classes=None, channels=1,
                 resolution=16).bind((1, 32, 32), MEAN, STD)


@pytest.fixture
def tiny_attack(lenet, observe, monkeypatch):
    """``tiny_attack(**options) -> (attack, observation)``: GGL on digit 7 in a tiny prior."""
    observation, _, _ = observe(lenet, [7])

    def _make(**options):
        attack = GGL(**options)
        monkeypatch.setattr(attack, "prior", lambda obs: tiny_prior())
        return attack, observation

    return _make


# --- plans ----------------------------------------------------------------------------------
def test_a_plan_shares_the_budget_and_one_stage_may_take_the_rest():
    assert [str(s) for s in parse_plan("sample:100,CMA", 500)] == ["sample:100", "CMA:400"]
    assert [str(s) for s in parse_plan("sample:100,CMA:300,adam:50", None)] == [
        "sample:100", "CMA:300", "adam:50"]
    plan = parse_plan("CMA:300,adam:100,gias:50,gifd:60", 510)
    assert [s.kind for s in plan] == ["optimizer", "optimizer", "gias", "gifd"]


@pytest.mark.parametrize("spec, budget, mentions", [
    ("smaple:100,CMA", 500, ["unknown stage 'smaple'", "sample, gias, gifd", "CMA"]),
    ("sample:100,CMA:300", 500, ["add up to 400", "--budget is 500"]),
    ("sample:600,CMA", 500, ["use 600 of --budget 500", "nothing for 'CMA'"]),
    ("sample,CMA", 500, ["at most one stage", "sample, CMA"]),
    ("CMA:100,sample:100", None, ["'sample'", "first stage"]),
    ("gias:100,CMA:100", None, ["'gias' needs a latent"]),
    ("CMA:100,gifd:50,adam:50", None, ["after every latent stage"]),
    ("CMA:100,gifd:50,gias:50", None, ["gias then gifd"]),
    ("CMA:ten", None, ["whole number", "'ten'"]),
    ("CMA:0", None, ["at least 1"]),
    ("CMA", None, ["no --budget"]),
])
def test_bad_plans_are_one_clear_error(spec, budget, mentions):
    with pytest.raises(GGLError) as err:
        parse_plan(spec, budget)
    for text in mentions:
        assert text in str(err.value)


def test_stage_settings_that_cannot_work_are_errors_before_any_search():
    with pytest.raises(GGLError, match="sample:3 cannot keep --starts 4"):
        GGL(stages="sample:3,CMA:400", starts=4)
    with pytest.raises(GGLError, match=r"CMA:120 is too small: 4 search\(es\) of CMA need "
                                       r"at least 200"):
        GGL(stages="sample:100,CMA:120", starts=4)
    with pytest.raises(GGLError, match="--stages names the optimizers"):
        GGL(stages="CMA:100", ng_method="adam")
    with pytest.raises(GGLError, match="add up to 300 evaluations but --budget is 500"):
        GGL(stages="sample:100,CMA:200", budget=500)


# --- seeding and the latent stages -------------------------------------------------------------
def test_seeding_counts_every_evaluation_in_the_budget(tiny_attack):
    attack, observation = tiny_attack(stages="sample:300,CMA:200", starts=2)
    result = attack.reconstruct(observation)
    records = result.info["stage_records"]
    assert [(r["stage"], r["evaluations"], r["starts"]) for r in records] == [
        ("sample", 300, 1), ("CMA", 200, 2)]
    assert records[0]["kept"] == 2
    # the objective's own counter: the plan's 500 plus the final scoring of the returned latent
    assert result.evaluations == 501 and len(result.history) == 500
    assert records[1]["best_objective"] <= records[0]["best_objective"]


def test_batched_adam_starts_use_their_share_and_follow_their_own_paths(tiny_attack):
    attack, observation = tiny_attack(stages="sample:40,adam:60", starts=3, lr=0.05)
    result = attack.reconstruct(observation)
    adam = result.info["stage_records"][1]
    assert adam["evaluations"] == 60 and adam["starts"] == 3
    assert adam["optimizer"]["batched_starts"] == 3 and adam["optimizer"]["steps"] == 20


def test_each_latent_stage_lowers_the_objective(tiny_attack):
    attack, observation = tiny_attack(stages="sample:200,CMA:300,adam:100", starts=2)
    records = attack.reconstruct(observation).info["stage_records"]
    objectives = [r["best_objective"] for r in records]
    assert objectives[1] < objectives[0] and objectives[2] < objectives[1], objectives


# --- GIAS and GIFD ---------------------------------------------------------------------------
@pytest.fixture
def generator_problem(lenet):
    """A tiny prior, a start latent, and the gradient loss of a LeNet gradient of another
    image the prior draws (label 3)."""
    prior = tiny_prior()
    secret = prior(prior.sample_latent(1, torch.Generator().manual_seed(5)))
    labels = torch.tensor([3])
    target = torch.autograd.grad(torch.nn.functional.cross_entropy(lenet(secret), labels),
                                 list(lenet.parameters()))
    objective = GradientMatching(lenet, target, distance="l2")
    latents = prior.sample_latent(1, torch.Generator().manual_seed(3))
    return prior, latents, labels, lambda images: (objective(images, labels), None)


def test_gias_lowers_the_objective_and_leaves_the_prior_untouched(generator_problem):
    prior, latents, labels, objective = generator_problem
    before = {k: v.clone() for k, v in prior.net.state_dict().items()}
    start = objective(prior(latents)[None])[0].item()
    outcome = gias(prior, latents, labels, objective, steps=40, lr=1e-2, reg=1.0,
                   progress=lambda *args: None)
    assert outcome.loss < 0.9 * start and len(outcome.history) == 40
    assert all(torch.equal(before[k], v) for k, v in prior.net.state_dict().items())
    assert not any(w.requires_grad for w in prior.net.parameters())
    tuned = dict(outcome.nets[0].named_parameters())
    assert any(not torch.equal(tuned[k], w) for k, w in prior.net.named_parameters())
    assert outcome.facts["weight_drift"] > 0


def test_gifd_lowers_the_objective_inside_its_l1_balls(generator_problem):
    prior, latents, labels, objective = generator_problem
    start = objective(prior(latents)[None])[0].item()
    outcome = gifd(prior, latents, labels, objective, steps=60, lr=0.01, radius=5.0,
                   radius_step=2.0, progress=lambda *args: None)
    layers = outcome.facts["layers"]
    assert [(l["steps"], l["radius"]) for l in layers] == [(30, 5.0), (30, 7.0)]
    assert outcome.loss < 0.9 * start and len(outcome.history) == 60


def test_held_out_entries_split_the_loss_and_are_scored_in_the_same_evaluation(lenet):
    images = torch.rand(3, 1, 1, 32, 32)
    labels = torch.tensor([3])
    target = torch.autograd.grad(torch.nn.functional.cross_entropy(
        lenet(torch.rand(1, 1, 32, 32)), labels), list(lenet.parameters()))
    objective = GradientMatching(lenet, target, distance="l2", layer_weights="sum")
    held_out = holdout_masks(objective.target, 0.2, seed=0)
    share = sum(m.sum() for m in held_out) / sum(m.numel() for m in held_out)
    assert 0.18 < share < 0.22
    assert all(torch.equal(a, b) for a, b in zip(held_out, holdout_masks(target, 0.2, seed=0)))
    fit, check = objective.split_losses(images, labels, held_out)
    assert objective.evaluations == 3                     # one set of trial gradients
    assert torch.allclose(fit + check, objective(images, labels), rtol=1e-5)
    assert torch.all(check > 0) and torch.all(fit > check)


def test_gias_with_held_out_entries_keeps_the_images_that_match_them_best(generator_problem,
                                                                           lenet):
    prior, latents, labels, _ = generator_problem
    secret = prior(prior.sample_latent(1, torch.Generator().manual_seed(5)))
    target = torch.autograd.grad(torch.nn.functional.cross_entropy(lenet(secret), labels),
                                 list(lenet.parameters()))
    noise = torch.Generator().manual_seed(1)           # noise far above the gradient's scale
    noisy = [g + 0.1 * torch.randn(g.shape, generator=noise) for g in target]
    objective = GradientMatching(lenet, noisy, distance="l2")
    held_out = holdout_masks(noisy, 0.2, seed=0)
    checks = []

    def score(images):
        fit, check = objective.split_losses(images, labels, held_out)
        checks.append(check.item())
        return fit, check

    outcome = gias(prior, latents, labels, score, steps=40, lr=1e-2, reg=0.0,
                   progress=lambda *args: None)
    assert outcome.loss == pytest.approx(min(checks))
    assert outcome.start_loss == pytest.approx(checks[0])
    assert outcome.facts["best_step"] == checks.index(min(checks))


def test_holdout_is_checked_where_the_run_is_resolved(lenet, observe):
    with pytest.raises(GGLError, match="holdout applies to the gias and gifd stages"):
        GGL(stages="CMA:100", holdout=0.1)
    with pytest.raises(GGLError, match=r"0 \(none\) or in \(0, 1\)"):
        GGL(stages="CMA:100,gias:20", holdout=1.5)


def test_a_plan_with_holdout_records_it_and_scores_the_winner_on_the_whole_gradient(
        tiny_attack):
    attack, observation = tiny_attack(stages="CMA:200,gias:30", gias_lr=1e-2, holdout=0.2)
    result = attack.reconstruct(observation)
    gias_record = result.info["stage_records"][1]
    assert gias_record["holdout"] == 0.2
    winner_scored = result.info["returned_stage"] != "latent search"
    assert result.evaluations == 200 + 1 + 30 + winner_scored


def test_l1_projection_is_the_closest_point_of_the_ball():
    torch.manual_seed(0)
    deviation = torch.randn(3, 50)
    deviation[2] *= 0.01                                    # already inside
    projected = project_l1_ball(deviation, 5.0)
    norms = projected.abs().sum(1)
    assert torch.allclose(norms[:2], torch.tensor([5.0, 5.0]), atol=1e-4)
    assert torch.equal(projected[2], deviation[2])
    # soft thresholding: the same sign, every entry shrunk by one threshold or set to 0
    shrink = deviation[0].abs() - projected[0].abs()
    kept = projected[0] != 0
    assert torch.all(torch.sign(projected[0][kept]) == torch.sign(deviation[0][kept]))
    assert torch.allclose(shrink[kept], shrink[kept][0].expand(int(kept.sum())), atol=1e-5)
    assert torch.all(deviation[0][~kept].abs() <= shrink[kept][0] + 1e-6)


def test_the_plan_returns_a_generator_stage_only_when_it_lowers_the_gradient_loss(tiny_attack):
    attack, observation = tiny_attack(stages="CMA:200,gias:30,gifd:30", gias_lr=1e-3,
                                      gifd_lr=0.01)
    result = attack.reconstruct(observation)
    records = {r["stage"]: r for r in result.info["stage_records"]}
    assert set(records) == {"CMA", "gias", "gifd"}
    best_stage = min(("gias", "gifd"), key=lambda s: records[s]["best_objective"])
    latent_loss = result.info["trial_gradient_losses"][0]
    if records[best_stage]["best_objective"] < latent_loss:
        assert result.info["returned_stage"] == best_stage
        assert result.loss == pytest.approx(records[best_stage]["best_objective"])
    else:
        assert result.info["returned_stage"] == "latent search"
    assert result.evaluations == 200 + 1 + 30 + 30


def test_gifd_needs_a_generator_that_exposes_its_layers(lenet, observe, monkeypatch):
    class Opaque(torch.nn.Module):          # a generator with weights but no layer chain
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(8, 16 * 16)

        def forward(self, z):
            return torch.tanh(self.linear(z)).view(-1, 1, 16, 16)

    prior = Prior(Opaque(), name="opaque", latent_dim=8, num_classes=None, channels=1,
                  resolution=16).bind((1, 32, 32), MEAN, STD)
    observation, _, _ = observe(lenet, [7])
    calls = []
    attack = GGL(stages="CMA:100,gifd:30")
    monkeypatch.setattr(attack, "prior", lambda obs: prior)
    with pytest.raises(GGLError, match="opaque does not expose its layers"):
        attack.reconstruct(observation, lambda *args: calls.append(args))
    assert calls == []                      # refused before any evaluation
    attack = GGL(stages="CMA:100,gifd:1")
    monkeypatch.setattr(attack, "prior", lambda obs: tiny_prior())
    with pytest.raises(GGLError, match="gifd:1 is too small: gifd searches 2 feature layers"):
        attack.reconstruct(observation)


def test_cli_stage_errors_are_one_line_with_exit_code_2(tmp_path):
    result = CliRunner().invoke(cli, ["run", "--stages", "sample:100,CMAX:200", "--out",
                                      str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 2, result.output
    assert "unknown stage 'CMAX'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()
