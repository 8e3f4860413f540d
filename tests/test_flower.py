"""ggl.flower: attacking the updates of a real Flower simulation (Ray backend, 1 CPU).

One 2-client, 1-round simulation of LeNet on the offline MNIST split, run twice (with and
without ggl attached), carries the acceptance checks: the wrapped strategy aggregates
exactly what the plain one does; the update ggl captured equals the update ggl's own
simulation shares; the attack on it reaches the same PSNR as `ggl run --protocol fedavg
--clients 2` with the same seed; a failing attack (client 1's secret reader raises) is
recorded as failed while training goes on. The other checks need no simulation.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("flwr", reason="the flower extra (pip install -e '.[flower]')")

from ggl import RunConfig  # noqa: E402
from ggl.api import prepare, run  # noqa: E402
from ggl.errors import GGLError  # noqa: E402
from ggl.flower import (FIT_CONFIG_KEYS, AuditedStrategy, CapturedUpdate,  # noqa: E402
                        FlowerAudit)
from ggl.flower_sim import (ClientSetup, client_batch, global_model, simulate,  # noqa: E402
                            to_arrays, train_client)
from ggl.plan import resolve  # noqa: E402

CONFIG = RunConfig(attack="ig-multi", model="lenet", protocol="fedavg", local_lr=0.01,
                   local_steps=2, local_batch_size=1, batch_size=2, index=(0,),
                   known_labels=True, budget=30, device="cpu", seed=0)
SETUP = ClientSetup(CONFIG, clients=2)
#: the audit's own config holds other hyperparameters than the clients': with
#: config_keys it must read theirs from the round's fit config to match ggl run
AUDIT_CONFIG = RunConfig(**{**CONFIG.to_dict(), "local_lr": 0.5, "local_steps": 7})


def federation_config() -> RunConfig:
    return RunConfig(**{**CONFIG.to_dict(), "clients": 2, "rounds": 1, "target_client": 0})


def secret_of_client_0(round_, client):
    if client == 1:
        raise RuntimeError("no secret for client 1")
    return client_batch(SETUP, client)


@pytest.fixture(scope="module")
def simulations(tmp_path_factory):
    out = tmp_path_factory.mktemp("flower") / "audit"
    audit = FlowerAudit(AUDIT_CONFIG, clients=[0, 1], rounds=[1], out=out,
                        secret=secret_of_client_0, config_keys=FIT_CONFIG_KEYS)
    wrapped = simulate(SETUP, 1, audit=audit)
    plain = simulate(SETUP, 1)
    return audit, wrapped, plain


def test_wrapping_changes_nothing_flower_aggregates(simulations):
    _, wrapped, plain = simulations
    assert len(plain) == 8                      # LeNet's state dict
    assert all(np.array_equal(a, b) for a, b in zip(wrapped, plain))
    first = to_arrays(global_model(SETUP))
    assert not all(np.array_equal(a, b) for a, b in zip(first, plain))   # it trained


def test_captured_update_and_psnr_equal_ggl_run(simulations):
    audit, _, _ = simulations
    record, control = [r for r in audit.records if r["cell"]["client"] == 0]
    assert record["status"] == "done" and record["scored"] is True
    assert record["cell"]["control"] == "none"
    assert control["cell"]["control"] == "random-gradient" and control["status"] == "done"
    assert control["metrics"]["psnr"] != record["metrics"]["psnr"]
    reference = run(federation_config(), write=False)
    # the update Flower's client returned is the one ggl's federation shares
    scenario, _ = prepare(resolve(federation_config()))
    observation, secret = scenario.observe()
    model = audit.server_model(to_arrays(scenario.model))
    returned = train_client(SETUP, 0, 1, to_arrays(scenario.model))
    captured = audit.update(model, CapturedUpdate(1, 0, to_arrays(scenario.model), returned,
                                                  2, {}))
    assert all(torch.equal(a, b) for a, b in zip(captured,
                                                 observation.weight_update.update))
    assert list(secret.indices) == record_indices(audit, record)
    assert record["metrics"]["psnr"] == pytest.approx(reference.record["metrics"]["psnr"],
                                                      abs=1e-6)
    assert record["metrics"]["psnr"] > 0
    stored = json.loads((audit.store.root / record["run_dir"] / "run.json").read_text())
    assert stored["hyperparameters"]["local_lr"] == {"value": 0.01,
                                                     "from": "the round's fit config 'lr'"}
    assert stored["hyperparameters"]["local_steps"]["value"] == 2
    assert stored["config"]["local_lr"] == 0.01 and stored["config"]["local_steps"] == 2


def record_indices(audit, record):
    return json.loads((audit.store.root / record["run_dir"] / "run.json").read_text()
                      )["private_indices"]


def test_a_failing_attack_is_recorded_and_training_goes_on(simulations):
    audit, wrapped, plain = simulations
    failed = [r for r in audit.records if r["cell"]["client"] == 1]
    assert [r["status"] for r in failed] == ["failed", "failed"]
    assert "no secret for client 1" in failed[0]["error"]
    assert all(np.array_equal(a, b) for a, b in zip(wrapped, plain))
    lines = (audit.store.root / "index.jsonl").read_text().splitlines()
    assert len(lines) == 4       # each client: the attack and its control (`ggl report`)


def test_without_ground_truth_nothing_is_scored(tmp_path):
    config = RunConfig(**{**CONFIG.to_dict(), "known_labels": False, "budget": 5})
    audit = FlowerAudit(config, clients=[0], rounds=[1], out=tmp_path / "audit")
    setup = ClientSetup(config, clients=2)
    sent = to_arrays(global_model(setup))
    records = audit.attack(CapturedUpdate(1, 0, sent, train_client(setup, 0, 1, sent), 2, {}))
    assert len(records) == 1                    # no control without ground truth
    record = records[0]
    assert record["status"] == "done" and record["scored"] is False
    run_dir = tmp_path / "audit" / record["run_dir"]
    stored = json.loads((run_dir / "run.json").read_text())
    assert stored["metrics"] is None and "nothing is scored" in stored["ground_truth"]
    assert (run_dir / "reconstruction.png").exists()
    assert not (run_dir / "original.png").exists()


def test_parameters_of_another_model_are_a_recorded_failure(tmp_path):
    audit = FlowerAudit(CONFIG, clients=[0], rounds=[1], out=tmp_path / "audit",
                        secret=secret_of_client_0)
    wrong = [np.zeros((3, 3), np.float32)]
    record = audit.attack(CapturedUpdate(1, 0, wrong, wrong, 2, {}))[0]
    assert record["status"] == "failed"
    assert "hold 1 arrays" in record["error"] and "state dict 8" in record["error"]


@pytest.mark.parametrize("kwargs, message", [
    ({"clients": [], "rounds": [1]}, "clients: give at least one"),
    ({"clients": [0], "rounds": [0]}, "rounds: 0 is not an integer >= 1"),
    ({"clients": [-1], "rounds": [1]}, "clients: -1 is not an integer >= 0"),
])
def test_bad_targets_are_one_error(tmp_path, kwargs, message):
    with pytest.raises(GGLError, match=message):
        FlowerAudit(CONFIG, out=tmp_path / "a", secret=secret_of_client_0, **kwargs)


def test_targets_outside_the_run_are_refused_before_training(tmp_path):
    audit = FlowerAudit(CONFIG, clients=[5], rounds=[1], out=tmp_path / "a",
                        secret=secret_of_client_0)
    with pytest.raises(GGLError, match=r"clients \[5\] do not exist: the run has 2"):
        simulate(SETUP, 1, audit=audit)
    audit = FlowerAudit(CONFIG, clients=[0], rounds=[3], out=tmp_path / "b",
                        secret=secret_of_client_0)
    with pytest.raises(GGLError, match=r"rounds \[3\] are after the run's last round \(1\)"):
        audit.check_run(1, 2)


def test_threat_model_errors(tmp_path):
    with pytest.raises(GGLError, match="protocol='fedavg'"):
        FlowerAudit(RunConfig(attack="ig-multi", device="cpu"), clients=[0], rounds=[1],
                    out=tmp_path / "a")
    with pytest.raises(GGLError, match="known_labels needs the clients' labels"):
        FlowerAudit(CONFIG, clients=[0], rounds=[1], out=tmp_path / "b")


def test_hyperparameters_come_from_the_fit_config_then_the_metrics(tmp_path):
    from ggl.flower import hyperparameters

    keys = {"local_lr": "lr", "local_steps": "steps", "local_momentum": "momentum"}
    config, known = hyperparameters(CONFIG, [("fit config", {"lr": 0.2}),
                                             ("metrics", {"lr": 9.0, "steps": 3.0})], keys)
    assert (config.local_lr, config.local_steps, config.local_momentum) == (0.2, 3, 0.0)
    assert known["local_lr"]["from"] == "fit config 'lr'"
    assert known["local_steps"] == {"value": 3, "from": "metrics 'steps'"}
    assert "'momentum' not sent" in known["local_momentum"]["from"]
    with pytest.raises(GGLError, match="fit config 'steps' = 2.5: local_steps needs an "
                                       "integer"):
        hyperparameters(CONFIG, [("fit config", {"steps": 2.5})], keys)
    with pytest.raises(GGLError, match="config_keys: 'lr' is not a local-training setting"):
        FlowerAudit(CONFIG, clients=[0], rounds=[1], out=tmp_path / "a",
                    secret=secret_of_client_0, config_keys={"lr": "lr"})
    # a wrong value sent to a target client: its attack is a recorded failure
    audit = FlowerAudit(CONFIG, clients=[0], rounds=[1], out=tmp_path / "b",
                        secret=secret_of_client_0, config_keys=FIT_CONFIG_KEYS)
    sent = to_arrays(global_model(SETUP))
    audit.receive(1, sent, lambda: sent, 2, {"partition-id": 0}, {"lr": "fast"})
    assert audit.records[0]["status"] == "failed"
    assert "the round's fit config 'lr' = 'fast': local_lr needs a number" in \
        audit.records[0]["error"]


def test_only_a_flower_strategy_can_be_wrapped(tmp_path):
    audit = FlowerAudit(CONFIG, clients=[0], rounds=[1], out=tmp_path / "a",
                        secret=secret_of_client_0)
    with pytest.raises(GGLError, match="can wrap a flwr.server.strategy.Strategy, got dict"):
        AuditedStrategy({}, audit)


FLOWER_SIM = ["flower-sim", "--clients", "2", "--rounds", "1", "--batch-size", "2",
              "--index", "0", "--local-steps", "2", "--local-batch-size", "1",
              "--local-lr", "0.01", "--attack", "ig-multi", "--budget", "5",
              "--known-labels", "--device", "cpu"]


def test_flower_sim_command_writes_a_report_able_store(tmp_path):
    from click.testing import CliRunner

    from ggl.cli import cli

    out = tmp_path / "audit"
    result = CliRunner().invoke(cli, FLOWER_SIM + ["--out", str(out), "--flower-api",
                                                   "message", "--json"])
    assert result.exit_code == 0, result.output
    assert "round 1, client 0: done PSNR" in result.stderr
    assert "Flower simulation: 2 clients, 1 rounds" in result.stderr
    printed = json.loads(result.stdout)
    assert printed["out"] == str(out) and printed["flower_api"] == "message"
    assert [r["cell"]["control"] for r in printed["records"]] == ["none",
                                                                  "random-gradient"]
    assert printed["records"][0]["metrics"]["psnr"] > 0
    report = CliRunner().invoke(cli, ["report", str(out)])
    assert report.exit_code == 0, report.output
    assert "2 done, 0 failed" in report.output


def test_flower_sim_refuses_an_unknown_client_before_training(tmp_path):
    from click.testing import CliRunner

    from ggl.cli import cli

    result = CliRunner().invoke(cli, FLOWER_SIM + ["--out", str(tmp_path / "a"),
                                                   "--attack-client", "7"])
    assert result.exit_code == 2, result.output
    assert "Error: clients [7] do not exist: the run has 2 clients" in result.output
    assert not (tmp_path / "a" / "index.jsonl").exists()


def test_aggregate_is_bit_identical_for_the_same_replies(tmp_path):
    """The exact identity, free of Ray's arrival order: FedAvg and the wrapped FedAvg
    given the same three replies (client 0's attacked) return the same arrays."""
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.strategy import FedAvg

    setup = ClientSetup(CONFIG, clients=3)
    sent = to_arrays(global_model(setup))
    replies = [(None, FitRes(Status(Code.OK, ""),
                             ndarrays_to_parameters(train_client(setup, k, 1, sent)), 2,
                             {"partition-id": k}))
               for k in range(3)]
    audit = FlowerAudit(CONFIG, clients=[0], rounds=[1], out=tmp_path / "a",
                        secret=lambda r, c: client_batch(setup, c))
    wrapped = AuditedStrategy(FedAvg(), audit)
    wrapped.sent[1] = sent                      # what configure_fit records in a real run
    ours, _ = wrapped.aggregate_fit(1, replies, [])
    theirs, _ = FedAvg().aggregate_fit(1, replies, [])
    assert [r["status"] for r in audit.records] == ["done", "done"]   # attack, control
    assert all(np.array_equal(a, b) for a, b in zip(parameters_to_ndarrays(ours),
                                                    parameters_to_ndarrays(theirs)))


def test_an_attack_needing_an_unknown_schedule_is_one_error(tmp_path):
    with pytest.raises(GGLError, match="ig-multi simulates the clients' local training and "
                                       "needs their schedule"):
        FlowerAudit(CONFIG, clients=[0], rounds=[1], out=tmp_path / "a",
                    secret=secret_of_client_0, schedule_known=False)
    naive = RunConfig(**{**CONFIG.to_dict(), "attack": "ig-adam"})
    audit = FlowerAudit(naive, clients=[0], rounds=[1], out=tmp_path / "b",
                        secret=secret_of_client_0, schedule_known=False)
    assert audit.schedule_known is False        # update / lr needs the lr only


def test_a_batch_larger_than_a_share_is_refused_before_training(tmp_path):
    setup = ClientSetup(RunConfig(**{**CONFIG.to_dict(), "batch_size": 900}), clients=2)
    with pytest.raises(GGLError, match="--batch-size 900 is larger than client 0's share"):
        simulate(setup, 1)


def test_round_one_global_model_is_the_one_ggl_run_attacks():
    from ggl.flower_sim import initial_model

    config = RunConfig(**{**CONFIG.to_dict(), "victim_steps": 3})
    scenario, _ = prepare(resolve(RunConfig(**{**config.to_dict(), "clients": 2})))
    ours = to_arrays(initial_model(ClientSetup(config, clients=2)))
    assert all(np.array_equal(a, b) for a, b in zip(ours, to_arrays(scenario.model)))
    assert not all(np.array_equal(a, b) for a, b in zip(ours, to_arrays(
        global_model(ClientSetup(config, clients=2)))))          # the steps trained it


def test_message_api_strategy_is_audited_without_changing_its_aggregate(tmp_path):
    """Flower's Message API (flwr.serverapp.strategy.FedAvg, Strategy.start): the same
    round-1 attack on client 0 as the Strategy API's, and the same global model."""
    from ggl.flower import audit_message_strategy
    from ggl.flower_sim import simulate_messages

    audit = FlowerAudit(AUDIT_CONFIG, clients=[0], rounds=[1], out=tmp_path / "a",
                        secret=secret_of_client_0, control="none",
                        config_keys=FIT_CONFIG_KEYS)
    wrapped = simulate_messages(SETUP, 1, audit=audit)
    plain = simulate_messages(SETUP, 1)
    assert len(plain) == 8
    assert all(np.array_equal(a, b) for a, b in zip(wrapped, plain))
    [record] = audit.records
    assert record["status"] == "done", record["error"]
    reference = run(federation_config(), write=False)
    assert record["metrics"]["psnr"] == pytest.approx(reference.record["metrics"]["psnr"],
                                                      abs=1e-6)
    with pytest.raises(GGLError, match="got FedAvg \\(a flwr.server.strategy.Strategy"):
        from flwr.server.strategy import FedAvg
        audit_message_strategy(FedAvg(), audit)
