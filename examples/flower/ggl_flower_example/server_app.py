"""The server: Flower's FedAvg (Message API), audited by ggl.

The ggl part is the ``FlowerAudit`` and the ``audit_message_strategy`` line; without them
this is an ordinary Flower server app. With ``ground-truth = true`` (a simulation, where
the server may read the clients' partitions) every reconstruction is scored against the
client's images; ``false`` is a real deployment: the records hold the reconstructions and
the attack's loss only, and say so.
"""
from __future__ import annotations

from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from ggl import RunConfig
from ggl.flower import FlowerAudit, audit_message_strategy
from ggl_flower_example.task import MODEL_NAME, Net, load_partition

#: the run config's defaults (pyproject.toml's [tool.flwr.app.config] overrides them)
DEFAULTS = {"num-server-rounds": 3, "num-clients": 10, "images-per-client": 4, "local-epochs": 2,
            "batch-size": 4, "lr": 0.05, "attack": "ggl", "budget": 1000,
            "attack-clients": "0", "attack-rounds": "1,3", "ground-truth": True,
            "out": "flower_audit", "device": "cpu"}
#: where the clients find their local hyperparameters in the train config
CONFIG_KEYS = {"local_lr": "lr", "local_epochs": "local-epochs",
               "local_batch_size": "batch-size"}

app = ServerApp()


def _ids(text) -> list[int]:
    return [int(part) for part in str(text).split(",") if part.strip()]


def _progress(record: dict) -> None:
    cell, metrics = record["cell"], record.get("metrics") or {}
    what = "" if cell.get("control", "none") == "none" else f" ({cell['control']} control)"
    score = (f"PSNR {metrics['psnr']:.2f} dB, judge {100 * metrics['judge_accuracy']:.0f}%"
             if metrics.get("psnr") is not None else record.get("error") or "not scored")
    print(f"ggl: round {cell['round']}, client {cell['client']}{what}: {record['status']} "
          f"{score}", flush=True)


@app.main()
def main(grid: Grid, context: Context) -> None:
    run = {**DEFAULTS, **context.run_config}
    num_clients = int(run["num-clients"])       # the federation's size: every round waits
    images = int(run["images-per-client"])

    def secret(round_: int, client: int):      # the simulation's ground truth
        return load_partition(client, num_clients, images)

    audit = FlowerAudit(RunConfig(attack=run["attack"], model=MODEL_NAME, protocol="fedavg",
                                  budget=int(run["budget"]), device=run["device"]),
                        clients=_ids(run["attack-clients"]), rounds=_ids(run["attack-rounds"]),
                        out=run["out"], secret=secret if run["ground-truth"] else None,
                        config_keys=CONFIG_KEYS, on_record=_progress)
    audit.check_run(int(run["num-server-rounds"]), num_clients)
    strategy = audit_message_strategy(FedAvg(fraction_evaluate=0.0, min_train_nodes=num_clients,
                                             min_available_nodes=num_clients), audit)
    strategy.start(grid=grid, initial_arrays=ArrayRecord(Net().state_dict()),
                   num_rounds=int(run["num-server-rounds"]),
                   train_config=ConfigRecord({key: run[key] for key in (
                       "lr", "local-epochs", "batch-size", "images-per-client")}))
    print(f"ggl: {len(audit.records)} records -> {audit.store.root / 'index.jsonl'}; "
          f"ggl report {audit.store.root}", flush=True)
