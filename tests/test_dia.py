"""The Dropout Inversion Attack and its oracle baseline on victims with dropout."""
import pytest
import torch

from ggl import RunConfig, run
from ggl.attacks import ATTACKS
from ggl.attacks.dia import mask_model
from ggl.dropout import supplied_masks
from ggl.errors import GGLError
from ggl.objective import GradientMatching


def test_with_p_zero_dia_is_ig_with_the_same_seed():
    """DIA on a victim without dropout reduces to IG (the command refuses such a run: it
    names no dropout to model; the attack classes are compared directly)."""
    from ggl.api import prepare

    scenario, _ = prepare(RunConfig(attack="ig", model="mlp", index=(2,), device="cpu",
                                    seed=5))
    observation, _ = scenario.observe()
    ig = ATTACKS["ig"](seed=5, budget=40, tv=1e-4).reconstruct(observation)
    dia = ATTACKS["dia"](seed=5, budget=40, tv=1e-4).reconstruct(observation)
    assert torch.equal(ig.images, dia.images)
    assert ig.loss == pytest.approx(dia.loss, rel=1e-6)


def test_masks_stay_in_the_unit_interval_with_the_layer_shapes(make_victim, observe):
    model = make_victim("mlp", dropout=0.25, width=64)
    observation, secret, _ = observe(model, [1])
    assert mask_model(observation).shapes == [tuple(m.shape) for m in secret.dropout_masks]
    attack = ATTACKS["dia"](budget=30, seed=0)
    seen = []
    original = attack._loss

    def spy(objective, observation, images, masks, labels):
        seen.append([m.detach().clone() for m in masks])
        return original(objective, observation, images, masks, labels)

    attack._loss = spy
    result = attack.reconstruct(observation)
    assert len(seen) == 31                             # 30 steps and the final score
    for masks in seen:
        assert [tuple(m.shape) for m in masks] == [(1, 64), (1, 64)]
        assert all(m.min() >= 0 and m.max() <= 1 for m in masks)
    assert not torch.equal(seen[0][0], seen[-1][0])            # the masks were optimized
    assert len(result.info["mask_drop_rates"]) == 2


def test_with_the_true_masks_the_true_image_is_a_zero_of_the_objective(make_victim, observe):
    model = make_victim("vit", dropout=0.1)
    observation, secret, _ = observe(model, [0])
    objective = GradientMatching(observation.model, observation.gradient, distance="cosine")
    with supplied_masks(observation.model, secret.dropout_masks):
        at_truth = objective(secret.images.unsqueeze(0), secret.labels).item()
    assert at_truth < 1e-6
    wrong = [torch.bernoulli(torch.full_like(m, 0.9)) for m in secret.dropout_masks]
    with supplied_masks(observation.model, wrong):
        assert objective(secret.images.unsqueeze(0), secret.labels).item() > 1e-3


def test_dia_beats_ig_on_a_small_mlp_within_a_short_budget():
    # width 256: IG (dropout off) reaches ~21 dB, DIA ~40; at width 64 IG itself gets 36 dB
    common = dict(model="mlp", width=256, dropout=0.1, index=(3,), budget=200, device="cpu")
    ig = run(RunConfig(attack="ig", **common), write=False).record["metrics"]["psnr"]
    dia = run(RunConfig(attack="dia", **common), write=False).record["metrics"]["psnr"]
    assert dia > ig + 5, (ig, dia)


def test_wiig_is_labelled_an_oracle_and_refuses_to_run_without_the_secret(make_victim, observe):
    result = run(RunConfig(attack="wiig", model="mlp", width=64, dropout=0.1, index=(3,),
                           budget=20, device="cpu"), write=False)
    assert "upper bound, not an attack" in result.record["info"]["oracle"]
    observation, _, _ = observe(make_victim("mlp", dropout=0.1, width=64), [3])
    with pytest.raises(GGLError, match="wiig is an oracle"):
        ATTACKS["wiig"](budget=5).reconstruct(observation)


def test_secret_masks_never_reach_a_real_attack(make_victim, observe, monkeypatch):
    import ggl.api
    handed = []
    original = ATTACKS["dia"].reconstruct

    def record(self, observation, progress=None):
        handed.append(getattr(self, "secret_masks", None))
        return original(self, observation, progress)

    monkeypatch.setattr(ATTACKS["dia"], "reconstruct", record)
    run(RunConfig(attack="dia", model="mlp", width=64, dropout=0.1, index=(3,), budget=5,
                  device="cpu"), write=False)
    assert handed == [None]


def test_latent_attack_models_masks_in_the_unit_interval_only_with_adam():
    common = dict(model="mlp", width=64, dropout=0.25, index=(3,), budget=30, device="cpu")
    result = run(RunConfig(attack="ggl", extra={"ng_method": "adam", "dropout_masks": "model"},
                           **common), write=False)
    info = result.record["info"]
    assert info["dropout_masks"] == "model" and info["dropout_rates"] == [0.25, 0.25]
    assert all(0 <= rate <= 1 for rate in info["mask_drop_rates"])
    assert len(info["latent"]) == 128                      # the latent only, not the masks
    with pytest.raises(GGLError, match="needs --ng_method adam, not 'CMA'"):
        run(RunConfig(attack="ggl", extra={"dropout_masks": "model"}, **common), write=False)
    with pytest.raises(GGLError, match="unknown dropout_masks 'maybe'; valid: ignore, model"):
        run(RunConfig(attack="ggl", extra={"ng_method": "adam", "dropout_masks": "maybe"},
                      **common), write=False)


def test_latent_mask_modelling_without_dropout_is_the_plain_latent_attack():
    common = dict(attack="ggl", model="mlp", width=64, index=(2,), budget=20, device="cpu")
    plain = run(RunConfig(extra={"ng_method": "adam"}, **common), write=False).record
    modelled = run(RunConfig(extra={"ng_method": "adam", "dropout_masks": "model"}, **common),
                   write=False).record
    assert modelled["info"]["mask_drop_rates"] == []
    assert modelled["loss"] == pytest.approx(plain["loss"], rel=1e-6)
    assert modelled["metrics"]["psnr"] == pytest.approx(plain["metrics"]["psnr"], rel=1e-6)
