"""Robbing the Fed (`rtf`) and the active threat model it needs.

The malicious server puts an imprint block before the victim (``ggl.imprint``); the client
computes its usual gradient of the model it received; the attack reads images off the
block's gradient in closed form. Exact where the math says so (an image alone in its
bin), and a diverged client update is one clear error.
"""
from __future__ import annotations

import pytest
import torch

from ggl import RunConfig
from ggl.api import prepare, run
from ggl.errors import GGLError
from ggl.imprint import ImprintedModel
from ggl.labels import _round_counts
from ggl.plan import resolve
from ggl.scenario import client_gradient

RTF = RunConfig(attack="rtf", model="lenet", batch_size=8, device="cpu", seed=0)


def test_the_active_server_sends_an_imprinted_model_and_the_client_is_unchanged():
    scenario, _ = prepare(resolve(RTF))
    observation, secret = scenario.observe()
    assert isinstance(observation.model, ImprintedModel)
    assert observation.server_sent["threat_model"] == "active"
    assert observation.server_sent["bins"] == 128
    expected = client_gradient(scenario.model, secret.images, secret.labels)
    assert all(torch.equal(a, b) for a, b in zip(observation.gradient, expected))
    names = [name for name, _ in observation.model.named_parameters()]
    assert names[:2] == ["block.imprint.weight", "block.imprint.bias"]


def test_rtf_recovers_every_image_alone_in_its_bin_exactly():
    result = run(RTF, write=False)
    record = result.record
    assert record["server"]["module"].startswith("Robbing the Fed's imprint block")
    assert record["info"]["bins_read"] == 8                  # 8 digits, 8 bins
    assert max(record["metrics"]["per_image"]["mse"]) < 1e-10
    assert record["metrics"]["judge_accuracy"] >= 0.75


def test_rtf_on_a_large_batch_recovers_the_images_alone_in_their_bins():
    config = RunConfig(**{**RTF.to_dict(), "batch_size": 64})
    record = run(config, write=False).record
    psnr = record["metrics"]["per_image"]["psnr"]
    exact = sum(p >= 40 for p in psnr)
    assert record["info"]["bins_read"] <= 64
    assert 20 <= exact <= record["info"]["bins_read"]
    assert sum(p < 10 for p in psnr) >= record["info"]["unfilled"]   # lost ones are gray


def test_rtf_needs_the_imprinted_model():
    from ggl.attacks.rtf import RobbingTheFed

    honest = RunConfig(**{**RTF.to_dict(), "attack": "ig-adam"})
    scenario, _ = prepare(resolve(honest))
    observation, _ = scenario.observe()
    with pytest.raises(GGLError, match="the observed model has none"):
        RobbingTheFed().reconstruct(observation)


@pytest.mark.parametrize("extra, message", [
    ({"bins": 1}, "bins must be at least 2, got 1"),
    ({"scale": 0.0}, "scale must be positive"),
    ({"statistic": "hue"}, "unknown statistic 'hue'"),
])
def test_bad_rtf_options_are_one_error(extra, message):
    with pytest.raises(GGLError, match=message):
        resolve(RunConfig(**{**RTF.to_dict(), "extra": extra}))


def test_a_client_diverging_behind_a_large_imprint_is_a_clear_error():
    """The seed's failure: with a large restoring layer, a ConvNet's local training
    explodes into NaN; rtf says so instead of returning noise."""
    config = RunConfig(attack="rtf", model="convnet", width=8, batch_size=64, device="cpu",
                       seed=0, protocol="fedavg", local_steps=5, local_batch_size=8,
                       local_lr=0.1, extra={"scale": 1e6})
    with pytest.raises(GGLError, match="the shared update is not finite"):
        run(config, write=False)


def test_label_counts_of_a_diverged_update_still_sum_to_the_batch():
    counts = _round_counts(torch.tensor([float("nan")] * 10), 64)
    assert counts.sum() == 64 and counts.min() >= 6
