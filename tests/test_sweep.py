"""``ggl sweep``: grid validation, cell ids, the resumable store, local and Ray executors.

The tiny grid (experiments/configs/tiny_sweep.yaml: idlg and ig x no defense and noise x
private images 0 and 1, budgets 5 and 10 on LeNet) is run once in this process as the
reference; every other executor must give the same records.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import ggl.api
from ggl.cli import cli
from ggl.errors import GGLError
from ggl.study.executors import make_executor
from ggl.study.grid import cell_id
from ggl.study.spec import load_sweep, parse_sweep
from ggl.study.store import INDEX_FILE, ResultStore
from ggl.study.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "experiments" / "configs" / "tiny_sweep.yaml"
#: what must agree between executors (wall times differ, of course)
COMPARED = ("status", "metrics", "loss", "evaluations", "iterations", "cell", "config")

SMALL = """\
name: small
settings:
  model: lenet
  device: cpu
grid:
  attack: [idlg]
  defense: [none, "noise:0.01"]
  index: [0, 1]
attack_options:
  idlg: {budget: 3}
"""


def _lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / INDEX_FILE).read_text().splitlines()]


def _same_records(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        left = {k: a[key][k] for k in COMPARED}
        right = {k: b[key][k] for k in COMPARED}
        left["config"] = {k: v for k, v in left["config"].items() if k != "out"}
        right["config"] = {k: v for k, v in right["config"].items() if k != "out"}
        assert left == right, key


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The tiny sweep run one cell after another in this process (one torch thread)."""
    out = tmp_path_factory.mktemp("serial")
    return run_sweep(TINY, out, threads=1, quiet=True)


@pytest.fixture
def count_runs(monkeypatch):
    """Counts ``ggl.api.run`` calls (cells run in this process) by config index/defense."""
    calls = []
    real = ggl.api.run

    def counting(config, *args, **kwargs):
        calls.append((config.attack, config.defense, config.index))
        return real(config, *args, **kwargs)

    monkeypatch.setattr(ggl.api, "run", counting)
    return calls


# --- the grid --------------------------------------------------------------------------
def test_grid_expansion_and_stable_ids(tmp_path):
    sweep = load_sweep(TINY)
    assert sweep.name == "tiny_sweep" and len(sweep.cells) == 8 and sweep.merged == 0
    ids = [c.cell_id for c in sweep.cells]
    assert len(set(ids)) == 8
    assert ids == [c.cell_id for c in load_sweep(TINY).cells]
    first = sweep.cells[0]
    assert first.values == {"attack": "idlg", "defense": [], "index": [0], "seed": 0}
    assert first.config.budget == 5 and first.config.index == (0,)
    assert {c.config.budget for c in sweep.cells if c.config.attack == "ig"} == {10}

    # the id is the run's config: not the sweep's name, key order or axis order
    shuffled = TINY.read_text().replace("name: tiny_sweep", "name: other")
    shuffled = shuffled.replace("  attack: [idlg, ig]\n", "").replace(
        "  seed: [0]\n", "  seed: [0]\n  attack: [ig, idlg]\n")
    assert sorted(c.cell_id for c in parse_sweep(shuffled, "x.yaml").cells) == sorted(ids)
    # ... and changes with anything that changes the run
    cheaper = TINY.read_text().replace("idlg: {budget: 5}", "idlg: {budget: 4}")
    assert len(set(ids) & {c.cell_id for c in parse_sweep(cheaper).cells}) == 4
    assert cell_id(first.config) == first.cell_id


def test_defense_params_adaptive_and_batches():
    sweep = parse_sweep("""
settings: {model: lenet, device: cpu, budget: 2}
grid:
  attack: idlg
  defense:
    - none
    - {name: compression, params: [20, 90]}
    - [clipping:4, noise:0.01]
    - {name: pruning, params: 50, options: {noise: 0.1}}
  adaptive: [false, true]
  index: [[0, 1]]
""")
    chains = [c.config.defense for c in sweep.cells]
    assert chains == [(), ("compression:20",), ("compression:20",), ("compression:90",),
                      ("compression:90",), ("clipping:4", "noise:0.01"),
                      ("clipping:4", "noise:0.01"), ("pruning:50,noise=0.1",),
                      ("pruning:50,noise=0.1",)]
    # without a defense adaptive means nothing: that cell runs once, non-adaptive
    assert sweep.merged == 1 and not sweep.cells[0].config.adaptive
    assert all(c.config.batch_size == 2 and c.config.index == (0, 1) for c in sweep.cells)


@pytest.mark.parametrize("text,line,mentions", [
    ("name: x\ngrids: {attack: [ig]}\n", 2,
     ["unknown key 'grids'", "name, settings, grid, attack_options"]),
    ("grid:\n  attack: [ig]\n  indices: [0]\n", 3,
     ["unknown key 'indices' in grid", "attack", "defense", "adaptive", "index", "seed"]),
    ("grid:\n  attack:\n    - idlg\n    - nope\n", 4,
     ["unknown attack 'nope'", "dlg", "idlg", "ig", "ggl"]),
    ("grid:\n  attack: [ig]\n  defense: [none, 'nois:0.1']\n", 3,
     ["unknown defense 'nois'", "noise", "compression"]),
    ("grid:\n  defense:\n    - noise:abc\n", 3, ["'abc'", "must be a number"]),
    ("grid:\n  defense:\n    - {name: compression, param: [1]}\n", 3,
     ["unknown key 'param'", "name, params, options"]),
    ("settings:\n  model: lenet\n  ng_method: CMA\ngrid: {attack: [ig]}\n", 3,
     ["unknown key 'ng_method' in settings", "known_labels", "attack_options"]),
    ("settings:\n  known_labels: maybe\ngrid: {attack: [ig]}\n", 2,
     ["known_labels must be true or false", "'maybe'"]),
    ("grid:\n  attack: [ig]\n  index: [0, -1]\n", 3, ["index must be >= 0"]),
    ("grid:\n  attack: [ig]\n  seed: [0]\n  seed: [1]\n", 4, ["duplicate key 'seed'"]),
    ("grid:\n  attack: [ig]\nattack_options:\n  ig: {wings: 3}\n", 4,
     ["attack_options.ig", "wings", "budget"]),
    ("grid:\n  attack: [ig]\nattack_options:\n  igg: {budget: 3}\n", 4,
     ["unknown attack 'igg'"]),
    ("settings: {budget: 5}\ngrid:\n  budget: [1, 2]\n", 3, ["budget is set both"]),
    ("grid:\n  attack: [ig\n", 3, ["invalid YAML"]),
    ("settings: {model: lenet}\n", 1, ["missing key 'grid'"]),
], ids=["top-level", "grid-key", "attack", "defense", "defense-param", "defense-entry",
        "settings-key", "bool", "index", "duplicate", "attack-option", "options-attack",
        "conflict", "syntax", "no-grid"])
def test_bad_configs_name_file_line_and_valid_keys(tmp_path, text, line, mentions):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(GGLError) as info:
        load_sweep(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    for mention in mentions:
        assert mention in message, f"{mention!r} not in {message!r}"


def test_every_cell_is_validated_before_anything_runs(tmp_path, count_runs):
    path = tmp_path / "cells.yaml"          # each value is fine alone; one cell is not
    path.write_text("settings: {device: cpu, budget: 1, extra: {signed: false}}\n"
                    "grid:\n  attack: [ig, idlg]\n  index: [0]\n")
    with pytest.raises(GGLError, match=r"cells\.yaml:2: cell \[idlg index=0\]: .*signed"):
        run_sweep(path, tmp_path / "out", quiet=True)
    assert count_runs == [] and not (tmp_path / "out").exists()


def test_user_errors_of_the_command(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["sweep", str(tmp_path / "missing.yaml"), "--out",
                                 str(tmp_path / "o")])
    assert result.exit_code == 2 and result.output.startswith("Error: ")
    assert "missing.yaml" in result.output and "Traceback" not in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid:\n  atack: [ig]\n")
    result = runner.invoke(cli, ["sweep", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and f"{bad}:2: unknown key 'atack'" in result.output
    with pytest.raises(GGLError, match="--address"):
        make_executor("local", address="127.0.0.1:6379")
    with pytest.raises(GGLError, match="--workers"):
        make_executor("local", workers=0)


def test_ray_missing_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)            # import ray -> ImportError
    with pytest.raises(GGLError, match=r'pip install "ggl\[ray\]"'):
        make_executor("ray")


def test_a_second_sweep_on_the_same_folder_is_refused(tmp_path):
    store = ResultStore(tmp_path)
    store.lock()
    try:
        with pytest.raises(GGLError, match="another ggl sweep"):
            run_sweep(TINY, tmp_path, quiet=True)
    finally:
        store.unlock()


# --- the store -------------------------------------------------------------------------
def test_the_store_records_every_cell(reference):
    assert (reference.total, reference.done, reference.failed, reference.skipped) == (8, 8, 0, 0)
    out = reference.store.parent
    lines = _lines(out)
    assert sorted(r["cell_id"] for r in lines) == sorted(c.cell_id for c in load_sweep(TINY).cells)
    for record in lines:
        assert record["status"] == "done" and record["error"] is None
        assert record["attempt"] == 1 and record["sweep"] == "tiny_sweep"
        assert set(record["metrics"]) >= {"psnr", "ssim", "lpips", "label_accuracy"}
        assert math.isfinite(record["metrics"]["psnr"]) and record["metrics"]["lpips"] is None
        assert record["evaluations"] > 0 and record["wall_time_s"] > 0
        assert record["config"]["attack"] == record["cell"]["attack"]
        run = json.loads((out / record["run_dir"] / "run.json").read_text())
        assert run["metrics"]["psnr"] == record["metrics"]["psnr"]
        assert (out / record["run_dir"] / "reconstruction.png").exists()
    assert json.loads((out / "sweep.json").read_text())["name"] == "tiny_sweep"


def test_failures_are_recorded_skipped_when_done_and_retried(tmp_path, monkeypatch):
    config = tmp_path / "small.yaml"
    config.write_text(SMALL)
    out = tmp_path / "out"
    real = ggl.api.run

    def flaky(run_config, *args, **kwargs):
        if run_config.index == (1,) and not run_config.defense:
            raise RuntimeError("boom")
        result = real(run_config, *args, **kwargs)
        if run_config.index == (1,):
            result.record["loss"] = float("nan")
        return result

    monkeypatch.setattr(ggl.api, "run", flaky)
    summary = run_sweep(config, out, threads=1, quiet=True)
    assert (summary.done, summary.failed, summary.skipped) == (2, 2, 0)
    failed = {tuple(r["cell"]["defense"]): r for r in _lines(out) if r["status"] == "failed"}
    assert failed[()]["error"] == "RuntimeError: boom" and "boom" in failed[()]["traceback"]
    assert "loss is nan" in failed[("noise:0.01",)]["error"]
    assert failed[("noise:0.01",)]["loss"] is None                    # strict JSON

    calls = []

    def counting(run_config, *args, **kwargs):
        calls.append(run_config.index)
        return real(run_config, *args, **kwargs)

    monkeypatch.setattr(ggl.api, "run", counting)
    summary = run_sweep(config, out, threads=1, quiet=True)
    assert calls == [(1,), (1,)]                    # only the failed cells, once each
    assert (summary.done, summary.failed, summary.skipped) == (2, 0, 2)
    assert all(r["status"] == "done" for r in summary.records.values())
    assert {r["attempt"] for r in summary.records.values() if r["cell"]["index"] == [1]} == {2}

    result = CliRunner().invoke(cli, ["sweep", str(config), "--out", str(out), "--threads",
                                      "1", "--quiet"])
    assert result.exit_code == 0, result.output
    assert calls == [(1,), (1,)]                    # nothing ran a second time
    assert "4 cells: 0 done, 0 failed, 4 skipped" in result.output
    assert str(out / INDEX_FILE) in result.output
    assert len(_lines(out)) == 6                    # 4 first attempts + 2 retries


def test_a_torn_last_line_is_dropped_and_its_cell_runs_again(tmp_path, count_runs):
    config = tmp_path / "small.yaml"
    config.write_text(SMALL.replace("index: [0, 1]", "index: [0]"))
    out = tmp_path / "out"
    run_sweep(config, out, threads=1, quiet=True)
    index = out / INDEX_FILE
    text = index.read_text()
    index.write_text(text[:len(text) - 40])         # killed in the middle of the last append
    count_runs.clear()
    summary = run_sweep(config, out, threads=1, quiet=True)
    assert len(count_runs) == 1 and (summary.done, summary.skipped) == (1, 1)
    assert len(_lines(out)) == 2


def test_an_interrupted_sweep_resumes_without_loss_or_repeats(tmp_path, reference,
                                                              count_runs):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "ggl.cli", "sweep", str(TINY), "--out", str(out),
               "--threads", "1", "--quiet"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    index = out / INDEX_FILE
    deadline = time.monotonic() + 180
    try:
        while not (index.exists() and index.read_text().count("\n") >= 1):
            assert process.poll() is None, process.stdout.read().decode()
            assert time.monotonic() < deadline, "no cell finished in 180 s"
            time.sleep(0.02)
    finally:
        os.kill(process.pid, signal.SIGKILL)        # no chance to clean up
        process.wait()
    finished = {r["cell_id"] for r in _lines(out)}
    assert 1 <= len(finished) < 8, "the sweep finished before it could be interrupted"

    summary = run_sweep(TINY, out, threads=1, quiet=True)
    assert summary.skipped == len(finished) and summary.done == 8 - len(finished)
    assert len(count_runs) == 8 - len(finished)     # nothing ran twice
    lines = _lines(out)
    assert sorted(r["cell_id"] for r in lines) == sorted(reference.records)   # each once
    _same_records(summary.records, reference.records)


def test_three_kills_in_a_row_lose_nothing_and_leave_no_trace(tmp_path, reference):
    """kill -9 at three seeded random moments (while a cell runs, between cells, during a
    write), then a resume: every cell done exactly once, every run folder complete, no
    temporary file left."""
    import random

    out = tmp_path / "out"
    command = [sys.executable, "-m", "ggl.cli", "sweep", str(TINY), "--out", str(out),
               "--threads", "1", "--quiet"]
    written = out / "sweep.json"               # written once the sweep has parsed and locked
    for delay in random.Random(19).sample(range(0, 120), 3):    # hundredths of a second
        launched = time.time()
        process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not (written.exists() and written.stat().st_mtime >= launched - 0.01):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(delay / 100)
        assert process.poll() is None, "the sweep finished before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    summary = run_sweep(TINY, out, threads=1, quiet=True)
    assert summary.done + summary.skipped == 8 and summary.failed == 0
    lines = [r for r in _lines(out) if r["status"] == "done"]
    assert sorted(r["cell_id"] for r in lines) == sorted(reference.records)   # each once
    for record in lines:
        run = json.loads((out / record["run_dir"] / "run.json").read_text())
        assert all((out / record["run_dir"] / name).is_file() for name in run["files"])
    assert not list(out.rglob("*.tmp"))
    _same_records(summary.records, reference.records)


# --- executors -------------------------------------------------------------------------
def test_two_local_workers_give_the_serial_records(tmp_path, reference):
    summary = run_sweep(TINY, tmp_path, workers=2, quiet=True)
    assert (summary.done, summary.failed) == (8, 0)
    assert len(_lines(tmp_path)) == 8
    _same_records(summary.records, reference.records)


@pytest.mark.parametrize("workers", [1, 2])
def test_running_cells_report_their_attack_progress(tmp_path, workers):
    """What the inner progress bars of ``ggl sweep``/``ggl compare`` show: each running
    cell's attack iterations, from this process or from worker processes, ending at the
    attack's own total."""
    from ggl.study.executors import LocalExecutor, make_task
    from ggl.study.store import ResultStore

    sweep = parse_sweep(SMALL)
    store = ResultStore(tmp_path)
    tasks = [make_task(cell, store) for cell in sweep.cells]
    records, progress = [], {}
    LocalExecutor(workers, threads=1).run(
        tasks, records.append,
        lambda cell, i, total, loss: progress.setdefault(cell, []).append((i, total)))
    assert sorted(r["cell_id"] for r in records) == sorted(progress) == \
        sorted(c.cell_id for c in sweep.cells)
    for reports in progress.values():
        assert reports[-1] == (3, 3)               # idlg's budget: 3 L-BFGS steps
        assert [i for i, _ in reports] == sorted(i for i, _ in reports)


def test_ray_gives_the_serial_records(tmp_path, reference):
    try:
        import ray
    except ImportError as err:
        pytest.skip(f"ray is not installed ({err}); pip install 'ggl[ray]'")
    assert not ray.is_initialized()
    summary = run_sweep(TINY, tmp_path, executor="ray", workers=2, quiet=True)
    assert not ray.is_initialized()                 # the executor shut down what it started
    assert (summary.done, summary.failed) == (8, 0)
    assert len(_lines(tmp_path)) == 8
    _same_records(summary.records, reference.records)


def test_exclude_leaves_out_matching_cells_and_names_bad_axes(tmp_path):
    text = """
grid:
  attack: [idlg, ig]
  defense: [none, "noise:0.01"]
  adaptive: [false, true]
  distance: [l2, cosine]
exclude:
  - {adaptive: true, distance: cosine}
  - {attack: idlg, defense: ["noise:0.01"], adaptive: false}
"""
    sweep = parse_sweep(text, tmp_path / "x.yaml")
    labels = [cell.label() for cell in sweep.cells]
    assert not any("adaptive=True" in label and "distance=cosine" in label for label in labels)
    assert not any(label.startswith("idlg") and "noise" in label and "adaptive=False" in label
                   for label in labels)
    # 16 combinations: 6 excluded (4 + 2), 2 merged (no defense: adaptive means nothing)
    assert (len(sweep.cells), sweep.excluded, sweep.merged) == (8, 6, 2)
    with pytest.raises(GGLError, match=r"x.yaml:5: unknown key .seed. in exclude\[0\]; "
                                       r"valid keys: attack, defense"):
        parse_sweep("grid:\n  attack: [idlg]\n  defense: [none]\nexclude:\n  - {seed: 1}\n",
                    tmp_path / "x.yaml")


@pytest.mark.parametrize("path", sorted((ROOT / "experiments" / "configs").glob("*.yaml")),
                         ids=lambda path: path.name)
def test_every_shipped_sweep_config_is_valid(path):
    """The configs experiments/README.md tells users to run parse and validate every cell
    (a renamed option or attack would otherwise surface only when someone runs them)."""
    from ggl.study.spec import parse_sweep

    sweep = parse_sweep(path.read_text(), path)
    assert sweep.cells
