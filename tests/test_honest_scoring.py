"""Honest scoring: the judge, identifiability, the prior's ceiling, the search gap and the
random-gradient control."""
import json
from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner
from torch.utils.data import Subset

import ggl.judge as judge_module
from ggl.ceiling import LatentSearch, ceiling_scores, project
from ggl.cli import cli
from ggl.controls import random_gradient
from ggl.data import ImageData
from ggl.judge import (SHIPPED_JUDGES, build_gallery, load_judge, read_judge,
                       train_scoring_classifier)
from ggl.labels import infer_labels
from ggl.metrics import nearest_is_target, score
from ggl.scenario import Scenario


@pytest.fixture
def fresh_judges(monkeypatch):
    """Judges loaded in this test only (no process-wide reuse)."""
    monkeypatch.setattr(judge_module, "_LOADED", {})


def _subset(mnist, name="mnist-subset", public=400, private=100) -> ImageData:
    """A small real dataset (offline MNIST digits) with no shipped judge."""
    return replace(mnist, name=name, public=Subset(mnist.public, range(public)),
                   private=Subset(mnist.private, range(private)))


# ------------------------------------------------------------------------------ the judge
def test_judge_training_never_reads_a_private_image(mnist):
    """Training on a dataset whose private split is replaced by other images gives the same
    weights bit for bit: the private split cannot reach the judge's training."""
    real = _subset(mnist, public=256)
    poisoned_private = Subset(mnist.public, range(3000, 3100))   # other digits, same shape
    poisoned = replace(real, private=poisoned_private)
    nets = [train_scoring_classifier(data, seed=0, epochs=1, shift=2, accuracy_images=100)[0]
            for data in (real, poisoned)]
    for (name, a), (_, b) in zip(nets[0].state_dict().items(), nets[1].state_dict().items()):
        assert torch.equal(a, b), name


def test_offline_split_indices_are_disjoint_and_the_shipped_judge_says_so(mnist):
    public, private = set(mnist.public.indices), set(mnist.private.indices)
    assert not public & private
    meta = json.loads((SHIPPED_JUDGES["mnist"] / "judge.json").read_text())
    assert meta["split"] == "public" and meta["public_images_used"] == len(mnist.public)


def test_shipped_judge_is_at_least_97_percent_on_the_private_split(mnist, fresh_judges):
    judge, source = load_judge(mnist)
    assert source == "shipped" and judge.facts["refused"] == []
    images, labels = judge_module.stack_split(mnist.private)
    accuracy = (judge.predict(images) == labels).float().mean().item()
    assert accuracy >= 0.97
    assert accuracy == pytest.approx(judge.facts["private_accuracy"], abs=1e-6)


def test_a_judge_is_trained_once_then_cached(mnist, tmp_path, fresh_judges):
    data = _subset(mnist)
    judge, source = load_judge(data, cache_dir=tmp_path)
    assert source == "trained" and (tmp_path / "judges" / "mnist-subset-1x32px").is_dir()
    judge_module._LOADED.clear()
    again, source = load_judge(data, cache_dir=tmp_path)
    assert source == "cached"
    for a, b in zip(judge.net.state_dict().values(), again.net.state_dict().values()):
        assert torch.equal(a, b)


def test_a_truncated_judge_cache_is_refused_and_rebuilt(mnist, tmp_path, fresh_judges):
    data = _subset(mnist)
    load_judge(data, cache_dir=tmp_path)
    weights = tmp_path / "judges" / "mnist-subset-1x32px" / "judge.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    judge_module._LOADED.clear()
    judge, source = load_judge(data, cache_dir=tmp_path)
    assert source == "trained"
    assert any("SHA-256" in reason and "corrupt or truncated" in reason
               for reason in judge.facts["refused"])
    judge_module._LOADED.clear()
    assert load_judge(data, cache_dir=tmp_path)[1] == "cached"     # the rebuilt one


def test_a_judge_of_another_dataset_or_resolution_is_refused(mnist, tmp_path, fresh_judges):
    data = _subset(mnist)
    load_judge(data, cache_dir=tmp_path)
    folder = tmp_path / "judges" / "mnist-subset-1x32px"
    meta = json.loads((folder / "judge.json").read_text())
    (folder / "judge.json").write_text(json.dumps({**meta, "resolution": 64}))
    with pytest.raises(Exception, match="resolution 64"):
        read_judge(folder, data)
    other = _subset(mnist, public=420)           # the same name, other data: stale
    (folder / "judge.json").write_text(json.dumps(meta))
    with pytest.raises(Exception, match="fingerprint"):
        read_judge(folder, other)


def test_no_judge_for_too_many_classes_but_identifiability_still_works(mnist, make_victim,
                                                                        fresh_judges):
    data = replace(_subset(mnist), num_classes=1000)
    judge, reason = load_judge(data)
    assert judge is None and "1000 classes" in reason
    images, labels = data.private_batch([3, 4])
    gallery = build_gallery(data, None, [3, 4], images)
    scores = score(make_victim("lenet"), images, labels, images, labels, data.mean, data.std,
                   judge=None, judge_facts={"available": False, "reason": reason},
                   gallery=gallery)
    assert scores.judge_accuracy is None and scores.judge["reason"] == reason
    assert scores.identifiability == 1.0 and scores.identifiability_space == "pixels"


# ------------------------------------------------------------ judge accuracy, identifiability
def test_nearest_is_target_by_hand():
    distances = torch.tensor([[0.5, 0.1, 0.9], [0.2, 0.3, 0.1]])
    assert nearest_is_target(distances, torch.tensor([1, 0])).tolist() == [True, False]


def test_batched_matched_metrics_agree_with_hand_computed_values(mnist, make_victim):
    """B = 2, the reconstruction given in swapped order: matching undoes the swap; one
    reconstruction is the true image (judge right, identified), the other is a different
    private digit of another class (judge: that class; identified as that other image)."""
    judge, _ = load_judge(mnist)
    images, labels = mnist.private_batch([10, 11])          # classes 0 and 1
    other, other_label = mnist.private_batch([13])          # a 3
    reconstruction = torch.stack([other[0], images[0]])     # swapped order, one wrong
    gallery = build_gallery(mnist, judge, [10, 11], images)
    scores = score(make_victim("lenet"), reconstruction, labels.flip(0), images, labels,
                   mnist.mean, mnist.std, judge=judge, judge_facts=judge.facts,
                   gallery=gallery)
    assert scores.matching == [1, 0]
    judged = judge.predict(torch.stack([images[0], other[0]])).tolist()
    assert scores.per_image["judge_class"] == judged
    assert scores.per_image["judge_correct"] == [judged[0] == 0, judged[1] == 1]
    assert judged == [0, 3]
    assert scores.judge_accuracy == 0.5
    assert scores.per_image["identified_judge"] == [True, False]
    assert scores.per_image["identified_pixels"] == [True, False]
    assert scores.identifiability == 0.5 and scores.identifiability_space == "judge"


def test_gallery_appends_images_beyond_the_limit(mnist, monkeypatch):
    monkeypatch.setattr(judge_module, "GALLERY_LIMIT", 50)
    images, _ = mnist.private_batch([7, 700])
    gallery = build_gallery(mnist, None, [7, 700], images)
    assert gallery.targets.tolist() == [7, 50] and len(gallery.images) == 51
    assert torch.equal(gallery.images[50], images[1])


# ------------------------------------------------------------------ ceiling and search gap
@pytest.fixture(scope="module")
def prior():
    from ggl.generators import build_prior

    return build_prior("default-unconditional", "mnist").bind((1, 32, 32), (0.5,), (0.5,))


def test_the_ceiling_of_an_image_drawn_by_the_prior_is_nearly_exact(prior):
    latent = prior.sample_latent(1, torch.Generator().manual_seed(5))
    with torch.no_grad():
        image = prior(latent)
    _, value = project(prior, image, seed=3)
    assert value.item() >= 35


def test_search_gap_is_the_objective_found_minus_at_the_projection(mnist, prior):
    images, labels = mnist.private_batch([2])
    target, _ = project(prior, images)
    anchor = torch.zeros(1, prior.latent_dim)

    def objective(latents):                          # (P, d) -> (P,): distance to zero
        return (latents - anchor.flatten()).pow(2).sum(1)

    found = torch.randn(1, prior.latent_dim, generator=torch.Generator().manual_seed(1))
    result = ceiling_scores(LatentSearch(prior, labels, found, objective), images, [0],
                            [("test", 2)])
    expected = found.pow(2).sum().item() - target.pow(2).sum().item()
    assert result["search_gap"] == pytest.approx(expected, rel=1e-5)
    assert result["objective_found"] == pytest.approx(found.pow(2).sum().item(), rel=1e-5)
    assert result["ceiling_psnr"] >= 25


# --------------------------------------------------------------------------- the control
def _observation(mnist, make_victim, index, defenses=()):
    images, labels = mnist.private_batch([index])
    scenario = Scenario(make_victim("lenet"), images, labels, num_classes=10, mean=mnist.mean,
                        std=mnist.std, indices=[index], defenses=list(defenses), seed=0)
    return scenario.observe()[0]


@pytest.mark.parametrize("defense", [None, "compression:90"])
def test_the_control_gradient_is_independent_of_the_secret(mnist, make_victim, defense):
    from ggl.defenses import parse_defenses

    defenses = parse_defenses([defense]) if defense else []
    controls = []
    for index in (0, 1):                           # two different private digits
        observation = _observation(mnist, make_victim, index, defenses)
        control, facts = random_gradient(observation, seed=0)
        assert facts["labels"] == "inferred from the real shared gradient"
        assert torch.equal(control.labels, infer_labels(observation))
        for noise, received in zip(control.gradient, observation.gradient):
            assert noise.norm().item() == pytest.approx(received.norm().item(), rel=1e-5)
            assert int((noise == 0).sum()) == int((received == 0).sum())
        controls.append(control)
    for a, b in zip(controls[0].gradient, controls[1].gradient):
        assert torch.allclose(a / a.norm(), b / b.norm(), atol=1e-6)
        assert torch.equal(a == 0, b == 0)


def test_run_records_the_control_and_the_ceiling_is_not_applicable_to_pixel_attacks():
    from ggl import RunConfig, run

    result = run(RunConfig(attack="idlg", index=(3,), budget=3, control="random-gradient"),
                 write=False)
    assert result.record["control"]["kind"] == "random-gradient"
    metrics = result.record["metrics"]
    assert metrics["ceiling_psnr"] is None and metrics["search_gap"] is None
    assert metrics["ceiling_note"].startswith("not applicable")
    assert metrics["judge"]["source"] == "shipped"
    assert metrics["judge_accuracy"] in (0.0, 1.0)


# ------------------------------------------------------------------------- bad input, CLI
def _invoke(*args):
    return CliRunner().invoke(cli, list(args))


def test_an_unknown_control_is_one_clear_error(tmp_path):
    result = _invoke("run", "--control", "noise", "--out", str(tmp_path / "x"), "--quiet")
    assert result.exit_code == 2 and result.output.count("Error: ") == 1
    assert "unknown control 'noise'" in result.output and "random-gradient" in result.output
    assert not (tmp_path / "x").exists()


def test_an_unknown_control_in_a_sweep_names_the_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("grid:\n  attack: [idlg]\n  control: [none, shuffled]\n")
    result = _invoke("sweep", str(config), "--out", str(tmp_path / "store"))
    assert result.exit_code == 2 and "bad.yaml:3" in result.output
    assert "unknown control 'shuffled'" in result.output


def test_ggl_run_prints_the_judge_the_ceiling_and_the_control(tmp_path):
    out = tmp_path / "run"
    result = _invoke("run", "--ng_method", "CMA", "--budget", "100", "--index", "3",
                     "--out", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    assert "judge sees a" in result.output and "prior ceiling" in result.output
    assert "random-gradient control" in result.output and "leak over control" in result.output
    record = json.loads((out / "run.json").read_text())
    control = json.loads((out / "control" / "run.json").read_text())
    assert control["config"]["control"] == "random-gradient"
    comparison = record["control_comparison"]
    assert comparison["leak_over_control"]["psnr"] == pytest.approx(
        record["metrics"]["psnr"] - control["metrics"]["psnr"])
    assert record["metrics"]["search_gap"] == pytest.approx(
        record["metrics"]["search"]["objective_found"]
        - record["metrics"]["search"]["objective_ceiling"])


def test_the_report_shows_the_control_beside_its_attack_and_the_paired_leak():
    from ggl.study.report.records import Entry, describe
    from ggl.study.report.tables import summary_rows, table_cells

    def entry(index, control, psnr, judge):
        config = {"attack": "ggl", "defense": [], "index": [index], "seed": 0,
                  "control": control}
        return Entry(cell_id=f"{index}{control}", status="done", config=config,
                     values={"psnr": psnr, "judge_accuracy": judge, "identifiability": judge})

    entries = [entry(0, "none", 20.0, 1.0), entry(0, "random-gradient", 12.0, 0.0),
               entry(1, "none", 18.0, 1.0), entry(1, "random-gradient", 14.0, 1.0)]
    describe(entries)
    rows = summary_rows(entries)
    assert len(rows) == 1                         # the control sits in its attack's row
    header, body = table_cells(rows)
    cells = dict(zip(header, body[0]))
    assert cells["PSNR (dB)"] == "19.00 ± 1.41"
    assert cells["control PSNR (dB)"] == "13.00 ± 1.41"
    assert cells["leak PSNR (dB)"] == "6.00 ± 2.83"            # (20-12, 18-14)
    assert cells["leak judge (points)"] == "50.0 ± 70.7"       # (100, 0) points
    assert entries[1].line != entries[0].line    # but a line of its own in the figures


def test_identifiability_in_lpips_space_when_its_weights_are_given(mnist, tmp_path,
                                                                   monkeypatch):
    """The plumbing only (a random AlexNet stands in for the real weights): a
    reconstruction equal to its private image is nearest to it in every space."""
    pytest.importorskip("lpips")
    import torchvision

    from ggl.metrics import LPIPS, identifiability, to_unit_range

    monkeypatch.setattr(judge_module, "GALLERY_LIMIT", 40)
    path = tmp_path / "alexnet.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    images, _ = mnist.private_batch([5, 30])
    gallery = build_gallery(mnist, None, [5, 30], images)
    found = identifiability(to_unit_range(images, mnist.mean, mnist.std), images, gallery,
                            mnist.mean, mnist.std, lpips_metric=LPIPS(path))
    assert found == {"pixels": [True, True], "lpips": [True, True]}
