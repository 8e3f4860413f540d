"""The simulated federation: the split, FedAvg rounds that train the global model, the
target client's update, and secure aggregation hiding it."""
import pytest
import torch

from ggl.errors import GGLError
from ggl.federation import (Federation, OtherClients, client_seed, split_clients,
                            weighted_mean)
from ggl.local_training import LocalTraining
from ggl.scenario import client_share


def _labels(n=200, classes=10):
    return torch.arange(n) % classes


@pytest.mark.parametrize("dirichlet", [None, 0.5, 100.0])
def test_the_split_is_a_seeded_partition(dirichlet):
    labels = _labels()
    shares = split_clients(labels, 10, dirichlet, seed=0)
    every = sorted(i for share in shares for i in share)
    assert every == list(range(200)) and min(map(len, shares)) > 0
    assert shares == split_clients(labels, 10, dirichlet, seed=0)
    assert shares != split_clients(labels, 10, dirichlet, seed=1)
    if dirichlet is None:
        assert {len(share) for share in shares} == {20}


def test_a_small_alpha_gives_each_client_few_classes():
    labels = _labels(1000)
    classes = lambda shares: sum(len(set(labels[s].tolist())) for s in shares) / len(shares)
    assert classes(split_clients(labels, 10, 0.1, seed=0)) < 6
    assert classes(split_clients(labels, 10, None, seed=0)) == 10


def test_more_clients_than_images_is_one_clear_error():
    with pytest.raises(GGLError, match="--clients 300 is larger than the private split"):
        split_clients(_labels(), 300, None, seed=0)


def _run(**changes):
    from ggl import RunConfig
    from ggl.api import run

    settings = dict(attack="idlg", budget=1, model="lenet", device="cpu", batch_size=2,
                    control="none", protocol="fedavg", local_lr=0.1, local_batch_size=10,
                    clients=4, rounds=3, dirichlet=0.5)
    return run(RunConfig(**{**settings, **changes}), write=False)


def _shares_and_data(mnist, clients=4, dirichlet=0.5, seed=0):
    labels = torch.tensor([int(mnist.private[i][1]) for i in range(len(mnist.private))])
    shares = split_clients(labels, clients, dirichlet, seed)
    data = [mnist.private_batch(share) for share in shares]
    return shares, data


def test_rounds_before_the_target_train_the_global_model_by_fedavg(mnist):
    """Round 3 of 3: the global model is w0 moved twice by the size-weighted mean of the
    four clients' updates (each on its whole share); the target's batch is from its share
    and its update is its local training from that model."""
    from ggl.models import build_victim

    result = _run()
    shares, data = _shares_and_data(mnist)
    training = LocalTraining(batch_size=10, lr=0.1)
    model = build_victim("lenet", 1, 32, 10, seed=0)
    for round_ in (1, 2):
        updates = [client_share(model, images, labels, training, (),
                                client_seed(0, round_, k, 4))[0]
                   for k, (images, labels) in enumerate(data)]
        with torch.no_grad():
            for p, u in zip(model.parameters(), weighted_mean(updates, list(map(len, shares)))):
                p.sub_(u)
    for ours, theirs in zip(result.observation.model.parameters(), model.parameters()):
        assert torch.allclose(ours, theirs, atol=1e-6)
    assert set(result.secret.indices) <= set(shares[0])
    facts = result.record["federation"]
    assert facts["share_sizes"] == list(map(len, shares))
    assert facts["setting"] == "4 clients (Dirichlet 0.5), round 3 of 3, client 0"
    assert 0 <= facts["global_accuracy_public"] <= 1
    expected = client_share(model, result.secret.images, result.secret.labels,
                            LocalTraining(batch_size=10, lr=0.1), (), 0)[0]
    for shared, update in zip(result.observation.weight_update.update, expected):
        assert torch.allclose(shared, update, atol=1e-6)


def test_later_rounds_attack_a_trained_model(mnist):
    first = _run(rounds=10, target_round=1, clients=10)
    last = _run(rounds=10, clients=10)
    assert first.record["federation"]["global_accuracy_public"] < \
        last.record["federation"]["global_accuracy_public"]


def test_secure_aggregation_hides_the_individual_update(mnist):
    """The server sees the size-weighted mean of all four clients' round-3 updates: not the
    target's, but exactly what the target's update and the other three (each recomputed
    here from its whole share and its own seed) average to."""
    plain = _run(target_client=1)
    hidden = _run(target_client=1, secure_aggregation=True)
    assert hidden.observation.weight_update.clients == 4
    assert torch.equal(hidden.secret.images, plain.secret.images)
    target = plain.observation.weight_update.update
    seen = hidden.observation.weight_update.update
    assert not torch.allclose(seen[0], target[0], atol=1e-4)
    shares, data = _shares_and_data(mnist)
    training = LocalTraining(batch_size=10, lr=0.1)
    model = hidden.observation.model                   # round 3's global model
    rest = [k for k in range(4) if k != 1]
    others = OtherClients(
        [client_share(model, *data[k], training, (), client_seed(0, 3, k, 4))[0]
         for k in rest], [len(shares[k]) for k in rest])
    for expected, shared in zip(others.aggregate(target, 2), seen):
        assert torch.allclose(expected, shared, atol=1e-6)


def test_one_client_in_round_one_is_the_single_client_of_before():
    single = _run(clients=1, rounds=1, dirichlet=None, index=(3,), local_batch_size=1)
    assert single.record["federation"] is None
    assert single.secret.indices == (3, 4)


@pytest.mark.parametrize("changes, message", [
    ({"target_client": 4}, "--target-client must be in 0..3"),
    ({"target_round": 4}, "--target-round must be in 1..3"),
    ({"target_round": 0}, "--target-round must be in 1..3"),
    ({"clients": 0}, "--clients must be"),
    ({"dirichlet": 0.0}, "--dirichlet"),
    ({"clients": 1, "rounds": 1, "secure_aggregation": True}, "give --clients 2 or more"),
    ({"protocol": "fedsgd", "local_batch_size": None, "local_lr": 0.1},
     "--clients, --rounds, --dirichlet: local training and federated rounds"),
])
def test_federation_settings_that_do_not_fit_are_refused_before_any_work(changes, message):
    from ggl import RunConfig
    from ggl.plan import resolve

    settings = dict(protocol="fedavg", clients=4, rounds=3, dirichlet=0.5)
    with pytest.raises(GGLError, match=message):
        resolve(RunConfig(**{**settings, **changes}))


def test_a_batch_larger_than_the_targets_share_is_refused_before_training():
    with pytest.raises(GGLError, match="--batch-size 999 is larger than client 0's share"):
        _run(batch_size=999)
    with pytest.raises(GGLError, match="--index 900 is out of range: client 0's share"):
        _run(batch_size=1, index=(900,))


def test_the_cli_runs_a_federation_and_writes_its_facts(tmp_path):
    import json

    from click.testing import CliRunner

    from ggl.cli import cli

    out = tmp_path / "fed"
    result = CliRunner().invoke(cli, [
        "run", "--attack", "idlg", "--budget", "1", "--protocol", "fedavg", "--clients", "3",
        "--rounds", "2", "--dirichlet", "1", "--local-batch-size", "20", "--target-client",
        "2", "--device", "cpu", "--control", "none", "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    facts = json.loads((out / "run.json").read_text())["federation"]
    assert facts["setting"] == "3 clients (Dirichlet 1), round 2 of 2, client 2"
    assert len(facts["share_sizes"]) == 3 and sum(facts["share_sizes"]) == 1000
