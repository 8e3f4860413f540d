"""Audit a Flower training: attack the clients' updates where the server receives them.

Flower's server sends a round's global parameters in ``configure_fit`` and receives every
client's returned parameters (``FitRes``) in ``aggregate_fit``. :class:`AuditedStrategy`
wraps any Flower ``Strategy`` (``pip install -e ".[flower]"``): it forwards every call
unchanged, so what the strategy aggregates and the training itself are exactly as without
ggl, and before forwarding ``aggregate_fit`` it hands the target clients' (sent, returned)
parameters to a :class:`FlowerAudit`, which turns them into ggl's Observation (the weight
update ``w0 - wE`` and the local hyperparameters the server knows: those of the audit's
config, or, with ``config_keys``, those the round's fit config sent to the client or the
client reported in its fit metrics) and runs the chosen attack. The three lines of a Flower server app::

    from ggl.flower import AuditedStrategy, FlowerAudit
    audit = FlowerAudit(RunConfig(attack="ggl", model="lenet", protocol="fedavg",
                                  local_lr=0.1, local_batch_size=50), clients=[0],
                        rounds=[1, 3], out="flower_audit")
    strategy = AuditedStrategy(FedAvg(...), audit)

With Flower's Message API (``flwr.serverapp.strategy``, ``strategy.start(grid=...)``),
:func:`audit_message_strategy` does the same in ``configure_train`` / ``aggregate_train``.

Conventions (those of Flower's PyTorch examples): parameters travel as the model's
``state_dict()`` values in order, and a client reports its partition id in its fit
metrics under ``"partition-id"`` (Flower's server sees node ids only). The number of
images behind an update is the ``FitRes``' ``num_examples``.

Ground truth exists only in a simulation: ``secret(round, client)`` may return the
client's private ``(images (N, C, H, W) normalized, labels (N,), indices)``; the
reconstruction is then scored (PSNR, SSIM, the judge, ...). Against a real deployment
there is no secret: the record holds the reconstruction and the attack's loss, and says
so. An attack that fails is recorded as failed; training goes on.

The records form a result store (``ggl.study.store``: ``index.jsonl`` and ``runs/``), one
cell per (round, client), which ``ggl report`` reads.
"""
from __future__ import annotations

import copy
import functools
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from ggl import checks
from ggl.config import RunConfig
from ggl.contracts import Secret
from ggl.errors import GGLError

#: the fit metric in which a client reports its partition id
PARTITION_METRIC = "partition-id"
#: ggl's local-training settings and the fit config / fit metrics keys under which
#: ``ggl.flower_sim``'s server sends them (pass as ``FlowerAudit(config_keys=...)``, or a
#: mapping of your own for the keys your server app sends)
FIT_CONFIG_KEYS = {"local_lr": "lr", "local_epochs": "local-epochs",
                   "local_steps": "local-steps", "local_batch_size": "batch-size",
                   "local_momentum": "momentum", "local_weight_decay": "weight-decay"}
_SETTING_TYPES = {"local_lr": float, "local_epochs": int, "local_steps": int,
                  "local_batch_size": int, "local_momentum": float,
                  "local_weight_decay": float}
#: what ``secret(round, client)`` returns: images (N, C, H, W), labels (N,), indices
SecretReader = Callable[[int, int], "tuple[torch.Tensor, torch.Tensor, Sequence[int]]"]


def flower():
    """The ``flwr`` package, or one clear error naming the extra to install."""
    try:
        import flwr
    except ImportError as error:
        raise GGLError(f"ggl.flower needs Flower: pip install -e \".[flower]\" ({error})")
    return flwr


def victim(config: RunConfig, data, defenses) -> torch.nn.Module:
    """The global model's architecture, seeded as ``ggl run`` builds it (with the model
    extensions of ``defenses``, e.g. PRECODE), on the CPU."""
    from ggl.models import build_victim

    model = build_victim(config.model, data.channels, data.resolution, data.num_classes,
                         seed=config.seed, width=config.width, mode=config.model_mode,
                         dropout=config.dropout)
    for defense in defenses:
        model = defense.wrap_model(model, seed=config.seed)
    return model


def hyperparameters(config: RunConfig, sources: Sequence[tuple[str, Mapping]],
                    keys: Mapping[str, str]) -> tuple[RunConfig, dict]:
    """``config`` with the local-training settings of ``keys`` (ggl setting -> Flower key)
    read from the first of ``sources`` (``(name, mapping)``, e.g. the fit config, then the
    fit metrics) that holds the key; a key none holds keeps ``config``'s value.

    Returns the config (unchecked: ``ggl.plan.resolve`` checks it) and, per setting, its
    value and where it came from. Raises GGLError for a value of the wrong type."""
    values, provenance = {}, {}
    for setting, key in keys.items():
        found = next(((name, source[key]) for name, source in sources if key in source),
                     None)
        if found is None:
            provenance[setting] = {"value": getattr(config, setting),
                                   "from": f"the audit's config ({key!r} not sent)"}
            continue
        name, value = found
        kind = _SETTING_TYPES[setting]
        try:
            if isinstance(value, (bytes, bool)) or (kind is int and float(value) != int(value)):
                raise ValueError
            values[setting] = kind(value)
        except (TypeError, ValueError):
            raise GGLError(f"{name} {key!r} = {value!r}: {setting} needs "
                           f"{'an integer' if kind is int else 'a number'}") from None
        provenance[setting] = {"value": values[setting], "from": f"{name} {key!r}"}
    return replace(config, **values), provenance


@dataclass
class CapturedUpdate:
    """One client's round as the server saw it.

    Attributes:
        round: Flower's server round (1-based); client: the reported partition id.
        sent: the global parameters of the round (state-dict values, in order).
        returned: the client's parameters after its local training (the same layout).
        num_examples: N, the images it trained on (``FitRes.num_examples``).
        metrics: the client's fit metrics.
        fit_config: the config the round sent to the client (``FitIns.config``).
    """

    round: int
    client: int
    sent: list[np.ndarray]
    returned: list[np.ndarray]
    num_examples: int
    metrics: dict
    fit_config: dict = field(default_factory=dict)


class FlowerAudit:
    """Which clients and rounds to attack, with what, and where the records go.

    Args:
        config: the attack and the threat model as for ``ggl run --protocol fedavg``: the
            victim (``model``, ``width``, ``model_mode``), the data domain (``dataset``:
            the server's public split and the judge), the local hyperparameters the
            server configured (``local_lr``, ``local_epochs`` or ``local_steps``,
            ``local_batch_size``, ...), the client-side defenses the attacker models.
        clients: partition ids to attack; rounds: server rounds to attack (1-based).
        out: the result store's folder (created; one that already holds records is
            refused, so nothing computed before is overwritten).
        secret: simulations only, ``secret(round, client) -> (images, labels, indices)``.
        on_record: called with every record as it is stored (progress).
        control: with ground truth, the same attack is also run on this control in place
            of the update (``ggl list``; ``none``: not), a cell of its own.
        schedule_known: the server knows the clients' local schedule (``local_epochs`` or
            ``local_steps``, ``local_batch_size``); False: it knows at most the lr, and only
            attacks that read the update as one gradient (update / lr) can run.
        config_keys: ggl local-training setting -> the key under which the server's fit
            config (what ``configure_fit`` sends the client) or else the client's fit
            metrics carry it, read for every attacked update (e.g. an lr schedule);
            ``FIT_CONFIG_KEYS`` are ``ggl.flower_sim``'s. None: the config's values.

    Raises:
        GGLError: before any training, for a config ggl would refuse, a protocol other
            than fedavg, known labels without a secret, empty or negative targets,
            ``config_keys`` naming no local-training setting, or an unwritable or
            non-empty ``out``.
    """

    def __init__(self, config: RunConfig, *, clients: Sequence[int], rounds: Sequence[int],
                 out: str | Path, secret: SecretReader | None = None,
                 on_record: Callable[[dict], None] | None = None,
                 control: str = "random-gradient", schedule_known: bool = True,
                 config_keys: Mapping[str, str] | None = None):
        from ggl.api import PUBLIC_SAMPLE
        from ggl.data import load_dataset
        from ggl.plan import resolve
        from ggl.study.store import INDEX_FILE, ResultStore

        if config.protocol != "fedavg":
            raise GGLError("a Flower client shares its weights after local training: give "
                           "protocol='fedavg' with the clients' local hyperparameters")
        if config.known_labels and secret is None:
            raise GGLError("known_labels needs the clients' labels: give secret=... (a "
                           "simulation), or known_labels=False")
        self.clients = self._targets("clients", clients, 0)
        self.rounds = self._targets("rounds", rounds, 1)
        self.config = replace(config, out=None, control="none")
        self.plan = resolve(self.config)          # every setting checked once, here
        if control != "none":
            resolve(replace(self.config, control=control))
        if not schedule_known:
            if self.plan.attack.simulates_updates():
                raise GGLError(f"{config.attack} simulates the clients' local training and "
                               f"needs their schedule (local_epochs or local_steps, "
                               f"local_batch_size), which the server does not know here: give "
                               f"it, or use an attack that reads the update as one gradient "
                               f"(ig-adam, ig, dlg; ggl with update=naive)")
            if not config.local_known:
                raise GGLError("estimating the clients' lr needs their local schedule: give "
                               "the schedule (schedule_known=True) or the lr "
                               "(local_known=True)")
        self.schedule_known = schedule_known
        self.config_keys = self._config_keys(config_keys)
        out = Path(out)
        checks.writable_folder(out, "out")
        if (out / INDEX_FILE).exists() and (out / INDEX_FILE).stat().st_size:
            raise GGLError(f"out {out} already holds audit records ({INDEX_FILE}): give "
                           f"another folder")
        self.store = ResultStore(out)
        self.secret, self.on_record = secret, on_record
        self.control = control
        c = self.config
        self.data = load_dataset(c.dataset, c.data_root, c.download, c.resolution)
        sample = range(min(PUBLIC_SAMPLE, len(self.data.public)))
        self.public = torch.stack([self.data.public[i][0] for i in sample])
        self.public_labels = torch.tensor([int(self.data.public[i][1]) for i in sample])
        self.records: list[dict] = []

    @staticmethod
    def _targets(name: str, values: Sequence[int], lowest: int) -> tuple[int, ...]:
        values = tuple(values)
        if not values:
            raise GGLError(f"{name}: give at least one to attack")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lowest:
                raise GGLError(f"{name}: {v!r} is not an integer >= {lowest}")
        return tuple(int(v) for v in values)

    @staticmethod
    def _config_keys(keys: Mapping[str, str] | None) -> dict[str, str]:
        keys = dict(keys or {})
        for setting, key in keys.items():
            if setting not in _SETTING_TYPES:
                raise GGLError(f"config_keys: {setting!r} is not a local-training setting; "
                               f"accepted: {', '.join(_SETTING_TYPES)}")
            if not isinstance(key, str) or not key:
                raise GGLError(f"config_keys[{setting!r}]: give the Flower config key as a "
                               f"non-empty string, got {key!r}")
        return keys

    def wants(self, round_: int, client: int) -> bool:
        return round_ in self.rounds and client in self.clients

    def check_run(self, num_rounds: int, num_clients: int) -> None:
        """Targets outside the run (``ServerConfig.num_rounds``, the number of
        partitions): one error before training starts."""
        late = [r for r in self.rounds if r > num_rounds]
        if late:
            raise GGLError(f"rounds {late} are after the run's last round ({num_rounds})")
        absent = [c for c in self.clients if c >= num_clients]
        if absent:
            raise GGLError(f"clients {absent} do not exist: the run has {num_clients} "
                           f"clients (partition ids 0..{num_clients - 1})")

    def server_model(self, sent: list[np.ndarray]) -> torch.nn.Module:
        """The victim with the round's global parameters loaded (dropout off: attacks that
        model the client's masks supply their own)."""
        from ggl.dropout import set_dropout

        c = self.config
        model = set_dropout(victim(c, self.data, self.plan.defenses), False)
        state = model.state_dict()
        if len(sent) != len(state):
            raise GGLError(f"the round's parameters hold {len(sent)} arrays, {c.model}'s "
                           f"state dict {len(state)}: is the server's model the one given "
                           f"in the audit's config?")
        loaded = {}
        for (name, value), array in zip(state.items(), sent):
            if tuple(array.shape) != tuple(value.shape):
                raise GGLError(f"parameter {name}: the round sent shape {tuple(array.shape)}"
                               f", {c.model} has {tuple(value.shape)}")
            loaded[name] = torch.as_tensor(np.asarray(array), dtype=value.dtype)
        model.load_state_dict(loaded)
        return model.to(self.plan.device)

    def update(self, model: torch.nn.Module, captured: CapturedUpdate) -> tuple[torch.Tensor, ...]:
        """``w0 - wE`` for every parameter of ``model.parameters()``, in that order."""
        names = list(model.state_dict())
        position = {name: i for i, name in enumerate(names)}
        return tuple(torch.as_tensor(captured.sent[position[name]] -
                                     captured.returned[position[name]]).to(self.plan.device)
                     for name, _ in model.named_parameters())

    def receive(self, round_: int, sent: list[np.ndarray] | None, returned, num_examples: int,
                metrics: dict, fit_config: dict | None = None) -> None:
        """One client's reply as a strategy wrapper sees it: attacked when it is a target
        (``metrics`` carry its partition id), a failed record when a target round's
        client did not say who it is. ``returned()`` gives its parameters, ``fit_config``
        is what the round sent it."""
        client = metrics.get(PARTITION_METRIC)
        if client is None:
            if round_ in self.rounds:
                self.unidentified(round_)
            return
        if self.wants(round_, int(client)):
            self.attack(CapturedUpdate(round_, int(client), sent, returned(),
                                       int(num_examples), dict(metrics),
                                       dict(fit_config or {})))

    def unidentified(self, round_: int) -> None:
        """A client of a target round reported no partition id: a failed record."""
        from ggl.study.store import new_record

        record = new_record(f"round{round_}-unidentified", {"round": round_, "client": None},
                            self.config.to_dict())
        record.update(status="failed", error=f"a client's fit metrics have no "
                      f"{PARTITION_METRIC!r}: its update cannot be told apart (report "
                      f"context.node_config['partition-id'] in the client's metrics)")
        self._keep(record)

    def attack(self, captured: CapturedUpdate) -> list[dict]:
        """Attack one captured update, then (with ground truth) the same attack on its
        ``control``; returns their store records (``failed`` with the error when anything
        goes wrong: the Flower run never sees the exception)."""
        controls = ["none"] + ([self.control] if self.secret is not None and
                               self.control != "none" else [])
        return [self._cell(captured, control) for control in controls]

    def _cell(self, captured: CapturedUpdate, control: str) -> dict:
        from ggl.study.store import add_run, new_record

        cell = {"round": captured.round, "client": captured.client, "control": control}
        cell_id = f"round{captured.round}-client{captured.client}" + \
            ("" if control == "none" else f"-{control}")
        config = replace(self.config, control=control)
        record = new_record(cell_id, cell, config.to_dict())
        started = time.perf_counter()
        try:
            run = self._attack(captured, config, self.store.run_dir(cell_id), started)
            if run["metrics"] is None:                  # no ground truth: nothing scored
                run = {**run, "metrics": {}}
            add_run(record, run)
            record.update(status="done", scored=self.secret is not None)
        except Exception as error:      # recorded, never raised into Flower's round
            record.update(status="failed", error=f"{type(error).__name__}: {error}",
                          traceback=traceback.format_exc())
        record["wall_time_s"] = time.perf_counter() - started
        self._keep(record)
        return record

    def _keep(self, record: dict) -> None:
        self.records.append(self.store.append(record))
        if self.on_record is not None:
            self.on_record(self.records[-1])

    def _attack(self, captured: CapturedUpdate, config: RunConfig, out: Path,
                started: float) -> dict:
        from ggl.api import run_record, write_run
        from ggl.plan import resolve
        from ggl.scenario import server_observation

        if captured.num_examples < 1:
            raise GGLError(f"client {captured.client} reported {captured.num_examples} "
                           f"images (FitRes.num_examples, or the reply's 'num-examples')")
        # N is what the client reported; its images are the secret's, not an --index
        config = replace(config, batch_size=captured.num_examples, index=())
        config, known = hyperparameters(config, [("the round's fit config",
                                                  captured.fit_config),
                                                 ("the client's fit metrics",
                                                  captured.metrics)], self.config_keys)
        plan = resolve(config)           # a fresh attack for every update
        torch.manual_seed(config.seed)
        device = plan.device
        model = self.server_model(captured.sent)
        secret = None
        if self.secret is not None:
            images, labels, indices = self.secret(captured.round, captured.client)
            secret = Secret(images.to(device), labels.to(device), tuple(indices))
            if len(labels) != captured.num_examples:
                raise GGLError(f"secret({captured.round}, {captured.client}) gave "
                               f"{len(labels)} images, the client reported "
                               f"{captured.num_examples}")
        d = self.data
        observation = server_observation(
            model, self.update(model, captured), images=captured.num_examples,
            image_shape=(d.channels, d.resolution, d.resolution), num_classes=d.num_classes,
            mean=d.mean, std=d.std,
            labels=secret.labels.clone() if config.known_labels else None,
            defenses=plan.defenses, public_images=self.public.to(device),
            public_labels=self.public_labels.to(device), domain=d.name,
            local_training=config.local_training(), local_known=config.local_known)
        control = None
        if plan.control is not None:         # the same attack given noise instead
            observation, control = plan.control(observation, config.seed)
        reconstruction = plan.attack.reconstruct(observation, None)
        record = run_record(plan, observation, reconstruction, secret, d, started=started,
                            control=control,
                            federation={"flower": {"round": captured.round,
                                                   "client": captured.client,
                                                   "num_examples": captured.num_examples}})
        record["schedule_known"] = self.schedule_known   # False: only the lr was used
        record["hyperparameters"] = known       # those read from Flower, and from where
        record["ground_truth"] = (
            "scored against the client's private batch (a simulation's secret reader)"
            if secret is not None else
            "none: a real deployment's update; the reconstruction and the loss are all "
            "there is, nothing is scored")
        out.mkdir(parents=True, exist_ok=True)
        write_run(out, record, reconstruction, secret, d)
        return record


@functools.lru_cache(maxsize=None)
def audited_strategy_class():
    """:class:`AuditedStrategy`, defined once Flower is importable."""
    flower()
    from flwr.common import parameters_to_ndarrays
    from flwr.server.strategy import Strategy

    class AuditedStrategy(Strategy):
        """A Flower strategy that attacks target clients' updates (module doc); every call
        goes to ``strategy`` unchanged."""

        def __init__(self, strategy, audit: FlowerAudit):
            if not isinstance(strategy, Strategy):
                raise GGLError(f"ggl can wrap a flwr.server.strategy.Strategy, got "
                               f"{type(strategy).__name__}")
            self.strategy, self.audit = strategy, audit
            self.sent: dict[int, list[np.ndarray]] = {}
            self.fit_configs: dict[int, dict[str, dict]] = {}   # round -> cid -> config

        def __repr__(self) -> str:
            return f"AuditedStrategy({self.strategy!r})"

        def initialize_parameters(self, client_manager):
            return self.strategy.initialize_parameters(client_manager)

        def configure_fit(self, server_round, parameters, client_manager):
            instructions = self.strategy.configure_fit(server_round, parameters,
                                                       client_manager)
            if server_round in self.audit.rounds:
                instructions = list(instructions)
                self.sent[server_round] = parameters_to_ndarrays(parameters)
                self.fit_configs[server_round] = {proxy.cid: dict(fit_ins.config)
                                                  for proxy, fit_ins in instructions}
            return instructions

        def aggregate_fit(self, server_round, results, failures):
            configs = self.fit_configs.pop(server_round, {})
            for proxy, fit_res in results:
                self.audit.receive(server_round, self.sent.get(server_round),
                                   lambda: parameters_to_ndarrays(fit_res.parameters),
                                   fit_res.num_examples, fit_res.metrics,
                                   configs.get(getattr(proxy, "cid", None)))
            self.sent.pop(server_round, None)
            return self.strategy.aggregate_fit(server_round, results, failures)

        def configure_evaluate(self, server_round, parameters, client_manager):
            return self.strategy.configure_evaluate(server_round, parameters, client_manager)

        def aggregate_evaluate(self, server_round, results, failures):
            return self.strategy.aggregate_evaluate(server_round, results, failures)

        def evaluate(self, server_round, parameters):
            return self.strategy.evaluate(server_round, parameters)

    return AuditedStrategy


def audit_message_strategy(strategy, audit: FlowerAudit):
    """The Message-API counterpart of :class:`AuditedStrategy` (``flwr.serverapp.strategy``,
    Flower >= 1.21): a copy of ``strategy`` whose ``configure_train`` records the round's
    arrays and whose ``aggregate_train`` attacks the target clients' replies before the
    strategy's own aggregation runs on the same replies. ``strategy.start(...)`` calls
    both, so the copy is used exactly as the original. Clients put ``"partition-id"`` and
    the strategy's ``weighted_by_key`` (N, ``"num-examples"``) in their reply's metrics."""
    flower()
    from flwr.serverapp.strategy import Strategy as MessageStrategy

    if not isinstance(strategy, MessageStrategy):
        raise GGLError(f"audit_message_strategy wraps a flwr.serverapp.strategy.Strategy, got "
                       f"{type(strategy).__name__} (a flwr.server.strategy.Strategy: use "
                       f"AuditedStrategy)")
    base = type(strategy)
    arrays_key = getattr(strategy, "arrayrecord_key", "arrays")
    examples_key = getattr(strategy, "weighted_by_key", "num-examples")
    config_key = getattr(strategy, "configrecord_key", "config")

    class AuditedMessageStrategy(base):
        def configure_train(self, server_round, arrays, config, grid):
            messages = super().configure_train(server_round, arrays, config, grid)
            if server_round in audit.rounds:
                messages = list(messages)
                self.ggl_sent[server_round] = arrays.to_numpy_ndarrays()
                self.ggl_configs[server_round] = {
                    m.metadata.dst_node_id: dict(m.content.get(config_key, {}))
                    for m in messages}
            return messages

        def aggregate_train(self, server_round, replies):
            replies = list(replies)           # read twice: here and by the strategy
            configs = self.ggl_configs.pop(server_round, {})
            for reply in (r for r in replies if not r.has_error()):
                metrics = reply.content["metrics"]
                audit.receive(server_round, self.ggl_sent.get(server_round),
                              lambda: reply.content[arrays_key].to_numpy_ndarrays(),
                              metrics.get(examples_key, 0), dict(metrics),
                              configs.get(reply.metadata.src_node_id))
            self.ggl_sent.pop(server_round, None)
            return super().aggregate_train(server_round, replies)

    audited = copy.copy(strategy)
    audited.__class__ = AuditedMessageStrategy
    audited.ggl_sent, audited.ggl_configs = {}, {}
    return audited


def __getattr__(name: str):
    # ``from ggl.flower import AuditedStrategy`` imports Flower only when asked for
    if name == "AuditedStrategy":
        return audited_strategy_class()
    raise AttributeError(name)
