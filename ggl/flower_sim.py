"""A Flower simulation of ggl's federation, for audits with ground truth (``ggl.flower``).

K Flower clients (a ``ClientApp`` of ``NumPyClient`` s, run by Flower's simulation engine
on Ray) share the offline private split as ``ggl.federation`` splits it (IID or
Dirichlet). Client k holds ``--batch-size`` images of its share (``--index`` counting
inside it, as ``ggl run --protocol fedavg --clients K`` picks the target's batch) and
trains on them every round with ggl's client (``ggl.scenario.client_share``: the local SGD
of ``ggl.local_training``, bit for bit ``torch.optim.SGD``, and the client-side
defenses), seeded per (round, client) as ggl seeds them. As in a real deployment, the
server sends the local hyperparameters in the round's fit config
(``ggl.flower.FIT_CONFIG_KEYS``) and the clients train with what they receive. So round 1's update of any client
is the update ``ggl run --protocol fedavg --clients K --rounds 1 --target-client k`` attacks.
(ggl's own federation trains the other clients, and the earlier rounds, on whole shares;
here every client holds only its batch.)
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import numpy as np
import torch

from ggl.config import RunConfig
from ggl.flower import FIT_CONFIG_KEYS, PARTITION_METRIC, flower, hyperparameters

#: the fit config key that tells a client the server round (the Message API's FedAvg
#: puts it into the train config itself)
ROUND_KEY = "server-round"
#: Flower's Ray backend: one worker with one CPU, quiet
BACKEND_CONFIG = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                  "init_args": {"num_cpus": 1, "log_to_driver": False,
                                "logging_level": "ERROR"}}


@dataclass(frozen=True)
class ClientSetup:
    """Everything a simulated client needs (picklable: Ray ships it to the workers).

    Attributes:
        config: the run's settings (model, data, local training, defenses, seed, batch).
        clients: K; dirichlet: the split's alpha (None: IID).
    """

    config: RunConfig
    clients: int
    dirichlet: float | None = None


_RESOURCES: dict[str, tuple] = {}


def _resources(setup: ClientSetup):
    """The data, the split and the defenses, built once per worker process."""
    key = json.dumps([setup.config.to_dict(), setup.clients, setup.dirichlet],
                     sort_keys=True, default=str)
    if key not in _RESOURCES:
        _RESOURCES[key] = _build_resources(setup)
    return _RESOURCES[key]


def _build_resources(setup: ClientSetup):
    from ggl.data import load_dataset
    from ggl.federation import split_clients
    from ggl.plan import resolve

    c = setup.config
    data = load_dataset(c.dataset, c.data_root, c.download, c.resolution)
    labels = torch.tensor([int(data.private[i][1]) for i in range(len(data.private))])
    shares = split_clients(labels, setup.clients, setup.dirichlet, c.seed)
    return data, shares, resolve(c).defenses


def client_batch(setup: ClientSetup, client: int):
    """Client ``client``'s private ``(images (N, C, H, W), labels (N,), indices)``."""
    from ggl.scenario import choose_indices

    data, shares, _ = _resources(setup)
    share = shares[client]
    positions = choose_indices(len(share), setup.config.batch_size, setup.config.index,
                               setup.config.seed, f"client {client}'s share")
    indices = [share[i] for i in positions]
    images, labels = data.private_batch(indices)
    return images, labels, indices


def global_model(setup: ClientSetup) -> torch.nn.Module:
    """The global model's architecture (ggl's victim, seeded)."""
    from ggl.flower import victim

    data, _, defenses = _resources(setup)
    return victim(setup.config, data, defenses)


def initial_model(setup: ClientSetup) -> torch.nn.Module:
    """Round 1's global model: :func:`global_model` with ``--weights`` loaded and trained
    ``--victim-steps`` on the public split, as ``ggl run`` prepares it."""
    from ggl.models import load_weights, train_victim

    c = setup.config
    model = global_model(setup)
    if c.weights:
        load_weights(model, c.weights, c.model)
    train_victim(model, _resources(setup)[0].public, c.victim_steps, seed=c.seed,
                 device=torch.device("cpu"))
    return model


def to_arrays(model: torch.nn.Module) -> list[np.ndarray]:
    return [value.detach().cpu().numpy().copy() for value in model.state_dict().values()]


def load_arrays(model: torch.nn.Module, arrays) -> torch.nn.Module:
    keys = list(model.state_dict())
    model.load_state_dict({k: torch.as_tensor(np.asarray(a)) for k, a in zip(keys, arrays)})
    return model


def fit_config(config: RunConfig) -> dict:
    """The local hyperparameters as the server sends them (``FIT_CONFIG_KEYS``)."""
    return {key: getattr(config, setting) for setting, key in FIT_CONFIG_KEYS.items()
            if getattr(config, setting) is not None}


def train_client(setup: ClientSetup, client: int, round_: int, arrays,
                 sent_config: dict | None = None) -> list[np.ndarray]:
    """What client ``client`` returns in ``round_`` from the global ``arrays``, trained
    with the hyperparameters of ``sent_config`` (the round's fit config; None: the
    setup's)."""
    from ggl.federation import client_seed
    from ggl.scenario import client_share

    _, _, defenses = _resources(setup)
    config = setup.config
    if sent_config is not None:
        config, _ = hyperparameters(config, [("fit config", sent_config)], FIT_CONFIG_KEYS)
    model = load_arrays(global_model(setup), arrays)
    images, labels, _ = client_batch(setup, client)
    update, _, _ = client_share(model, images, labels, config.local_training(),
                                defenses, client_seed(setup.config.seed, round_, client,
                                                      setup.clients))
    with torch.no_grad():
        for parameter, u in zip(model.parameters(), update):
            parameter.sub_(u)
    return to_arrays(model)


def client_app(setup: ClientSetup):
    """Flower's ``ClientApp`` of the simulated clients."""
    flower()
    from flwr.client import ClientApp, NumPyClient

    class GGLClient(NumPyClient):
        def __init__(self, client: int):
            self.client = client

        def fit(self, parameters, config):
            torch.set_num_threads(1)
            round_ = int(config[ROUND_KEY])
            returned = train_client(setup, self.client, round_, parameters, config)
            return returned, setup.config.batch_size, {PARTITION_METRIC: self.client}

        def evaluate(self, parameters, config):
            return 0.0, setup.config.batch_size, {}

    def client_fn(context):
        return GGLClient(int(context.node_config["partition-id"])).to_client()

    return ClientApp(client_fn=client_fn)


def _before_simulation(setup: ClientSetup, rounds: int, audit) -> None:
    """Quiet Flower (no telemetry thread, errors only) and refuse, before any training, a
    batch some client cannot hold and audit targets outside the run."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    flower()
    logging.getLogger("flwr").setLevel(logging.ERROR)
    for client in range(setup.clients):
        client_batch(setup, client)
    if audit is not None:
        audit.check_run(rounds, setup.clients)


def simulate(setup: ClientSetup, rounds: int, audit=None) -> list[np.ndarray]:
    """Run ``rounds`` of FedAvg over the simulated clients (one Ray worker, one CPU), with
    Flower's FedAvg wrapped by ``AuditedStrategy`` when an ``audit`` (a
    ``ggl.flower.FlowerAudit``) is given. Returns the final global parameters."""
    _before_simulation(setup, rounds, audit)
    from flwr.common import ndarrays_to_parameters
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    final: list = []

    def keep_final(server_round, arrays, config):       # the global model after a round
        if server_round == rounds:
            final[:] = [np.array(a, copy=True) for a in arrays]
        return None

    initial = ndarrays_to_parameters(to_arrays(initial_model(setup)))
    strategy = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0,
                      min_fit_clients=setup.clients, min_available_clients=setup.clients,
                      initial_parameters=initial,
                      on_fit_config_fn=lambda r: {ROUND_KEY: r, **fit_config(setup.config)},
                      evaluate_fn=keep_final)
    if audit is not None:
        from ggl.flower import AuditedStrategy

        strategy = AuditedStrategy(strategy, audit)

    def server_fn(context):
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=rounds))

    run_simulation(server_app=ServerApp(server_fn=server_fn), client_app=client_app(setup),
                   num_supernodes=setup.clients, backend_config=BACKEND_CONFIG)
    return final


def message_client_app(setup: ClientSetup):
    """The simulated clients as a Message-API ``ClientApp`` (``@app.train()``)."""
    flower()
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def train(message, context):
        torch.set_num_threads(1)
        client = int(context.node_config["partition-id"])
        sent_config = dict(message.content["config"])
        model = load_arrays(global_model(setup), train_client(
            setup, client, int(sent_config[ROUND_KEY]),
            message.content["arrays"].to_numpy_ndarrays(), sent_config))
        return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()),
                                   "metrics": MetricRecord({
                                       "num-examples": setup.config.batch_size,
                                       PARTITION_METRIC: client})}), reply_to=message)

    return app


def simulate_messages(setup: ClientSetup, rounds: int, audit=None) -> list[np.ndarray]:
    """:func:`simulate` with Flower's Message API: ``flwr.serverapp.strategy.FedAvg``
    (wrapped by ``ggl.flower.audit_message_strategy`` when an ``audit`` is given)."""
    _before_simulation(setup, rounds, audit)
    from flwr.app import ArrayRecord, ConfigRecord
    from flwr.serverapp import ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    strategy = FedAvg(fraction_evaluate=0.0, min_train_nodes=setup.clients,
                      min_available_nodes=setup.clients)
    if audit is not None:
        from ggl.flower import audit_message_strategy

        strategy = audit_message_strategy(strategy, audit)
    final: list = []
    app = ServerApp()

    @app.main()
    def main(grid, context):
        result = strategy.start(grid=grid, initial_arrays=ArrayRecord(
            initial_model(setup).state_dict()), num_rounds=rounds,
            train_config=ConfigRecord(fit_config(setup.config)))
        final[:] = result.arrays.to_numpy_ndarrays()

    run_simulation(server_app=app, client_app=message_client_app(setup),
                   num_supernodes=setup.clients, backend_config=BACKEND_CONFIG)
    return final
