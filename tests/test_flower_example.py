"""examples/flower: the Flower app (its own CNN, its own training loop) audited by ggl.

The app's ServerApp and ClientApp run in Flower's simulation engine (Ray, 1 CPU) with 2
clients and 1 round, as `flwr run examples/flower` would run them: the audit rebuilds the
user's model from its registered name, reads the local hyperparameters from the train
config the server sent, and writes scored records.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="the flower extra (pip install -e '.[flower]')")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "flower"


@pytest.fixture()
def example(monkeypatch):
    from ggl.models import MODELS

    # the app registers its model; the other tests see ggl's models only
    monkeypatch.setattr(MODELS, "_entries", dict(MODELS._entries))
    monkeypatch.syspath_prepend(str(EXAMPLE))
    # Ray's workers import the client app by module name
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(EXAMPLE), os.environ.get(
        "PYTHONPATH", "")]))
    from ggl_flower_example import client_app, server_app

    yield server_app, client_app
    for name in [m for m in sys.modules if m.startswith("ggl_flower_example")]:
        del sys.modules[name]


def test_the_example_app_is_audited_with_its_own_model_and_hyperparameters(example,
                                                                           tmp_path,
                                                                           monkeypatch):
    from flwr.simulation import run_simulation

    from ggl.flower_sim import BACKEND_CONFIG

    server_app, client_app = example
    out = tmp_path / "audit"
    monkeypatch.setitem(server_app.DEFAULTS, "num-server-rounds", 1)
    monkeypatch.setitem(server_app.DEFAULTS, "num-clients", 2)
    monkeypatch.setitem(server_app.DEFAULTS, "attack-rounds", "1")
    monkeypatch.setitem(server_app.DEFAULTS, "attack", "ig-adam")
    monkeypatch.setitem(server_app.DEFAULTS, "budget", 20)
    monkeypatch.setitem(server_app.DEFAULTS, "lr", 0.02)
    monkeypatch.setitem(server_app.DEFAULTS, "out", str(out))
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
    run_simulation(server_app=server_app.app, client_app=client_app.app, num_supernodes=2,
                   backend_config=BACKEND_CONFIG)
    records = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert [r["cell"]["control"] for r in records] == ["none", "random-gradient"]
    assert all(r["status"] == "done" for r in records), [r.get("error") for r in records]
    stored = json.loads((out / records[0]["run_dir"] / "run.json").read_text())
    assert stored["config"]["model"] == "flower-quickstart-cnn"
    assert stored["config"]["batch_size"] == 4          # the client's num-examples
    assert stored["hyperparameters"]["local_lr"] == {
        "value": 0.02, "from": "the round's fit config 'lr'"}
    assert stored["hyperparameters"]["local_epochs"]["value"] == 2
    assert stored["metrics"]["psnr"] > 0 and "scored against" in stored["ground_truth"]
