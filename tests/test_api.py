"""The Python API mirrors the command: ``ggl.run(ggl.RunConfig(...))``."""
import pytest
import torch
from click.testing import CliRunner

import ggl
from ggl.cli import cli
from ggl.metrics import psnr, to_unit_range
from ggl.plan import resolve


def test_run_without_writing():
    result = ggl.run(ggl.RunConfig(attack="idlg", index=(3,), budget=5), write=False)
    assert result.out is None
    assert result.reconstruction.images.shape == (1, 1, 32, 32)
    assert torch.isfinite(result.reconstruction.images).all()
    record = result.record
    assert record["private_indices"] == [3] and record["true_labels"] == [3]
    assert record["config"]["attack"] == "idlg" and record["iterations"] == 5
    assert record["metrics"]["label_accuracy"] == 1.0
    assert record["evaluations"] == result.reconstruction.evaluations > 0
    assert "files" not in record
    assert result.observation.labels is None           # labels were not granted


def test_batch_metrics_use_the_matching(mnist):
    result = ggl.run(ggl.RunConfig(attack="idlg", index=(3,), batch_size=2, budget=3),
                     write=False)
    images = result.reconstruction.images
    assert images.shape == (2, 1, 32, 32)
    matching = result.record["metrics"]["matching"]
    assert sorted(matching) == [0, 1]
    # the recorded PSNR is that of the matched reconstruction against the private batch
    expected = psnr(to_unit_range(images[torch.tensor(matching)], mnist.mean, mnist.std),
                    to_unit_range(result.secret.images, mnist.mean, mnist.std))
    assert result.record["metrics"]["per_image"]["psnr"] == pytest.approx(expected.tolist(),
                                                                         rel=1e-5)
    assert result.record["recovered_labels"] == \
        result.reconstruction.labels[torch.tensor(matching)].tolist()


def test_run_raises_ggl_errors():
    with pytest.raises(ggl.GGLError, match="unknown attack"):
        ggl.run(ggl.RunConfig(attack="nope"), write=False)
    with pytest.raises(ggl.GGLError, match="out of range"):
        ggl.run(ggl.RunConfig(attack="idlg", index=(1000,), budget=1), write=False)


def test_config_resolves_to_a_plan_and_to_dict():
    config = ggl.RunConfig(attack="ig", budget=7, extra={"signed": False},
                           defense=("gaussian:0.1",))
    plan = resolve(config)
    assert plan.config is config
    assert plan.attack.options.budget == 7 and plan.attack.options.signed is False
    assert plan.defense_records() == [{"spec": "noise:0.1", "name": "noise", "param": 0.1,
                                       "options": {}}]
    assert config.to_dict()["budget"] == 7
    with pytest.raises(ggl.GGLError, match="batch-size"):
        resolve(ggl.RunConfig(batch_size=-3))
    with pytest.raises(ggl.GGLError, match="signed must be true or false"):
        resolve(ggl.RunConfig(attack="ig", extra={"signed": "maybe"}))


@pytest.mark.parametrize("control, runs", [("none", 1), ("random-gradient", 2)])
def test_a_run_parses_its_defense_and_builds_its_attack_once(monkeypatch, tmp_path, control,
                                                             runs):
    """`ggl run` resolves its config once: one defense parse and one attack per run (the
    control is a run of its own)."""
    import ggl.defenses as defenses
    from ggl.attacks.base import Attack

    calls = {"defense": 0, "attack": 0}
    parse, build = defenses.parse_defense, Attack.__init__

    def counted_parse(*args, **kwargs):
        calls["defense"] += 1
        return parse(*args, **kwargs)

    def counted_build(self, *args, **kwargs):
        calls["attack"] += 1
        build(self, *args, **kwargs)

    monkeypatch.setattr(defenses, "parse_defense", counted_parse)
    monkeypatch.setattr(Attack, "__init__", counted_build)
    result = CliRunner().invoke(cli, ["run", "--attack", "idlg", "--budget", "2", "--index",
                                      "0", "--defense", "noise:0.01", "--control", control,
                                      "--device", "cpu", "--quiet", "--out",
                                      str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert calls == {"defense": runs, "attack": runs}
