"""Victims with dropout: the client's masks are drawn, recorded in the Secret and nowhere else."""
import pytest
import torch
from click.testing import CliRunner

from ggl import RunConfig
from ggl.cli import cli
from ggl.dropout import MaskedDropout, dropout_layers, supplied_masks
from ggl.errors import GGLError
from ggl.plan import resolve
from ggl.scenario import client_gradient

#: model -> the activation shape of each dropout layer for one 1x32x32 image (B = 1)
DROPOUT_SHAPES = {
    "lenet": [(768,)],
    "convnet": [(2048,)],
    "mlp": [(512,), (512,)],
    "resnet18": [(64,)],                     # width 8: the last stage pools 8 x 8 channels
    "vit": [(4, 65, 65), (65, 64), (65, 128), (65, 64)] * 4,
}


def _victim(make_victim, name, p):
    return make_victim(name, dropout=p, **({"width": 8} if name == "resnet18" else {}))


@pytest.mark.parametrize("name", ["lenet", "convnet", "mlp", "resnet18", "vit"])
def test_client_masks_are_binary_with_the_layer_shapes_and_reproduce_the_gradient(
        make_victim, observe, name):
    model = _victim(make_victim, name, 0.25)
    observation, secret, _ = observe(model, [3, 4])
    expected = [(2, *shape) for shape in DROPOUT_SHAPES[name]]
    assert [tuple(m.shape) for m in secret.dropout_masks] == expected
    for mask in secret.dropout_masks:
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
    # the true masks make the server's copy give exactly the shared gradient
    with supplied_masks(observation.model, secret.dropout_masks):
        replayed = client_gradient(observation.model, secret.images, secret.labels)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(replayed, observation.gradient))
    # other masks do not
    flipped = [1 - m for m in secret.dropout_masks]
    with supplied_masks(observation.model, flipped):
        other = client_gradient(observation.model, secret.images, secret.labels)
    assert not all(torch.allclose(a, b, atol=1e-6) for a, b in zip(other, observation.gradient))


def test_masks_drop_at_the_rate_and_never_reach_the_observation(make_victim, observe):
    model = make_victim("vit", dropout=0.25)
    observation, secret, _ = observe(model, [0])
    kept = torch.cat([m.flatten() for m in secret.dropout_masks]).mean().item()
    assert kept == pytest.approx(0.75, abs=0.01)           # ~73,000 draws
    assert not any("mask" in field for field in observation.__dataclass_fields__)
    # the server's copy never ran the client's forward pass: it holds no recorded mask
    assert all(layer.recorded is None for layer in dropout_layers(observation.model))
    # and its dropout is off: an attack that ignores dropout evaluates the deployed model
    assert not any(layer.training for layer in dropout_layers(observation.model))


def test_dropout_is_on_for_the_client_while_batchnorm_keeps_eval_mode(make_victim, observe):
    model = make_victim("convnet", dropout=0.5)            # built in eval mode
    observation, secret, _ = observe(model, [1])
    assert len(secret.dropout_masks) == 1
    batchnorms = [m for m in observation.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert batchnorms and not any(m.training for m in batchnorms)


def test_without_dropout_there_are_no_masks_and_the_gradient_is_deterministic(make_victim,
                                                                                observe):
    model = make_victim("mlp")
    first, secret, _ = observe(model, [2])
    second, _, _ = observe(model, [2])
    assert secret.dropout_masks == () and dropout_layers(model) == []
    assert all(torch.equal(a, b) for a, b in zip(first.gradient, second.gradient))


def test_a_supplied_mask_of_the_wrong_shape_or_count_is_refused(make_victim, mnist):
    model = make_victim("mlp", dropout=0.1).train()
    images, _ = mnist.private_batch([0])
    with pytest.raises(GGLError, match="got 1 dropout masks for 2 dropout layers"):
        with supplied_masks(model, [torch.ones(1, 512)]):
            pass
    with pytest.raises(GGLError, match=r"shape \(1, 10\) but the layer's activation is"):
        with supplied_masks(model, [torch.ones(1, 10), torch.ones(1, 512)]):
            model(images)
    assert all(layer.supplied is None for layer in dropout_layers(model))   # restored


@pytest.mark.parametrize("rate", ["1", "-0.1", "1.5"])
def test_bad_dropout_rate_is_one_clear_error(rate):
    result = CliRunner().invoke(cli, ["run", "--model", "mlp", "--dropout", rate, "--quiet"])
    assert result.exit_code != 0
    assert "--dropout must be a rate in [0, 1)" in result.output
    # caught by the config's own check, before any data or model is loaded (sweeps too)
    with pytest.raises(GGLError, match=r"--dropout must be a rate in \[0, 1\)"):
        resolve(RunConfig(model="mlp", dropout=float(rate)))


def test_dropout_layer_is_identity_in_eval_mode_and_at_rate_zero():
    x = torch.randn(3, 7)
    assert torch.equal(MaskedDropout(0.5).eval()(x), x)
    assert torch.equal(MaskedDropout(0.0).train()(x), x)
