"""Fingerprint of what ggl computes, to check that a refactor changes no number.

Runs a sample of `ggl run` commands (the quickstart, one DLG, one IG, one DIA, one defended
GGL run) through the command line and keeps every metric, loss and evaluation count of
their run.json records at full precision, then lists the cell id of every cell of every
sweep config under experiments/configs (the stored claim sweeps resume by these ids).

    OMP_NUM_THREADS=1 python experiments/benchmarks/refactor_fingerprint.py OUT.json
    python experiments/benchmarks/refactor_fingerprint.py --compare BEFORE.json AFTER.json

Run it once on the commit before a refactor and once after (e.g. with PYTHONPATH pointing
at a worktree of the older commit); ``--compare`` prints every difference and exits 1 if
there is one. Wall times are left out (they are noise).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: name -> ``ggl run`` arguments (CPU, one seed each)
RUNS = {
    "quickstart": ["--defense", "compression"],
    "dlg": ["--attack", "dlg", "--index", "3", "--budget", "40", "--control", "none"],
    "ig": ["--attack", "ig", "--index", "2", "--budget", "200", "--control", "none"],
    "dia": ["--attack", "dia", "--dropout", "0.25", "--index", "1", "--budget", "60",
            "--control", "none"],
    "ggl-noise-adaptive": ["--ng_method", "CMA", "--budget", "600", "--defense", "noise:0.01",
                           "--adaptive", "--index", "5", "--control", "none"],
}

#: record fields that are facts of the computation (not of the machine or the clock)
KEPT = ("metrics", "loss", "evaluations", "iterations", "recovered_labels", "true_labels",
        "private_indices", "attack_options")
INFO_KEPT = ("latent", "stages", "starts", "trial_gradient_losses", "returned_stage",
             "generator")


def _facts(record: dict) -> dict:
    facts = {key: record.get(key) for key in KEPT}
    facts["info"] = {key: record.get("info", {}).get(key) for key in INFO_KEPT}
    if isinstance(facts["info"]["generator"], str):    # the shipped prior's path names the
        facts["info"]["generator"] = re.sub(           # checkout: keep what is inside it
            r"^(\w[\w-]*:).*(/generators/weights/)", r"\1<checkout>\2",
            facts["info"]["generator"])
    if "control_comparison" in record:
        facts["control_comparison"] = record["control_comparison"]
    return facts


def run_fingerprints() -> dict:
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, arguments in RUNS.items():
            out = Path(scratch) / name
            command = [sys.executable, "-c", "from ggl.cli import main; main()", "run",
                       *arguments, "--device", "cpu", "--quiet", "--out", str(out)]
            subprocess.run(command, check=True, cwd=scratch)
            results[name] = _facts(json.loads((out / "run.json").read_text()))
            control = out / "control" / "run.json"
            if control.exists():
                results[name + "/control"] = _facts(json.loads(control.read_text()))
            print(f"{name}: PSNR {results[name]['metrics']['psnr']:.4f}", flush=True)
    return results


def cell_ids() -> dict:
    from ggl.study.spec import load_sweep

    return {path.name: [cell.cell_id for cell in load_sweep(path).cells]
            for path in sorted((ROOT / "experiments" / "configs").glob("*.yaml"))}


def _differences(before, after, where: str = "") -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in sorted(set(before) | set(after), key=str):
            found += _differences(before.get(key), after.get(key), f"{where}/{key}")
        return found
    return [] if before == after else [f"{where}: {before!r} -> {after!r}"[:300]]


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--compare":
        before, after = (json.loads(Path(p).read_text()) for p in argv[1:3])
        found = _differences(before, after)
        print("\n".join(found) or "identical: every number and cell id")
        return 1 if found else 0
    out = Path(argv[0] if argv else "fingerprint.json")
    fingerprint = {"cell_ids": cell_ids()}
    fingerprint["runs"] = run_fingerprints()
    out.write_text(json.dumps(fingerprint, indent=1, sort_keys=True))
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
