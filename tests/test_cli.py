"""The ``ggl`` command: every user mistake is one clear error (exit 2, no traceback)."""
import json
import os
from importlib import metadata

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ggl.attacks import ATTACKS
from ggl.cli import cli
from ggl.data import DATASETS
from ggl.models import MODELS, build_victim
from ggl.objective import DISTANCES


@pytest.fixture
def invoke(tmp_path):
    runner = CliRunner()

    def _invoke(*args):
        return runner.invoke(cli, list(args))

    return _invoke


def _assert_user_error(result, *mentions):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.output.startswith("Error: ")
    assert result.output.count("Error: ") == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    for text in mentions:
        assert text in result.output, f"{text!r} not in {result.output!r}"


@pytest.mark.parametrize("option,registry", [("--attack", ATTACKS), ("--model", MODELS),
                                             ("--dataset", DATASETS)])
def test_unknown_names_list_the_valid_ones(invoke, tmp_path, option, registry):
    result = invoke("run", option, "nope", "--out", str(tmp_path / "o"), "--quiet")
    _assert_user_error(result, "'nope'", *registry)
    assert not (tmp_path / "o").exists()


def test_unknown_distance_lists_the_valid_ones(invoke, tmp_path):
    result = invoke("run", "--attack", "idlg", "--distance", "nope", "--out", str(tmp_path))
    _assert_user_error(result, "'nope'", *DISTANCES)


@pytest.mark.parametrize("args,mentions", [
    (["--index", "1000"], ["1000", "0..999"]),
    (["--index", "-1"], ["-1", "0..999"]),
    (["--batch-size", "0"], ["--batch-size", "0"]),
    (["--batch-size", "1001"], ["1001", "1000"]),
    (["--budget", "0"], ["--budget", "0"]),
    (["--attack", "dlg", "--budget", "0"], ["--budget", "0"]),
    (["--restarts", "0"], ["--restarts", "0"]),
    (["--index", "1", "--index", "2"], ["--index", "--batch-size"]),
    (["--set", "wings=3"], ["wings", "budget"]),
    (["--layer-weights", "nope"], ["'nope'", "mean", "sum", "exponential"]),
    (["--victim-steps", "-1"], ["--victim-steps", "-1"]),
    (["--resolution", "28"], ["28", "32"]),
], ids=lambda value: " ".join(value) if isinstance(value, list) else None)
def test_bad_numbers_are_user_errors(invoke, tmp_path, args, mentions):
    result = invoke("run", *args, "--out", str(tmp_path / "o"), "--quiet")
    _assert_user_error(result, *mentions)


def test_missing_dataset_files(invoke, tmp_path):
    result = invoke("run", "--dataset", "cifar10", "--data-root", str(tmp_path), "--quiet",
                    "--out", str(tmp_path / "o"))
    _assert_user_error(result, "cifar10", str(tmp_path), "--download")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu(invoke, tmp_path):
    result = invoke("run", "--device", "cuda", "--out", str(tmp_path / "o"))
    _assert_user_error(result, "cuda", "cpu")


def test_unknown_device(invoke, tmp_path):
    _assert_user_error(invoke("run", "--device", "tpu", "--out", str(tmp_path / "o")),
                       "'tpu'", "cpu")


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_weights_of_another_architecture(invoke, tmp_path, suffix):
    state = build_victim("mlp", 1, 32, 10).state_dict()
    path = tmp_path / f"mlp{suffix}"
    if suffix == ".pt":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file
        save_file(state, str(path))
    result = invoke("run", "--attack", "idlg", "--model", "lenet", "--weights", str(path),
                    "--out", str(tmp_path / "o"), "--quiet")
    _assert_user_error(result, str(path), "lenet")


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_corrupt_weights_file(invoke, tmp_path, suffix):
    path = tmp_path / f"junk{suffix}"
    path.write_bytes(os.urandom(2048))
    result = invoke("run", "--attack", "idlg", "--weights", str(path),
                    "--out", str(tmp_path / "o"), "--quiet")
    _assert_user_error(result, str(path), "cannot read")


def test_missing_weights_file(invoke, tmp_path):
    path = tmp_path / "absent.pt"
    result = invoke("run", "--weights", str(path), "--out", str(tmp_path / "o"))
    _assert_user_error(result, str(path), "does not exist")


def test_weights_of_the_right_architecture_load(tmp_path):
    """The error above is not raised for every file: a LeNet state dict loads."""
    from ggl.models import build_victim as build
    source = build("lenet", 1, 32, 10, seed=7)
    path = tmp_path / "lenet.pt"
    torch.save(source.state_dict(), path)
    loaded = build("lenet", 1, 32, 10, seed=0, weights=path)
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(),
                                                 loaded.state_dict().values()))


# --------------------------------------------------------------------------- happy paths
def test_run_writes_record_and_images(invoke, tmp_path):
    out = tmp_path / "run"
    result = invoke("run", "--attack", "idlg", "--budget", "5", "--index", "3",
                    "--out", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    assert "PSNR" in result.output and str(out / "run.json") in result.output
    for name in ("run.json", "original.png", "reconstruction.png", "progress.gif"):
        assert (out / name).is_file(), name
    record = json.loads((out / "run.json").read_text())
    assert record["config"]["attack"] == "idlg"
    assert record["config"]["budget"] == 5 and record["config"]["index"] == [3]
    assert record["private_indices"] == [3]
    metrics = record["metrics"]
    for key in ("psnr", "ssim", "label_accuracy"):
        assert isinstance(metrics[key], float)
    assert metrics["label_accuracy"] == 1.0          # iDLG's label rule is exact for B = 1
    assert metrics["lpips"] is None and "unavailable" in metrics["lpips_note"]
    assert record["evaluations"] > 0 and record["iterations"] == 5
    assert record["attack_wall_time_s"] > 0 and record["attack_cpu_time_s"] > 0
    assert record["versions"]["torch"] == metadata.version("torch")
    assert "python" in record["versions"]
    assert set(record["files"]) >= {"run.json", "original.png", "reconstruction.png",
                                    "progress.gif"}
    with Image.open(out / "progress.gif") as gif:
        assert gif.n_frames >= 2
    with Image.open(out / "original.png") as png, Image.open(out / "reconstruction.png") as rec:
        assert png.size == rec.size
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]   # atomic writes


def test_run_with_a_batch_of_two(invoke, tmp_path):
    out = tmp_path / "batch"
    result = invoke("run", "--attack", "idlg", "--budget", "5", "--index", "3",
                    "--batch-size", "2", "--out", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    record = json.loads((out / "run.json").read_text())
    assert record["private_indices"] == [3, 4]
    assert record["true_labels"] == [3, 4]
    metrics = record["metrics"]
    assert sorted(metrics["matching"]) == [0, 1]
    assert len(metrics["per_image"]["psnr"]) == 2
    assert 0.0 <= metrics["label_accuracy"] <= 1.0
    assert len(record["recovered_labels"]) == 2
    assert (out / "reconstruction.png").is_file()


def test_list_prints_every_registered_name(invoke):
    result = invoke("list")
    assert result.exit_code == 0
    for registry in (ATTACKS, MODELS, DATASETS, DISTANCES):
        for name in registry:
            assert f"  {name} " in result.output, name


def test_run_help_lists_options(invoke):
    result = invoke("run", "--help")
    assert result.exit_code == 0
    for option in ("--attack", "--budget", "--index", "--batch-size", "--weights"):
        assert option in result.output


def test_shell_completion_offers_the_registered_names():
    import click

    run = cli.commands["run"]
    ctx = click.Context(run)

    def offered(name: str, incomplete: str) -> list[str]:
        param = next(p for p in run.params if p.name == name)
        return [item.value for item in param.shell_complete(ctx, incomplete)]

    assert offered("attack", "i") == ["idlg", "ig", "ig-adam", "ig-multi"]
    assert offered("distance", "") == ["l2", "l1", "cosine", "layer-cosine"]
    assert "DiagonalCMA" in offered("ng_method", "Diag")        # nevergrad's, loaded lazily
    assert offered("defense", "co") == ["compression"]


def test_json_output_for_scripts(invoke, tmp_path):
    """``--json`` on run, sweep, compare and report: stdout is one JSON document (strict:
    no NaN) with the numbers the human output shows; progress goes to stderr."""
    import json

    run_out = tmp_path / "run"
    result = invoke("run", "--attack", "idlg", "--budget", "3", "--control", "none",
                    "--device", "cpu", "--out", str(run_out), "--json")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    stored = json.loads((run_out / "run.json").read_text())
    assert printed["out"] == str(run_out)
    assert printed["metrics"] == stored["metrics"] and printed["config"] == stored["config"]

    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text("name: s\nsettings: {model: lenet, device: cpu}\n"
                          "grid: {attack: [idlg], index: [0, 1]}\n"
                          "attack_options: {idlg: {budget: 2}}\n")
    result = invoke("sweep", str(sweep_file), "--out", str(tmp_path / "store"), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["total"], summary["done"], summary["failed"]) == (2, 2, 0)
    assert [c["status"] for c in summary["cells"]] == ["done", "done"]
    assert all(isinstance(c["metrics"]["psnr"], float) for c in summary["cells"])

    result = invoke("report", str(tmp_path / "store"), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    (row,) = report["rows"]
    assert (row["attack"], row["cells"], row["metrics"]["psnr"]["n"]) == ("idlg", 2, 2)
    psnrs = [c["metrics"]["psnr"] for c in summary["cells"]]
    assert row["metrics"]["psnr"]["mean"] == pytest.approx(sum(psnrs) / 2)

    result = invoke("compare", "--attack", "idlg", "--budget", "idlg=2", "--control", "none",
                    "--device", "cpu", "--threads", "1", "--out", str(tmp_path / "cmp"),
                    "--json")
    assert result.exit_code == 0, result.output
    compared = json.loads(result.stdout)
    assert compared["sweep"]["done"] == 1 and compared["report"]["rows"][0]["attack"] == "idlg"


def test_strict_json_turns_non_finite_numbers_into_null():
    import json

    from ggl.results import strict_json

    assert json.loads(strict_json({"loss": float("nan"), "x": [float("inf"), 1.5]})) == \
        {"loss": None, "x": [None, 1.5]}
