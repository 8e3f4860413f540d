"""A frozen WGAN-GP generator runs its layers folded into matrix products
(``ggl.generators.folded``): the same images and latent gradients as its modules."""
import copy

import pytest
import torch

from ggl.generators import default_prior
from ggl.generators.prior import wgan_gp_prior
from ggl.generators.wgan_gp import WGANConfig, WGANGenerator


def module_pass(net: WGANGenerator, z, labels=None) -> torch.Tensor:
    """The generator's own modules, layer by layer (what training and GIAS run)."""
    return net.upsample(net.first_features(z, labels))


def _trained_like(net: WGANGenerator, seed: int) -> WGANGenerator:
    """``net`` with random BatchNorm statistics and affine terms, as after training (the
    fresh ones are the identity, which would not test the folding)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                size = module.num_features
                module.running_mean.copy_(torch.randn(size, generator=generator) * 0.3)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
                module.weight.copy_(1 + 0.2 * torch.randn(size, generator=generator))
                module.bias.copy_(0.2 * torch.randn(size, generator=generator))
    return net.eval().requires_grad_(False)


@pytest.mark.parametrize("channels,resolution,classes", [(1, 32, None), (3, 16, 5),
                                                         (3, 64, None)])
def test_folded_pass_equals_the_modules(channels, resolution, classes):
    torch.manual_seed(0)
    net = _trained_like(WGANGenerator(WGANConfig(channels=channels, resolution=resolution,
                                                 latent_dim=16, width=8,
                                                 num_classes=classes)), 1)
    z = torch.randn(7, 16)
    labels = torch.arange(7) % classes if classes else None
    folded = net(z, labels)
    expected = module_pass(net, z, labels)
    assert folded.shape == expected.shape == (7, channels, resolution, resolution)
    torch.testing.assert_close(folded, expected, rtol=1e-5, atol=1e-5)
    # every candidate's image is its own: a pixel put in the wrong place would differ
    assert not torch.allclose(folded[0], folded[1])


@pytest.mark.parametrize("conditional", [False, True])
def test_the_shipped_priors_draw_the_same_images_and_latent_gradients(conditional):
    prior = wgan_gp_prior(default_prior("mnist", conditional)).bind((1, 32, 32), (0.5,),
                                                                     (0.5,))
    z = prior.sample_latent(20, torch.Generator().manual_seed(3)).requires_grad_(True)
    labels = torch.arange(20) % 10 if conditional else None
    folded = prior(z, labels)
    expected = prior.to_victim(module_pass(prior.net, z, labels))
    torch.testing.assert_close(folded, expected, rtol=1e-5, atol=2e-5)
    weights = torch.randn_like(folded)          # any loss: the adam stage's gradient
    grad_folded, = torch.autograd.grad((folded * weights).sum(), z)
    grad_expected, = torch.autograd.grad((expected * weights).sum(), z)
    torch.testing.assert_close(grad_folded, grad_expected, rtol=1e-4, atol=1e-4)


def test_training_and_tuned_generators_run_their_modules(monkeypatch):
    net = _trained_like(WGANGenerator(WGANConfig(resolution=16, latent_dim=8, width=8)), 2)
    folds = []
    monkeypatch.setattr(WGANGenerator, "folded",
                        lambda self: folds.append(1) or (lambda inputs: None))
    z = torch.randn(4, 8)
    tuned = copy.deepcopy(net).requires_grad_(True)         # GIAS tunes a copy's weights
    assert tuned(z) is not None and not folds
    assert net.train()(z) is not None and not folds          # train-prior
    net.eval()(z)
    assert folds == [1]


def test_the_folding_follows_the_weights():
    net = _trained_like(WGANGenerator(WGANConfig(resolution=16, latent_dim=8, width=8)), 3)
    z = torch.randn(5, 8)
    first = net(z)
    assert net.folded() is net.folded()                       # kept while nothing changes
    with torch.no_grad():
        net.upsample[0].weight.mul_(2)                        # an in-place update
        net.upsample[1].running_var.add_(1)
    torch.testing.assert_close(net(z), module_pass(net, z), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(net(z), first)
    reloaded = _trained_like(WGANGenerator(net.config), 4)
    net.load_state_dict(reloaded.state_dict())
    torch.testing.assert_close(net(z), module_pass(reloaded, z), rtol=1e-5, atol=1e-5)
