"""Gradient matching: batched (vmap) vs one-at-a-time (loop), distances, weights, priors."""
import math
import os
import platform
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from ggl.errors import GGLError
from ggl.objective import (DISTANCES, GradientMatching, layer_weights, total_variation,
                           vmappable)
from ggl.scenario import client_gradient

MODELS = [("lenet", None), ("mlp", None), ("convnet", 8)]
P, B = 3, 2


@pytest.fixture(scope="module")
def private_pair(mnist):
    return mnist.private_batch([0, 1])


def _candidates(seed=0):
    return torch.randn(P, B, 1, 32, 32, generator=torch.Generator().manual_seed(seed))


def _loss_and_grad(objective, candidates, labels):
    images = candidates.clone().requires_grad_(True)
    losses = objective(images, labels)
    grad, = torch.autograd.grad(losses.sum(), images)
    return losses.detach(), grad


def _assert_paths_agree(model, target, candidates, labels, distance):
    loop = GradientMatching(model, target, distance=distance, path="loop")
    vmap = GradientMatching(model, target, distance=distance, path="vmap")
    loop_loss, loop_grad = _loss_and_grad(loop, candidates, labels)
    vmap_loss, vmap_grad = _loss_and_grad(vmap, candidates, labels)
    assert loop_loss.shape == vmap_loss.shape == (P,)
    assert torch.isfinite(loop_loss).all() and (loop_loss > 0).all()
    # the candidates differ, so their losses do: a path that mixed them up would fail
    assert len(set(loop_loss.tolist())) == P
    scale = loop_loss.abs().max().item()
    torch.testing.assert_close(vmap_loss, loop_loss, rtol=1e-4, atol=1e-5 * scale)
    grad_scale = loop_grad.abs().max().item()
    assert grad_scale > 0
    torch.testing.assert_close(vmap_grad, loop_grad, rtol=1e-3, atol=1e-4 * grad_scale)
    assert loop.evaluations == vmap.evaluations == P


@pytest.mark.parametrize("distance", sorted(DISTANCES))
@pytest.mark.parametrize("name,width", MODELS, ids=[m for m, _ in MODELS])
def test_vmap_and_loop_paths_agree(make_victim, private_pair, name, width, distance):
    model = make_victim(name, width=width)
    images, labels = private_pair
    target = client_gradient(model, images, labels)
    _assert_paths_agree(model, target, _candidates(), labels, distance)


def test_paths_agree_with_per_candidate_labels(lenet, private_pair):
    images, labels = private_pair
    target = client_gradient(lenet, images, labels)
    per_candidate = torch.tensor([[0, 1], [3, 4], [1, 0]])                 # (P, B) indices
    _assert_paths_agree(lenet, target, _candidates(1), per_candidate, "l2")
    soft = torch.softmax(torch.randn(P, B, 10, generator=torch.Generator().manual_seed(2)), -1)
    _assert_paths_agree(lenet, target, _candidates(2), soft, "cosine")       # (P, B, K)


@pytest.mark.parametrize("name,width", MODELS, ids=[m for m, _ in MODELS])
def test_true_batch_is_a_zero_loss_point(make_victim, private_pair, name, width):
    model = make_victim(name, width=width)
    images, labels = private_pair
    target = client_gradient(model, images, labels)
    truth = images.unsqueeze(0)                                             # P = 1
    for path in ("loop", "vmap"):
        l2 = GradientMatching(model, target, distance="l2", path=path)
        assert l2(truth, labels).item() < 1e-10
        cos = GradientMatching(model, target, distance="cosine", path=path)
        assert abs(cos(truth, labels).item()) < 1e-5
    # and a random candidate is not
    assert GradientMatching(model, target, distance="l2")(_candidates()[:1], labels).item() > 1e-6


def test_soft_one_hot_labels_equal_hard_labels_also_when_p_equals_b(lenet, private_pair):
    """Shared soft labels ``(B, K)`` mean the same as class indices ``(B,)``, for any P."""
    images, labels = private_pair
    target = client_gradient(lenet, images, labels)
    one_hot = F.one_hot(labels, 10).float()
    for path in ("loop", "vmap"):
        objective = GradientMatching(lenet, target, distance="l2", path=path)
        for num in (1, 2, 3):                       # P = 2 == B is the ambiguous shape
            candidates = images.unsqueeze(0).expand(num, *images.shape)
            hard = objective(candidates, labels)
            soft = objective(candidates, one_hot)
            assert hard.max().item() < 1e-10
            torch.testing.assert_close(soft, hard, atol=1e-9, rtol=0)


# --------------------------------------------------------------------------- distances by hand
@pytest.fixture
def hand_gradients():
    a = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])     # layer 0: (2, 3)
    b = torch.tensor([2.0, -1.0, 0.0, 1.0])                      # layer 1: (4,)
    target = [a, b]
    # candidates: the target itself, its negative, twice it, (a, -b)
    trial = [torch.stack([a, -a, 2 * a, a]), torch.stack([b, -b, 2 * b, -b])]
    return trial, target, a, b


def test_squared_l2_by_hand(hand_gradients):
    trial, target, a, b = hand_gradients
    sq_a, sq_b = a.pow(2).sum().item(), b.pow(2).sum().item()     # 15.25, 6
    ones = torch.ones(2)
    out = DISTANCES["l2"](trial, target, ones)
    assert out.tolist() == pytest.approx([0, 4 * (sq_a + sq_b), sq_a + sq_b, 4 * sq_b])
    out = DISTANCES["l2"](trial, target, torch.tensor([1.0, 0.0]))      # weights apply
    assert out.tolist() == pytest.approx([0, 4 * sq_a, sq_a, 0])


def test_l1_by_hand(hand_gradients):
    trial, target, a, b = hand_gradients
    abs_a, abs_b = a.abs().sum().item(), b.abs().sum().item()     # 7.5, 4
    out = DISTANCES["l1"](trial, target, torch.tensor([0.5, 2.0]))
    assert out.tolist() == pytest.approx([0, 2 * (0.5 * abs_a + 2 * abs_b),
                                          0.5 * abs_a + 2 * abs_b, 2 * 2 * abs_b])


def test_cosine_by_hand(hand_gradients):
    trial, target, a, b = hand_gradients
    sq_a, sq_b = a.pow(2).sum().item(), b.pow(2).sum().item()
    out = DISTANCES["cosine"](trial, target, torch.ones(2))
    # itself 0, negative 2, scaled 0, one layer flipped: 1 - (|a|^2 - |b|^2) / (|a|^2 + |b|^2)
    assert out.tolist() == pytest.approx([0, 2, 0, 1 - (sq_a - sq_b) / (sq_a + sq_b)],
                                         abs=1e-6)
    # weighted inner product: only layer 1 counts -> (a, -b) is opposite
    out = DISTANCES["cosine"](trial, target, torch.tensor([0.0, 1.0]))
    assert out.tolist() == pytest.approx([0, 2, 0, 2], abs=1e-6)


def test_layer_cosine_by_hand(hand_gradients):
    trial, target, _, _ = hand_gradients
    out = DISTANCES["layer-cosine"](trial, target, torch.tensor([0.5, 0.5]))
    assert out.tolist() == pytest.approx([0, 2, 0, 1], abs=1e-6)
    out = DISTANCES["layer-cosine"](trial, target, torch.tensor([1.0, 3.0]))
    assert out.tolist() == pytest.approx([0, 8, 0, 6], abs=1e-6)


def test_cosine_of_orthogonal_gradients_is_one():
    target = [torch.tensor([1.0, 0.0])]
    trial = [torch.tensor([[0.0, 5.0]])]
    assert DISTANCES["cosine"](trial, target, torch.ones(1)).item() == pytest.approx(1.0)
    assert DISTANCES["layer-cosine"](trial, target, torch.ones(1)).item() == pytest.approx(1.0)


# --------------------------------------------------------------------------- layer weights
@pytest.mark.parametrize("count", [1, 4, 10, 62])
def test_mean_and_sum_layer_weights(count):
    mean = layer_weights("mean", count)
    assert mean.shape == (count,)
    assert mean.sum().item() == pytest.approx(1.0)
    assert torch.allclose(mean, torch.full((count,), 1 / count))
    assert torch.equal(layer_weights("sum", count), torch.ones(count))


def test_exponential_layer_weights():
    weights = layer_weights("exponential", 10)
    assert weights.shape == (10,)
    expected = torch.tensor([1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125]) / 10
    assert torch.allclose(weights, expected)
    assert (weights[1:] <= weights[:-1]).all()            # shallow layers weigh most
    long = layer_weights("exponential", 70)              # halving stops after 20 groups of 3
    assert long[0].item() == pytest.approx(1 / 70)
    assert long[57:60].tolist() == pytest.approx([1 / 70 / 2 ** 19] * 3)
    assert torch.allclose(long[60:], torch.full((10,), 1 / 70))


def test_unknown_layer_weights_is_a_user_error():
    with pytest.raises(GGLError, match="exponential"):
        layer_weights("bogus", 4)


# --------------------------------------------------------------------------- priors
def test_total_variation_by_hand():
    image = torch.tensor([[0.0, 1.0, 3.0],
                          [0.0, 0.0, 0.0],
                          [2.0, 2.0, 2.0]])
    flat = torch.zeros(3, 3)
    images = torch.stack([image, flat]).view(2, 1, 1, 3, 3)        # P = 2, B = 1, C = 1
    # |dx| = [1, 2, 0, 0, 0, 0] -> mean 0.5; |dy| = [0, 1, 3, 2, 2, 2] -> mean 10/6
    tv = total_variation(images)
    assert tv.shape == (2,)
    assert tv.tolist() == pytest.approx([0.5 + 10 / 6, 0.0])


def test_tv_weight_is_added_to_the_loss(lenet, private_pair):
    images, labels = private_pair
    target = client_gradient(lenet, images, labels)
    candidates = _candidates()
    plain = GradientMatching(lenet, target, distance="l2")(candidates, labels)
    with_tv = GradientMatching(lenet, target, distance="l2", tv=0.5)(candidates, labels)
    torch.testing.assert_close(with_tv - plain, 0.5 * total_variation(candidates))


# --------------------------------------------------------------------------- errors
def test_unknown_distance_lists_valid_names(lenet, private_pair):
    images, labels = private_pair
    target = client_gradient(lenet, images, labels)
    with pytest.raises(GGLError) as err:
        GradientMatching(lenet, target, distance="euclid")
    assert "euclid" in str(err.value)
    for name in DISTANCES:
        assert name in str(err.value)


def test_vmap_path_refuses_train_mode_batchnorm(make_victim, private_pair):
    model = make_victim("convnet", width=8, mode="train")
    assert not vmappable(model)
    images, labels = private_pair
    target = client_gradient(model, images, labels)
    with pytest.raises(GGLError, match="vmap"):
        GradientMatching(model, target, path="vmap")
    auto = GradientMatching(model, target, path="auto")
    assert auto.choose_path(P) == "loop"
    assert torch.isfinite(auto(_candidates(), labels)).all()


def test_eval_batchnorm_is_vmappable(make_victim):
    assert vmappable(make_victim("convnet", width=8))
    assert vmappable(make_victim("lenet"))


def test_gradient_of_wrong_model_is_a_user_error(make_victim, private_pair):
    images, labels = private_pair
    mlp_gradient = client_gradient(make_victim("mlp"), images, labels)
    with pytest.raises(GGLError, match="does not match"):
        GradientMatching(make_victim("lenet"), mlp_gradient)


def test_unknown_path_and_bad_candidate_shape(lenet, private_pair):
    images, labels = private_pair
    target = client_gradient(lenet, images, labels)
    with pytest.raises(GGLError, match="loop"):
        GradientMatching(lenet, target, path="sideways")
    with pytest.raises(GGLError, match=r"\(P, B, C, H, W\)"):
        GradientMatching(lenet, target)(images, labels)          # 4-D, missing P


def test_evaluations_count_candidates(lenet, private_pair):
    images, labels = private_pair
    objective = GradientMatching(lenet, client_gradient(lenet, images, labels))
    objective(_candidates(), labels)
    objective(_candidates()[:1], labels)
    assert objective.evaluations == P + 1
    assert math.isfinite(objective(_candidates()[:1], labels).item())


# --------------------------------------------------------------------------- overwriting distances
@pytest.mark.parametrize("name", ["l2", "l1"])
def test_overwriting_twins_give_the_same_numbers(name):
    generator = torch.Generator().manual_seed(0)
    target = [torch.randn(6, 5, generator=generator), torch.randn(7, generator=generator)]
    trial = [torch.randn(4, 6, 5, generator=generator), torch.randn(4, 7, generator=generator)]
    weights = torch.tensor([0.3, 2.0])
    distance = DISTANCES[name]
    expected = distance(trial, target, weights)
    scratch = [t.clone() for t in trial]
    assert torch.equal(distance.overwriting(scratch, target, weights), expected)
    assert not torch.equal(scratch[0], trial[0])           # it did work in their memory


def test_matching_overwrites_only_its_own_scratch(lenet, private_pair, monkeypatch):
    images, labels = private_pair
    target = client_gradient(lenet, images, labels)
    candidates = _candidates()
    objective = GradientMatching(lenet, target, distance="l2", path="vmap")
    overwriting = DISTANCES["l2"].overwriting
    calls = []
    monkeypatch.setattr(DISTANCES["l2"], "overwriting",
                        lambda *args: calls.append(1) or overwriting(*args))
    trial = objective.trial_gradients(candidates, labels)
    expected = DISTANCES["l2"](trial, target, objective.weights)
    with torch.no_grad():                    # a black-box search's call: scratch gradients
        torch.testing.assert_close(objective(candidates, labels), expected)
    assert calls == [1]
    loss, _ = _loss_and_grad(objective, candidates, labels)     # a graph through them
    torch.testing.assert_close(loss, expected)
    assert calls == [1]


def test_a_distance_built_on_l2_sees_the_trial_gradients_unchanged(lenet, private_pair):
    from ggl.attacks.grnn import with_norm          # GRNN: ||d||^2 + ||d|| of one trial

    images, labels = private_pair
    target = client_gradient(lenet, images, labels)
    candidates = _candidates()
    combined = GradientMatching(lenet, target, distance=with_norm(DISTANCES["l2"], 1.0))
    plain = GradientMatching(lenet, target, distance="l2")
    with torch.no_grad():
        squared = plain(candidates, labels)
        torch.testing.assert_close(combined(candidates, labels), squared + squared.sqrt())


def test_cpu_chunks_keep_every_gradient_buffer_in_the_heap(make_victim):
    from ggl.objective import HEAP_BLOCK_BYTES

    for name, expected in (("resnet18", 3), ("lenet", 50)):
        model = make_victim(name)
        objective = GradientMatching(model, [torch.zeros_like(p) for p in model.parameters()])
        chunk = objective._auto_chunk(50)
        largest = max(p.numel() for p in model.parameters()) * 4
        assert chunk == expected and chunk * largest <= HEAP_BLOCK_BYTES


def test_keep_freed_memory_is_applied_once_and_can_be_left_out():
    code = "from ggl.allocator import keep_freed_memory as k; print(k(), k())"
    glibc = str(platform.libc_ver()[0] == "glibc")
    for env, expected in (({}, [glibc, glibc]), ({"GGL_MALLOC": "default"}, ["False"] * 2)):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                env={**os.environ, **env})
        assert result.stdout.split() == expected, result.stderr
