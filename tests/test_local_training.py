"""FedAvg local training: the simulated client equals torch's own SGD, FedSGD is its special
case, and the simulation is differentiable with respect to the images."""
import copy

import pytest
import torch
import torch.nn.functional as F

from ggl.errors import GGLError
from ggl.local_training import LocalTraining, simulate_update
from ggl.models import build_victim
from ggl.scenario import client_gradient


@pytest.fixture(scope="module")
def batch(mnist):
    images, labels = mnist.private_batch(list(range(5)))
    model = build_victim("lenet", 1, 32, 10, seed=0)
    return model, images, labels


@pytest.mark.parametrize("momentum, weight_decay", [(0.0, 0.0), (0.9, 1e-3)])
def test_simulation_equals_torch_sgd(batch, momentum, weight_decay):
    """E = 2 epochs, B = 2 (steps of 2, 2, 1 images), with and without momentum and weight
    decay: bit for bit the update of torch.optim.SGD stepping a copy of the model over the
    same batches."""
    model, images, labels = batch
    training = LocalTraining(epochs=2, batch_size=2, lr=0.05, momentum=momentum,
                             weight_decay=weight_decay)
    order = training.batch_order(len(labels), torch.Generator().manual_seed(3))
    assert len(order) == training.num_steps(5) == 6 and sorted(sum(order[:3], [])) == list(range(5))
    update = simulate_update(model, images, labels, training, order)

    trained = copy.deepcopy(model)
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.05, momentum=momentum,
                                weight_decay=weight_decay)
    for step in order:
        optimizer.zero_grad()
        F.cross_entropy(trained(images[step]), labels[step]).backward()
        optimizer.step()
    for delta, before, after in zip(update, model.parameters(), trained.parameters()):
        assert torch.equal(delta, before.detach() - after.detach())
    assert any(delta.abs().max() > 1e-4 for delta in update)


def test_fedsgd_is_the_special_case(batch):
    """E = 1 and B = N: the update over the learning rate is the batch's gradient."""
    model, images, labels = batch
    training = LocalTraining(epochs=1, batch_size=None, lr=0.1)
    order = training.batch_order(5, torch.Generator().manual_seed(0))
    update = simulate_update(model, images, labels, training, order)
    for delta, gradient in zip(update, client_gradient(model, images, labels)):
        assert torch.allclose(delta / 0.1, gradient, atol=1e-5)


def test_the_update_is_differentiable_in_the_images(batch):
    model, images, labels = batch
    training = LocalTraining(epochs=2, batch_size=3, lr=0.1)
    order = training.batch_order(5, torch.Generator().manual_seed(0))
    candidate = torch.zeros_like(images, requires_grad=True)
    update = simulate_update(model, candidate, labels, training, order, create_graph=True)
    target = simulate_update(model, images, labels, training, order)
    loss = sum(((u - t) ** 2).sum() for u, t in zip(update, target))
    (grad,) = torch.autograd.grad(loss, candidate)
    assert grad.abs().sum() > 0 and torch.isfinite(grad).all()


def test_soft_labels_equal_hard_ones_when_one_hot(batch):
    model, images, labels = batch
    training = LocalTraining(epochs=1, batch_size=2, lr=0.1, shuffle=False)
    order = training.batch_order(5, torch.Generator())
    assert order == [[0, 1], [2, 3], [4]]
    hard = simulate_update(model, images, labels, training, order)
    soft = simulate_update(model, images, F.one_hot(labels, 10).float(), training, order)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(hard, soft))


def test_local_steps_run_through_reshuffled_epochs():
    """S = 5 steps of 2 over 4 images: two whole epochs (each a permutation) and the first
    batch of a third."""
    training = LocalTraining(steps=5, batch_size=2, lr=0.1)
    order = training.batch_order(4, torch.Generator().manual_seed(0))
    assert len(order) == training.num_steps(4) == 5
    assert sorted(order[0] + order[1]) == sorted(order[2] + order[3]) == [0, 1, 2, 3]
    assert len(order[4]) == 2
    assert LocalTraining(steps=1, batch_size=1).batch_order(8, torch.Generator()) != []


@pytest.mark.parametrize("changes, message", [
    ({"epochs": 0}, "--local-epochs"), ({"batch_size": 0}, "--local-batch-size"),
    ({"lr": 0.0}, "--local-lr"), ({"lr": float("nan")}, "--local-lr"),
    ({"momentum": -0.5}, "--local-momentum"), ({"steps": 0}, "--local-steps"),
    ({"steps": 3, "epochs": 2}, "give --local-epochs or --local-steps, not both"),
])
def test_bad_local_settings_are_one_clear_error(changes, message):
    with pytest.raises(GGLError, match=message):
        LocalTraining(**changes).check()


# --- the FedAvg client in a run ----------------------------------------------------------
def _run(**changes):
    from ggl import RunConfig
    from ggl.api import run

    settings = dict(model="lenet", device="cpu", batch_size=1, index=(3,), control="none")
    return run(RunConfig(**{**settings, **changes}), write=False)


def test_fedavg_with_one_full_batch_step_is_fedsgd():
    """E = 1, B = N: the update over lr is the gradient, so iDLG recovers the image as
    from FedSGD (L-BFGS sees the same numbers up to rounding)."""
    fedsgd = _run(attack="idlg", budget=50)
    fedavg = _run(attack="idlg", budget=50, protocol="fedavg", local_lr=0.1)
    for gradient, naive in zip(fedsgd.observation.gradient, fedavg.observation.gradient):
        assert torch.allclose(gradient, naive, atol=1e-5)
    assert fedavg.observation.weight_update.images == 1
    assert fedsgd.record["metrics"]["psnr"] > 60 and fedavg.record["metrics"]["psnr"] > 60


def test_the_shared_update_is_the_clients_training_and_its_order_is_secret(mnist):
    result = _run(attack="idlg", budget=1, protocol="fedavg", batch_size=4, index=(3,),
                  local_epochs=2, local_batch_size=2, local_lr=0.05, local_momentum=0.5)
    observation, secret = result.observation, result.secret
    training = observation.weight_update.training
    assert (training.epochs, training.batch_size, training.lr) == (2, 2, 0.05)
    assert len(secret.batch_order) == 4 and sorted(sum(secret.batch_order[:2], ())) == [0, 1, 2, 3]
    expected = simulate_update(observation.model, secret.images, secret.labels, training,
                               secret.batch_order)
    for shared, update in zip(observation.weight_update.update, expected):
        assert torch.allclose(shared, update, atol=1e-6)
    for naive, shared in zip(observation.gradient, observation.weight_update.update):
        assert torch.allclose(naive * 0.05, shared, atol=1e-6)          # update / lr


def test_the_random_gradient_control_replaces_the_weight_update_too():
    from ggl.controls import random_gradient

    observation = _run(attack="idlg", budget=1, protocol="fedavg", local_epochs=3,
                       local_lr=0.05).observation
    control, _ = random_gradient(observation, seed=0)
    for noise, update in zip(control.gradient, control.weight_update.update):
        assert torch.allclose(noise * 0.05, update)
    assert not torch.allclose(control.weight_update.update[0], observation.weight_update.update[0])


def test_update_matching_is_zero_at_the_private_images_when_the_order_is_known(mnist):
    from ggl.attacks.weight_update import UpdateMatching
    from ggl.contracts import Observation, WeightUpdate

    model = build_victim("lenet", 1, 32, 10, seed=0)
    images, labels = mnist.private_batch([3, 4])
    training = LocalTraining(epochs=1, batch_size=1, lr=0.05)     # one epoch: order-free
    order = training.batch_order(2, torch.Generator().manual_seed(5))
    update = tuple(simulate_update(model, images, labels, training, order))
    observation = Observation(model=model, gradient=update, batch_size=2,
                              image_shape=(1, 32, 32), num_classes=10, mean=(0.5,),
                              std=(0.5,), weight_update=WeightUpdate(update, training, 2))
    matching = UpdateMatching(observation, "cosine", "mean", tv=0.0)
    truth = images if order == [[0], [1]] else images.flip(0)
    assert matching(truth.unsqueeze(0), labels if order == [[0], [1]] else labels.flip(0)) \
        .item() == pytest.approx(0.0, abs=1e-5)
    assert matching(torch.zeros_like(images).unsqueeze(0), labels).item() > 0.05
    assert matching.evaluations == 2


def test_ig_multi_beats_the_naive_baseline_on_a_multi_step_update():
    """N = 2 images, 4 epochs of single-image steps at lr 0.05: the update is no longer one
    gradient; IG through the simulated local training recovers more than IG reading the
    update as a gradient (measured 9.1 vs 5.8 dB at 1000 unsigned-Adam steps)."""
    common = dict(budget=1000, protocol="fedavg", local_epochs=4, local_batch_size=1,
                  local_lr=0.05, batch_size=2, known_labels=True)
    naive = _run(attack="ig-adam", **common)
    multi = _run(attack="ig-multi", extra={"signed": False, "schedule": "cosine"}, **common)
    assert multi.record["metrics"]["psnr"] > naive.record["metrics"]["psnr"] + 2
    assert multi.reconstruction.history[-1] < multi.reconstruction.history[0]


@pytest.mark.parametrize("changes, message", [
    ({"local_epochs": 3}, "add --protocol fedavg"),
    ({"attack": "ig-multi"}, "--attack ig-multi inverts a fedavg update"),
    ({"attack": "dia", "dropout": 0.2, "protocol": "fedavg"}, "use it with --protocol fedsgd"),
    ({"protocol": "fedprox"}, "--protocol must be one of fedsgd, fedavg"),
    ({"local_known": False}, "--local-estimated: local training"),
    ({"protocol": "fedavg", "local_batch_size": 0}, "--local-batch-size"),
    ({"protocol": "fedavg", "local_batch_size": 4, "batch_size": 2},
     "--local-batch-size 4 is larger than the client's --batch-size 2 images"),
    ({"protocol": "fedavg", "attack": "ig-adam", "adaptive": True, "defense": ("noise",)},
     "--adaptive with --protocol fedavg models the defense on the weight update"),
    ({"protocol": "fedavg", "attack": "ggl", "adaptive": True, "defense": ("noise",),
      "extra": {"update": "naive"}}, "models the defense on the weight update"),
    ({"protocol": "fedavg", "attack": "ig-multi", "adaptive": True, "defense": ("dpsgd",)},
     "over a FedAvg client's local steps it is not modelled"),
])
def test_fedavg_settings_that_do_not_fit_are_refused_before_any_work(changes, message):
    from ggl import RunConfig
    from ggl.plan import resolve

    with pytest.raises(GGLError, match=message):
        resolve(RunConfig(**changes))


def test_ggl_scores_candidates_by_their_simulated_update():
    """GGL on a FedAvg update: ``update=simulate`` (default) scores each candidate through
    the simulated local SGD, ``naive`` reads update / lr as FedSGD's gradient; both search
    the same prior from the same seed, so only the objective differs."""
    common = dict(attack="ggl", protocol="fedavg", local_epochs=2, local_batch_size=1,
                  local_lr=0.05, batch_size=2, known_labels=True)
    simulated = _run(extra={"ng_method": "CMA", "budget": 50}, **common)
    naive = _run(extra={"ng_method": "CMA", "budget": 50, "update": "naive"}, **common)
    assert simulated.record["info"]["gradient_path"].startswith("simulated local training")
    assert not naive.record["info"]["gradient_path"].startswith("simulated")
    assert simulated.record["evaluations"] == naive.record["evaluations"] == 51  # + scoring the returned image
    assert simulated.record["loss"] != naive.record["loss"]


def test_ggl_holdout_needs_a_gradient():
    from ggl import RunConfig
    from ggl.plan import resolve

    with pytest.raises(GGLError, match="--set update=naive"):
        resolve(RunConfig(attack="ggl", protocol="fedavg",
                          extra={"stages": "sample:100,adam:100,gias:100", "holdout": 0.1}))
    resolve(RunConfig(attack="ggl", protocol="fedavg", extra={
        "stages": "sample:100,adam:100,gias:100", "holdout": 0.1, "update": "naive"}))


def test_a_sweep_over_the_protocol_and_local_settings_reports_a_row_each(tmp_path):
    from ggl.study.report import write_report
    from ggl.study.spec import parse_sweep
    from ggl.study.sweep import run_sweep

    sweep = parse_sweep("name: fa\nsettings: {model: lenet, device: cpu, index: [3], "
                        "control: none, local_lr: 0.05}\n"
                        "grid: {attack: [idlg], protocol: [fedavg], local_epochs: [1, 3]}\n"
                        "attack_options: {idlg: {budget: 3}}\n")
    summary = run_sweep(sweep, tmp_path, threads=1, quiet=True)
    assert (summary.done, summary.failed) == (2, 0)
    table = write_report(tmp_path).table
    assert "local_epochs=1" in table and "local_epochs=3" in table


def test_batched_simulation_equals_one_at_a_time(batch):
    """What GGL's black-box stages use: P candidate batches in one vmapped simulation give
    each candidate's own update (momentum and weight decay included)."""
    from ggl.local_training import simulate_updates

    model, images, labels = batch
    training = LocalTraining(epochs=2, batch_size=2, lr=0.05, momentum=0.5, weight_decay=1e-3,
                             shuffle=False)
    order = training.batch_order(5, torch.Generator())
    candidates = torch.stack([images, images.flip(0), torch.zeros_like(images)])
    batched = simulate_updates(model, candidates, labels, training, order)
    for p, candidate in enumerate(candidates):
        single = simulate_update(model, candidate, labels, training, order)
        for many, one in zip(batched, single):
            assert torch.allclose(many[p], one, atol=1e-6)


# --- DP-SGD over the local steps (Opacus) ------------------------------------------------
def _dp_update(batch, noise, clip, training, seed=0):
    from ggl.defenses import parse_defenses
    from ggl.scenario import client_share

    model, images, labels = batch
    defense = parse_defenses((f"dpsgd:{noise},clip={clip}",))
    return client_share(model, images, labels, training, defense, seed)


def test_dp_sgd_without_noise_or_clipping_is_the_plain_local_training(batch):
    model, images, labels = batch
    training = LocalTraining(epochs=2, batch_size=2, lr=0.05, momentum=0.9, weight_decay=1e-3)
    dp, order, _ = _dp_update(batch, 0.0, 1e6, training)
    plain = simulate_update(model, images, labels, training, order)
    for a, b in zip(dp, plain):
        assert torch.allclose(a, b, atol=1e-6)


def test_dp_sgd_clips_every_example_at_every_local_step(batch):
    """No noise, C = 0.05: each step moves by lr x the mean of the per-example gradients,
    each clipped (over all parameters) to norm C, as a hand-written loop computes it."""
    model, images, labels = batch
    training = LocalTraining(epochs=2, batch_size=2, lr=0.1)
    dp, order, _ = _dp_update(batch, 0.0, 0.05, training)
    trained = copy.deepcopy(model)
    for step in order:
        clipped = []
        for i in step:
            grads = torch.autograd.grad(
                F.cross_entropy(trained(images[i:i + 1]), labels[i:i + 1]),
                list(trained.parameters()))
            norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
            clipped.append([g * min(1.0, 0.05 / (norm.item() + 1e-6)) for g in grads])
        with torch.no_grad():
            for k, p in enumerate(trained.parameters()):
                p -= 0.1 * sum(c[k] for c in clipped) / len(step)
    for delta, before, after in zip(dp, model.parameters(), trained.parameters()):
        assert torch.allclose(delta, before.detach() - after.detach(), atol=1e-6)


def test_dp_sgd_noise_is_seeded_and_present(batch):
    training = LocalTraining(epochs=2, batch_size=2, lr=0.1)
    first = _dp_update(batch, 1.0, 1.0, training, seed=3)[0]
    again = _dp_update(batch, 1.0, 1.0, training, seed=3)[0]
    other = _dp_update(batch, 1.0, 1.0, training, seed=4)[0]
    quiet = _dp_update(batch, 0.0, 1.0, training, seed=3)[0]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.allclose(first[0], other[0]) and not torch.allclose(first[0], quiet[0])


def test_a_fedavg_run_with_dp_sgd_shares_the_noisy_local_training():
    result = _run(attack="ig-multi", budget=2, protocol="fedavg", local_epochs=2,
                  local_batch_size=1, local_lr=0.05, batch_size=2, defense=("dpsgd:0.5",))
    assert result.record["defenses"][0]["name"] == "dpsgd"
    assert all(torch.isfinite(u).all() for u in result.observation.weight_update.update)


# --- hyperparameters the server estimates (--local-estimated) ----------------------------
@pytest.mark.parametrize("lr", [0.001, 0.01, 0.1])
@pytest.mark.parametrize("batch_size", [1, 4, 8])
def test_the_server_estimates_the_local_lr_from_the_update(mnist, lr, batch_size):
    """10 steps over 8 private digits: the lr whose simulated update of 8 public digits has
    the shared update's norm is within 20% of the client's."""
    from ggl.local_training import estimate_training

    model = build_victim("lenet", 1, 32, 10, seed=0)
    public = torch.stack([mnist.public[i][0] for i in range(64)])
    public_labels = torch.tensor([int(mnist.public[i][1]) for i in range(64)])
    images, labels = mnist.private_batch(list(range(8)))
    training = LocalTraining(steps=10, batch_size=batch_size, lr=lr, momentum=0.0)
    order = training.batch_order(8, torch.Generator().manual_seed(0))
    update = simulate_update(model, images, labels, training, order)
    estimate = estimate_training(model, update, public, public_labels, training, 8)
    assert estimate.lr == pytest.approx(lr, rel=0.2)
    assert (estimate.steps, estimate.batch_size, estimate.momentum) == (10, batch_size, 0.0)


def test_a_run_with_estimated_hyperparameters_uses_and_records_the_estimate():
    result = _run(attack="ig-multi", budget=1, protocol="fedavg", local_steps=10,
                  local_batch_size=4, local_lr=0.03, local_momentum=0.5, batch_size=8,
                  index=(0,), local_known=False)
    shared = result.observation.weight_update
    assert shared.estimated == ("lr", "momentum", "weight_decay")
    assert shared.training.momentum == 0.0 and shared.training.lr != 0.03
    recorded = result.record["server_local_training"]
    assert recorded["lr"] == shared.training.lr and recorded["estimated"][0] == "lr"
    for naive, update in zip(result.observation.gradient, shared.update):
        assert torch.allclose(naive * shared.training.lr, update, atol=1e-6)


# --- --adaptive on a weight update --------------------------------------------------------
def _clipped_observation(mnist, defense):
    from ggl.contracts import Observation, WeightUpdate
    from ggl.defenses import parse_defenses

    model = build_victim("lenet", 1, 32, 10, seed=0)
    images, labels = mnist.private_batch([3, 4])
    training = LocalTraining(epochs=1, batch_size=1, lr=0.05, shuffle=False)
    order = training.batch_order(2, torch.Generator())
    chain = parse_defenses((defense,))
    update = tuple(simulate_update(model, images, labels, training, order))
    shared = tuple(chain[0].apply(update, {"generator": torch.Generator().manual_seed(0)}))
    observation = Observation(model=model, gradient=tuple(u / 0.05 for u in shared),
                              batch_size=2, image_shape=(1, 32, 32), num_classes=10,
                              mean=(0.5,), std=(0.5,), defenses=tuple(chain),
                              weight_update=WeightUpdate(shared, training, 2))
    return observation, images, labels


def test_adaptive_attacks_clip_the_simulated_update_as_the_client_clipped_its_own(mnist):
    """The client clipped its update to norm 0.01 (in update units): modelled, the
    truth's simulated update clipped the same way is the shared one (L2 loss 0); not
    modelled, the truth scores far from it."""
    from ggl.attacks.weight_update import IGMulti

    observation, images, labels = _clipped_observation(mnist, "clipping:0.01")
    modelled = IGMulti(adaptive=True).matching_objective(
        observation, distance="l2", layer_weights="sum", tv=0.0)
    ignored = IGMulti(adaptive=False).matching_objective(
        observation, distance="l2", layer_weights="sum", tv=0.0)
    assert modelled(images.unsqueeze(0), labels).item() == pytest.approx(0.0, abs=1e-8)
    assert ignored(images.unsqueeze(0), labels).item() > 1e-3


def test_adaptive_attacks_score_by_the_noise_likelihood_of_the_update(mnist):
    from ggl.attacks.weight_update import IGMulti

    observation, images, labels = _clipped_observation(mnist, "noise:0.001")
    objective = IGMulti(adaptive=True).matching_objective(
        observation, distance="cosine", layer_weights="mean", tv=0.0)
    assert objective.likelihood is not None
    truth = objective(images.unsqueeze(0), labels).item()
    assert truth < objective(torch.zeros_like(images).unsqueeze(0), labels).item()
