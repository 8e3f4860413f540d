"""Fuzzing the commands: generated bad values for the options of ``ggl run``,
``ggl train-prior`` and ``ggl sweep``, and generated bad files for every file input, each
must end as a user error: exit code 2, exactly one ``Error:`` line, no traceback, nothing
written, no pickled payload executed. Bounded (60 to 300 examples per property, 970 in
all) to stay within a minute of CI.
"""
import json
import os
import pickle
import tempfile
from pathlib import Path

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ggl.attacks import ATTACKS
from ggl.cli import cli
from ggl.controls import CONTROLS
from ggl.data import DATASETS
from ggl.defenses import DEFENSES
from ggl.generators import GENERATORS
from ggl.models import MODELS
from ggl.objective import DISTANCES, LAYER_WEIGHTS
from ggl.optimizers import OPTIMIZERS

FUZZ = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])
SHIPPED = Path(__file__).resolve().parents[1] / "generators" / "weights" / "mnist-wgan-gp"


def _parses(text: str, kind: type) -> bool:
    try:
        kind(text)
        return True
    except ValueError:
        return False


words = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1,
                max_size=12).filter(lambda s: s.strip() == s and not s.startswith("-"))
not_int = words.filter(lambda s: not _parses(s, int))
not_number = words.filter(lambda s: not _parses(s, float))
huge = st.integers(min_value=2 ** 63, max_value=2 ** 80).map(str)
non_finite = st.sampled_from(["nan", "inf", "-inf", "NaN", "1e400"])


def unknown_name(registry):
    return words.filter(lambda s: s not in registry and s.lower() not in registry
                        and s.split(":")[0].split(",")[0] not in registry)


#: ``ggl run`` flag -> values it must refuse
BAD_RUN_VALUES = {
    "--seed": st.one_of(not_int, huge, st.integers(max_value=-1).map(str)),
    "--batch-size": st.one_of(not_int, st.integers(max_value=0).map(str)),
    "--width": st.one_of(not_int, st.integers(max_value=0).map(str)),
    "--budget": st.one_of(not_int, huge, st.integers(max_value=0).map(str)),
    "--victim-steps": st.one_of(not_int, st.integers(max_value=-1).map(str)),
    "--starts": st.one_of(not_int, st.integers(max_value=0).map(str)),
    "--n_trials": st.one_of(not_int, st.integers(max_value=0).map(str)),
    "--population": st.one_of(not_int, st.integers(max_value=0).map(str)),
    "--refine-steps": st.one_of(not_int, st.integers(max_value=-1).map(str)),
    "--resolution": st.one_of(not_int, st.integers(max_value=0).map(str)),
    "--index": st.one_of(not_int, st.integers(min_value=1000, max_value=10 ** 6).map(str),
                         st.integers(max_value=-1).map(str)),
    "--lr": st.one_of(not_number, non_finite,
                      st.floats(max_value=0, allow_nan=False).map(repr)),
    "--tv": st.one_of(not_number, non_finite),
    "--kl": st.one_of(not_number, non_finite,
                      st.floats(max_value=-1e-3, allow_nan=False, allow_infinity=False).map(repr)),
    "--dropout": st.one_of(not_number, non_finite,
                           st.floats(min_value=1, allow_nan=False, allow_infinity=False).map(repr)),
    "--refine-tv": st.one_of(not_number, non_finite),
    "--attack": unknown_name(ATTACKS),
    "--model": unknown_name(MODELS),
    "--dataset": unknown_name(DATASETS),
    "--control": unknown_name(CONTROLS),
    "--distance": unknown_name(DISTANCES),
    "--layer-weights": unknown_name(LAYER_WEIGHTS),
    "--ng_method": unknown_name(OPTIMIZERS).filter(lambda s: s not in OPTIMIZERS.names()),
    "--generator": unknown_name(GENERATORS),
    "--defense": unknown_name(DEFENSES),
    "--set": st.one_of(
        st.tuples(st.sampled_from(["budget", "population", "n_trials", "starts",
                                   "chunk_size", "refine_steps"]), not_int),
        st.tuples(st.sampled_from(["lr", "kl", "tv", "holdout", "gias_lr", "gifd_radius"]),
                  st.one_of(not_number, non_finite)),
        st.tuples(st.sampled_from(["dropout_masks", "path"]), words.filter(
            lambda s: s not in ("ignore", "model", "auto", "loop", "vmap"))),
        st.tuples(words.filter(lambda s: s.isidentifier() and s not in
                               ATTACKS["ggl"].Options.__dataclass_fields__), words),
    ).map(lambda kv: f"{kv[0]}={kv[1]}"),
}


def _assert_user_error(result, where: Path) -> None:
    output = result.output
    assert result.exit_code == 2, (result.exit_code, output, repr(result.exception))
    assert "Traceback" not in output, output
    assert sum(line.startswith("Error:") for line in output.splitlines()) == 1, output
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert "weights_only" not in errors[0]
    written = [p for p in where.rglob("*") if p.is_file()]
    assert not written, written


def _invoke_in(folder: Path, args: list[str]):
    """Run the command with ``folder`` as the working directory (nothing may appear in it)."""
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        return CliRunner().invoke(cli, args)
    finally:
        os.chdir(cwd)


def bad_values(table: dict):
    """``(flag, a value it must refuse)`` from a table of flag -> strategy."""
    return st.sampled_from(sorted(table)).flatmap(
        lambda flag: st.tuples(st.just(flag), table[flag]))


def _refused(command: str, flag: str, value: str, *rest: str) -> None:
    """``ggl COMMAND FLAG VALUE REST --out <scratch>/out`` is a user error writing nothing."""
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        result = _invoke_in(folder, [command, *rest, flag, value, "--device", "cpu",
                                     "--out", str(folder / "out")])
        _assert_user_error(result, folder)


@FUZZ
@given(bad_values(BAD_RUN_VALUES))
def test_ggl_run_refuses_every_bad_option_value(case):
    flag, value = case
    _refused("run", flag, value, *([] if flag == "--control" else ["--control", "none"]))


BAD_TRAIN_PRIOR_VALUES = {
    "--steps": st.integers(max_value=0).map(str), "--batch-size": st.integers(max_value=0).map(str),
    "--n-critic": st.integers(max_value=0).map(str), "--width": st.integers(max_value=0).map(str),
    "--latent-dim": st.integers(max_value=0).map(str),
    "--checkpoint-every": st.integers(max_value=0).map(str),
    "--checkpoint-minutes": st.one_of(non_finite, st.floats(max_value=0, allow_nan=False).map(repr)),
    "--seed": st.one_of(huge, st.integers(max_value=-1).map(str)),
    "--lr": st.one_of(non_finite, st.floats(max_value=0, allow_nan=False).map(repr)),
    "--gp-weight": st.one_of(non_finite, st.sampled_from(["-1", "-0.5"])),
    "--class-weight": st.one_of(non_finite, st.sampled_from(["-1"])),
    "--ema": st.one_of(non_finite, st.sampled_from(["1", "1.5", "-0.1"])),
    "--resolution": st.sampled_from(["0", "7", "48", "-32"]),
    "--dataset": unknown_name(DATASETS),
}


@FUZZ
@given(bad_values(BAD_TRAIN_PRIOR_VALUES))
def test_train_prior_refuses_every_bad_option_value(case):
    _refused("train-prior", *case, "--quiet")


class _Payload:
    """Unpickling this writes a marker file: the test fails if it ever appears."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "payload ran"))


def _bad_file(kind: str, data: bytes, marker: Path) -> bytes:
    real = (SHIPPED / "generator.safetensors").read_bytes()
    return {"random": data, "empty": b"", "truncated": real[:max(1, len(data) % len(real))],
            "pickle": pickle.dumps({"weight": _Payload(marker)}),
            "json": json.dumps([len(data), data.hex()[:20]]).encode()}[kind]


file_kinds = st.sampled_from(["random", "empty", "truncated", "pickle", "json"])


@settings(max_examples=60, deadline=None, database=None)
@given(file_kinds, st.binary(min_size=1, max_size=256),
       st.sampled_from(["weights.pt", "weights.safetensors", "weights.bin"]))
def test_a_bad_victim_weights_file_is_refused(kind, data, name):
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        inputs = folder / "inputs"
        inputs.mkdir()
        marker = folder / "payload-ran"
        (inputs / name).write_bytes(_bad_file(kind, data, marker))
        result = _invoke_in(inputs, ["run", "--attack", "idlg", "--weights",
                                     str(inputs / name), "--control", "none", "--device",
                                     "cpu", "--out", str(folder / "out")])
        assert not marker.exists()
        _assert_user_error(result, folder / "out")


@settings(max_examples=60, deadline=None, database=None)
@given(st.sampled_from(["generator.json", "generator.safetensors"]), file_kinds,
       st.binary(min_size=1, max_size=256))
def test_a_bad_prior_folder_is_refused(broken, kind, data):
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        prior = folder / "prior"
        prior.mkdir()
        marker = folder / "payload-ran"
        for name in ("generator.json", "generator.safetensors"):
            (prior / name).write_bytes(_bad_file(kind, data, marker) if name == broken
                                       else (SHIPPED / name).read_bytes())
        for args in (["run", "--generator", f"wgan-gp:{prior}", "--ng_method", "CMA",
                      "--budget", "100", "--control", "none", "--device", "cpu", "--out",
                      str(folder / "out")], ["score-prior", str(prior), "--device", "cpu"]):
            result = _invoke_in(folder, args)
            assert not marker.exists()
            _assert_user_error(result, folder / "out")


yaml_texts = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=120).map(lambda b: b.decode("latin-1")),
    st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)),
                 lambda children: st.one_of(st.lists(children, max_size=3),
                                            st.dictionaries(st.sampled_from(
                                                ["grid", "settings", "attack", "index",
                                                 "defense", "name", "exclude",
                                                 "attack_options", "budget"]),
                                                children, max_size=3)),
                 max_leaves=8).map(json.dumps),
)


@settings(max_examples=150, deadline=None, database=None)
@given(yaml_texts)
def test_a_bad_sweep_config_is_refused_before_any_cell_runs(text):
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        config = folder / "inputs" / "sweep.yaml"
        config.parent.mkdir()
        config.write_text(text, encoding="utf-8", errors="surrogateescape")
        result = _invoke_in(config.parent, ["sweep", str(config), "--out",
                                            str(folder / "store"), "--quiet"])
        if result.exit_code == 0:        # a generated config that is a valid sweep
            return                       # (vanishingly rare: it would need a grid)
        _assert_user_error(result, folder / "store")


@settings(max_examples=100, deadline=None, database=None)
@given(st.lists(st.one_of(
    st.dictionaries(st.sampled_from(["cell_id", "status", "config", "metrics", "run_dir",
                                     "loss", "attempt", "error"]),
                    st.one_of(st.none(), st.integers(), st.text(max_size=6),
                              st.lists(st.integers(), max_size=2),
                              st.dictionaries(st.sampled_from(["seed", "attack", "index",
                                                               "defense", "psnr"]),
                                              st.one_of(st.integers(), st.text(max_size=4),
                                                        st.lists(st.integers(),
                                                                 max_size=2))))),
    st.text(max_size=20)), min_size=1, max_size=6))
def test_a_report_never_crashes_on_a_malformed_store(lines):
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "store"
        store.mkdir()
        (store / "index.jsonl").write_text("\n".join(
            json.dumps(line) if isinstance(line, dict) else line for line in lines) + "\n")
        result = CliRunner().invoke(cli, ["report", str(store), "--out",
                                          str(Path(folder) / "report")])
        assert "Traceback" not in result.output
        assert result.exit_code in (0, 2), (result.output, repr(result.exception))
        if result.exit_code == 2:
            assert sum(line.startswith("Error:") for line in result.output.splitlines()) == 1
