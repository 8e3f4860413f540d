"""Metrics against hand-computed values: MSE, PSNR, SSIM, range conversion, matching, labels."""
import math

import pytest
import torch

from ggl.errors import GGLError
from ggl.metrics import (LPIPS, label_accuracy, label_set_accuracy, match, mse, psnr, score,
                         ssim, to_unit_range)


def test_mse_and_psnr_of_constant_images():
    zeros = torch.zeros(1, 1, 4, 4)
    tenths = torch.full((1, 1, 4, 4), 0.1)
    assert mse(zeros, tenths).item() == pytest.approx(0.01, rel=1e-5)
    assert psnr(zeros, tenths).item() == pytest.approx(20.0, abs=1e-3)


def test_mse_and_psnr_are_per_image():
    x = torch.zeros(3, 1, 2, 2)
    y = torch.stack([torch.full((1, 2, 2), v) for v in (0.1, 0.01, 0.5)])
    assert mse(x, y).tolist() == pytest.approx([0.01, 1e-4, 0.25], rel=1e-5)
    # PSNR = 10 log10(1 / MSE)
    assert psnr(x, y).tolist() == pytest.approx([20.0, 40.0, 10 * math.log10(4)], abs=1e-3)


def test_mse_of_half_changed_image():
    x = torch.zeros(1, 1, 2, 2)
    y = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])       # two of four pixels differ by 1
    assert mse(x, y).item() == pytest.approx(0.5)
    assert psnr(x, y).item() == pytest.approx(10 * math.log10(2), abs=1e-4)


def test_psnr_of_identical_images_is_finite_and_high():
    x = torch.rand(2, 1, 8, 8)
    value = psnr(x, x)
    assert torch.isfinite(value).all()
    assert (value >= 99).all()          # MSE clamped at 1e-10 -> 100 dB


def test_to_unit_range_maps_normalized_box_to_unit_and_clamps():
    images = torch.tensor([-1.0, 0.0, 1.0, -3.0, 2.5]).view(1, 1, 1, 5)
    out = to_unit_range(images, (0.5,), (0.5,))
    assert out.flatten().tolist() == pytest.approx([0.0, 0.5, 1.0, 0.0, 1.0])


def test_to_unit_range_is_per_channel():
    images = torch.zeros(1, 3, 1, 1)
    out = to_unit_range(images, (0.1, 0.2, 0.3), (1.0, 1.0, 1.0))
    assert out.flatten().tolist() == pytest.approx([0.1, 0.2, 0.3])
    out = to_unit_range(torch.ones(1, 2, 1, 1), (0.0, 0.0), (0.25, 0.5))
    assert out.flatten().tolist() == pytest.approx([0.25, 0.5])


def test_ssim_identical_is_one_and_different_is_lower(mnist):
    images = torch.stack([mnist.private[i][0] for i in (0, 1)])
    images01 = to_unit_range(images, mnist.mean, mnist.std)
    same = ssim(images01, images01)
    assert same.shape == (2,)
    assert same.tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    other = ssim(images01, images01.flip(0))      # digit 0 vs digit 1 and vice versa
    assert (other < 0.9).all()
    noisy = (images01 + 0.2 * torch.randn(images01.shape, generator=torch.Generator()
                                          .manual_seed(0))).clamp(0, 1)
    assert (ssim(noisy, images01) < same - 0.05).all()


def test_match_recovers_known_permutation():
    generator = torch.Generator().manual_seed(0)
    originals = torch.rand(5, 1, 6, 6, generator=generator)
    shuffle = torch.tensor([3, 0, 4, 1, 2])
    reconstruction = originals[shuffle] + 0.01 * torch.rand(5, 1, 6, 6, generator=generator)
    perm = match(reconstruction, originals)
    # reconstruction[perm[i]] belongs to original[i]: perm is the inverse of the shuffle
    assert perm.tolist() == torch.argsort(shuffle).tolist()
    assert torch.allclose(reconstruction[perm], originals, atol=0.011)


def test_match_identity_for_aligned_batch():
    originals = torch.rand(4, 1, 3, 3, generator=torch.Generator().manual_seed(1))
    assert match(originals, originals).tolist() == [0, 1, 2, 3]


def test_label_accuracy():
    assert label_accuracy(torch.tensor([1, 2, 3, 4]), torch.tensor([1, 2, 0, 4])) == 0.75
    assert label_accuracy(torch.tensor([5]), torch.tensor([5])) == 1.0
    assert label_accuracy(torch.tensor([0, 1]), torch.tensor([1, 0])) == 0.0


def test_label_set_accuracy_ignores_order_but_counts_multiplicity():
    assert label_set_accuracy(torch.tensor([0, 1]), torch.tensor([1, 0])) == 1.0
    # multiset {1, 1, 2} vs {1, 2, 2}: intersection {1, 2} -> 2 / 3
    assert label_set_accuracy(torch.tensor([1, 1, 2]), torch.tensor([2, 1, 2])) == \
        pytest.approx(2 / 3)
    # predicted labels beyond the true ones' range
    assert label_set_accuracy(torch.tensor([9, 0]), torch.tensor([0, 3])) == 0.5
    assert label_set_accuracy(torch.tensor([7, 7]), torch.tensor([1, 2])) == 0.0


def test_score_on_permuted_batch_is_perfect(mnist, lenet):
    indices = [0, 1, 2, 3]
    originals, labels = mnist.private_batch(indices)
    shuffle = torch.tensor([2, 3, 1, 0])
    scores = score(lenet, originals[shuffle], labels[shuffle], originals, labels,
                   mnist.mean, mnist.std)
    assert scores.matching == torch.argsort(shuffle).tolist()
    assert scores.mse == pytest.approx(0.0, abs=1e-12)
    assert scores.psnr >= 99.0
    assert scores.ssim == pytest.approx(1.0, abs=1e-5)
    assert scores.label_accuracy == 1.0
    assert scores.feature_mse == pytest.approx(0.0, abs=1e-12)
    assert len(scores.per_image["psnr"]) == 4


def test_score_labels_follow_the_matching(mnist, lenet):
    """Labels NOT permuted with their images are counted wrong after matching."""
    originals, labels = mnist.private_batch([0, 1, 2, 3])     # labels 0, 1, 2, 3
    shuffle = torch.tensor([1, 0, 3, 2])
    scores = score(lenet, originals[shuffle], labels, originals, labels, mnist.mean, mnist.std)
    assert scores.psnr >= 99.0
    assert scores.label_accuracy == 0.0


def test_score_of_bad_reconstruction(mnist, lenet):
    originals, labels = mnist.private_batch([5])
    gray = torch.zeros_like(originals)          # 0 in [-1, 1] is 0.5 in [0, 1]
    scores = score(lenet, gray, labels, originals, labels, mnist.mean, mnist.std)
    expected = mse(torch.full_like(originals, 0.5),
                   to_unit_range(originals, mnist.mean, mnist.std)).item()
    assert scores.mse == pytest.approx(expected, rel=1e-5)
    assert scores.psnr == pytest.approx(10 * math.log10(1 / expected), abs=1e-3)
    assert scores.ssim < 0.5


def test_score_without_lpips_reports_none_with_note(mnist, lenet):
    originals, labels = mnist.private_batch([0])
    scores = score(lenet, originals, labels, originals, labels, mnist.mean, mnist.std)
    assert scores.lpips is None
    assert "unavailable" in scores.lpips_note
    assert "lpips" not in scores.per_image


def test_lpips_without_backbone_weights_is_a_user_error():
    with pytest.raises(GGLError, match="nonexistent"):
        LPIPS("/nonexistent")


def test_lpips_loads_a_local_alexnet_state_dict_into_its_backbone(tmp_path):
    """The plumbing only: a randomly initialised AlexNet file stands in for the real weights
    (which cannot be downloaded here). Its numbers are never reported as LPIPS."""
    pytest.importorskip("lpips")
    import torchvision

    state = torchvision.models.alexnet(weights=None).state_dict()
    path = tmp_path / "alexnet.pth"
    torch.save(state, path)
    metric = LPIPS(path)
    assert torch.equal(getattr(metric.net.net.slice1, "0").weight, state["features.0.weight"])
    assert torch.equal(getattr(metric.net.net.slice5, "10").weight, state["features.10.weight"])
    x, y = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    assert torch.allclose(metric(x, x), torch.zeros(2), atol=1e-6)
    assert (metric(x, y) > 0).all()


def test_lpips_rejects_a_file_that_is_not_alexnet(tmp_path):
    pytest.importorskip("lpips")
    path = tmp_path / "mlp.pth"
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    with pytest.raises(GGLError, match="not a readable torchvision AlexNet"):
        LPIPS(path)
