"""The Python API mirrors the command: ``ggl.run(ggl.RunConfig(...))``."""
import pytest
import torch

import ggl
from ggl.metrics import psnr, to_unit_range


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


def test_config_validate_and_to_dict():
    config = ggl.RunConfig(attack="ig", budget=7, extra={"signed": False})
    assert config.validate() is config
    attack = config.build_attack()
    assert attack.options.budget == 7 and attack.options.signed is False
    assert config.to_dict()["budget"] == 7
    with pytest.raises(ggl.GGLError, match="batch-size"):
        ggl.RunConfig(batch_size=-3).validate()
