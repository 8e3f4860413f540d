"""Every bad input ends in one ``Error:`` line with exit code 2, before any work, and
nothing already computed is overwritten (the cases a new and an adversarial user found)."""
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from ggl.cli import cli

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "generators" / "weights" / "mnist-wgan-gp"


def _one_error(result, *expected: str) -> str:
    """The run failed as a user error: exit 2, one ``Error:`` line, no traceback."""
    output = result.output
    assert result.exit_code == 2, (result.exit_code, output, result.exception)
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), output
    assert "Traceback" not in output and "weights_only" not in output
    for text in expected:
        assert text in output, (text, output)
    return output


def _invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.mark.parametrize("args, expected", [
    (["--seed", "99999999999999999999999"], ["--seed", "0..4611686018427387904"]),
    (["--width", "-4"], ["--width must be a whole number >= 1"]),
    (["--width", "0"], ["--width must be a whole number >= 1"]),
    (["--lr", "nan"], ["lr must be a finite number"]),
    (["--lr", "inf"], ["lr must be a finite number"]),
    (["--set", "budget=abc"], ["budget takes an integer"]),
    (["--set", "lr=abc"], ["lr takes a finite number"]),
    (["--set", "population=abc"], ["population takes an integer or none"]),
    (["--set", "chunk_size=0"], ["chunk_size", ">= 1"]),
    (["--attack", "ig", "--set", "signed=maybe"], ["signed takes true or false"]),
    (["--batch-size", "2", "--index", "0", "--index", "0"], ["names an image twice"]),
    (["--attack", "wiig"], ["--dropout 0.25"]),
    (["--attack", "dia"], ["--dropout 0.25"]),
    (["--attack", "precode-analytic"], ["--defense precode"]),
    (["--budget", "100000000000000000000000"], ["--budget must be in 1..1,000,000,000"]),
    (["--attack", "ig", "--set", "schedule=weekly"], ["unknown schedule 'weekly'", "steps"]),
    (["--attack", "idlg", "--distance", "cosin"], ["unknown distance 'cosin'", "did you mean cosine"]),
    (["--attack", "idlgg"], ["unknown attack 'idlgg'", "did you mean idlg"]),
])
def test_bad_run_options_are_one_line_errors(tmp_path, args, expected):
    _one_error(_invoke("run", *args, "--control", "none", "--out", str(tmp_path / "r")),
               *expected)
    assert not (tmp_path / "r" / "run.json").exists()


def test_an_out_folder_that_cannot_be_written_fails_before_any_work(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("not a folder")
    _one_error(_invoke("run", "--out", str(a_file)), "is a file, not a folder")
    _one_error(_invoke("run", "--out", str(a_file / "below")), "cannot be created")
    sweep = ROOT / "experiments" / "configs" / "tiny_sweep.yaml"
    _one_error(_invoke("sweep", str(sweep), "--out", str(a_file)), "is a file")
    _one_error(_invoke("compare", "--out", str(a_file)), "is a file")
    _one_error(_invoke("train-prior", "--out", str(a_file), "--steps", "1"), "is a file")
    assert a_file.read_text() == "not a folder"


def test_a_run_never_replaces_an_earlier_run_unless_asked(tmp_path):
    out = tmp_path / "run"
    args = ["run", "--attack", "idlg", "--budget", "2", "--index", "0", "--control", "none",
            "--device", "cpu", "--quiet", "--out", str(out)]
    assert _invoke(*args).exit_code == 0
    first = (out / "run.json").read_bytes()
    _one_error(_invoke(*args), "already holds a run", "--overwrite")
    assert (out / "run.json").read_bytes() == first
    assert _invoke(*args, "--overwrite").exit_code == 0


def test_train_prior_never_writes_into_a_prior_it_did_not_create(tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(SHIPPED, folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    _one_error(_invoke("train-prior", "--out", str(folder), "--steps", "1"),
               "already holds a prior")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


@pytest.mark.parametrize("args, expected", [
    (["--lr", "nan"], "--lr must be > 0 (a finite number)"),
    (["--gp-weight", "nan"], "--gp-weight must be >= 0"),
    (["--width", "-4"], "--width must be >= 1"),
    (["--seed", "-1"], "--seed must be an integer"),
])
def test_bad_train_prior_numbers_are_one_line_errors(tmp_path, args, expected):
    _one_error(_invoke("train-prior", *args, "--steps", "1", "--out", str(tmp_path / "p")),
               expected)


@pytest.mark.parametrize("config, expected", [
    ([1, 2], "must be a JSON object, got list"),
    ({"generator": None}, "must be a JSON object, got NoneType"),
    ({"generator": {"architecture": "wgan-gp", "width": "sixty-four"}},
     "width must be an integer, got 'sixty-four'"),
    ({"generator": {"architecture": "wgan-gp", "latent_dim": 1e9}}, "latent_dim must be an"),
    ({"generator": {"architecture": "wgan-gp", "latent_dim": 10 ** 9}}, "1..65536"),
])
def test_a_generator_config_of_wrong_types_is_one_line_error(tmp_path, config, expected):
    folder = tmp_path / "prior"
    folder.mkdir()
    shutil.copy(SHIPPED / "generator.safetensors", folder)
    (folder / "generator.json").write_text(json.dumps(config))
    _one_error(_invoke("run", "--generator", f"wgan-gp:{folder}", "--ng_method", "CMA",
                       "--budget", "100", "--control", "none", "--device", "cpu",
                       "--out", str(tmp_path / "r")), expected)
    _one_error(_invoke("score-prior", str(folder)), expected)


def test_weights_with_a_pickled_payload_are_refused_in_one_line(tmp_path):
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (Path.write_text, (marker, "payload ran"))

    weights = tmp_path / "weights.pt"
    with open(weights, "wb") as handle:
        pickle.dump({"w": Payload()}, handle)
    _one_error(_invoke("run", "--attack", "idlg", "--weights", str(weights), "--control",
                       "none", "--out", str(tmp_path / "r")), "nothing was unpickled")
    assert not marker.exists()
    torch.save({"w": torch.zeros(1)}, tmp_path / "plain.pt")     # tensors are accepted...
    _one_error(_invoke("run", "--attack", "idlg", "--weights", str(tmp_path / "plain.pt"),
                       "--control", "none", "--device", "cpu", "--out",
                       str(tmp_path / "r2")), "does not fit the lenet victim")


def test_a_sweep_config_that_is_not_utf8_or_has_no_axis_is_one_line_error(tmp_path):
    binary = tmp_path / "latin1.yaml"
    binary.write_bytes("name: caf\xe9\ngrid: {attack: [idlg]}\n".encode("latin-1"))
    _one_error(_invoke("sweep", str(binary), "--out", str(tmp_path / "s")), "not UTF-8")
    empty = tmp_path / "empty.yaml"
    empty.write_text("grid: {}\n")
    _one_error(_invoke("sweep", str(empty), "--out", str(tmp_path / "s")), "no axis")


def test_a_report_skips_malformed_records_and_names_them(tmp_path):
    store = tmp_path / "store"
    assert _invoke("run", "--attack", "idlg", "--budget", "2", "--index", "0", "--control",
                   "none", "--device", "cpu", "--quiet", "--out",
                   str(store / "good")).exit_code == 0
    for name, change in (("cell", {"config": "a string"}), ("metrics", {"metrics": [1]}),
                         ("seed", {"config": {"seed": [1]}})):
        record = json.loads((store / "good" / "run.json").read_text())
        for key, value in change.items():
            record[key] = value if key != "config" or isinstance(value, str) else \
                {**record["config"], **value}
        (store / name).mkdir()
        (store / name / "run.json").write_text(json.dumps(record))
    result = _invoke("report", str(store))
    assert result.exit_code == 0, result.output
    assert "3 malformed records skipped" in result.output
    assert "metrics/run.json: metrics is list" in result.output
    assert "seed/run.json: config.seed must be an integer" in result.output
    # a sweep store's index: a malformed line is named by its line number
    index = tmp_path / "sweep"
    index.mkdir()
    (index / "index.jsonl").write_text(
        json.dumps({"cell_id": "a", "status": "done", "config": {"attack": "idlg"},
                    "run_dir": 7}) + "\n" +
        json.dumps({"cell_id": ["b"], "status": "done"}) + "\n")
    _one_error(_invoke("report", str(index)), "index.jsonl:1: run_dir is int")


def test_compare_takes_the_data_root_and_generator_of_ggl_run(tmp_path):
    from ggl.study.compare import compare_sweep

    plain = compare_sweep(attacks=("idlg", "ggl"), index=(0,))
    given = compare_sweep(attacks=("idlg", "ggl"), index=(0,), data_root=str(tmp_path),
                          generator="default-unconditional")
    assert all(c.config.data_root == str(tmp_path) for c in given.cells)
    assert [c.config.extra.get("generator") for c in given.cells
            if c.config.attack == "ggl"] == ["default-unconditional"] * 2   # + its control
    assert all("generator" not in c.config.extra and c.config.data_root is None
               for c in plain.cells)
    _one_error(_invoke("compare", "--attack", "ggl", "--generator", "stylegan:x", "--out",
                       str(tmp_path / "c")), "unknown --generator 'stylegan:x'")


def test_every_nevergrad_method_runs_or_says_in_one_line_why_not():
    """All of nevergrad's ~540 names, at ggl's population (50) and at 1: the check that runs
    before any work either passes or raises one GGLError (a package to install, a method
    that takes one candidate at a time), and prints nothing of nevergrad's own."""
    import contextlib
    import io

    from ggl.errors import GGLError
    from ggl.optimizers.nevergrad_search import NevergradSearch, registry

    refused = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for population in (50, 1):
            for name in registry():
                try:
                    NevergradSearch(name, population=population).check_usable(100)
                except GGLError as err:
                    refused[name, population] = str(err)
    assert printed.getvalue() == ""
    assert all("\n" not in message and message.startswith(f"--ng_method {name} ")
               for (name, _), message in refused.items())
    assert ("CMA", 50) not in refused and ("TwoPointsDE", 50) not in refused
    assert "give --population 1" in refused["SMAC3", 50]


@pytest.mark.parametrize("method, population, expected", [
    ("SMAC3", "50", ["--ng_method SMAC3 asks for one candidate at a time", "--population 1"]),
    ("BayesOptimBO", "50", ["needs the package 'bayes_optim'", "pip install bayes-optim"]),
    ("PymooNSGA2", "1", ["needs the package 'pymoo'"]),
])
def test_nevergrad_methods_that_cannot_run_fail_before_any_work(tmp_path, method, population,
                                                                expected):
    """In a real process (nevergrad's failing wrappers also print from ``__del__`` and warn
    on stderr): exit 2 and the one Error line only."""
    import importlib.util
    import subprocess
    import sys

    package = {"BayesOptimBO": "bayes_optim", "PymooNSGA2": "pymoo"}.get(method)
    if package and importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed here")
    result = subprocess.run(
        [sys.executable, "-m", "ggl", "run", "--ng-method", method, "--population", population,
         "--budget", "50", "--control", "none", "--quiet", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("Error: "), output
    assert all(text in output for text in expected), output
    assert not (tmp_path / "o").exists()
