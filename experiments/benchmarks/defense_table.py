"""Attack x defense on 8 fixed private digits, non-adaptive and adaptive (the defenses issue).

Victim: DLG's sigmoid LeNet (untrained, seed 0, eval), the offline MNIST private indices
0..7, batch 1, labels inferred. Parts are named ``<attack>-<defense>[-adaptive]``; each is a
plain ``ggl run --model lenet --attack A --defense D [--adaptive] --index I``. Rows go to
``experiments/results/defenses/<part>.jsonl``.

    python experiments/benchmarks/defense_table.py --part ig-compression90-adaptive
    python experiments/benchmarks/defense_table.py --group bayes     # run a whole group
    python experiments/benchmarks/defense_table.py --table
    python experiments/benchmarks/defense_table.py --matrix  # attack x defense, mean PSNR / SSIM
    python experiments/benchmarks/defense_table.py --claims  # adaptive minus non-adaptive

Budgets are cut so that the 92 parts x 8 digits fit the 2-core CPU: DLG / iDLG 100 L-BFGS
steps (the papers: 300), IG 1000 iterations (the paper: 24,000), GGL-CMA 2000 evaluations
on the shipped MNIST prior.
"""
from __future__ import annotations

import json
import statistics
import sys

from pathlib import Path

from foundation_attacks import main

RESULTS = Path(__file__).resolve().parents[1] / "results" / "defenses"

ATTACKS = {
    "dlg": dict(attack="dlg", budget=100),
    "idlg": dict(attack="idlg", budget=100),
    "ig": dict(attack="ig", budget=1000),
    "ggl": dict(attack="ggl", budget=2000, extra={"ng_method": "CMA"}),
}
#: GGL's Table 3 settings, seed 003's, and the Bayes paper's: label -> --defense chain
DEFENSES = {
    "none": (),
    "noise0.1": ("noise:0.1",),
    "clipping4": ("clipping:4",),
    "compression90": ("compression:90",),
    "soteria80": ("soteria:80",),
    "compression20": ("compression:20",),          # seed 003: prune the smallest 20%
    "quantization4": ("quantization:4",),
    "noise0.001": ("noise:0.001",),
    "laplace0.1": ("laplace:0.1",),
    "softpruning-gaussian": ("pruning:50,noise=0.1",),
    "softpruning-laplace": ("pruning:50,laplace=0.1",),
}
GROUPS = {
    "table3": ["noise0.1", "clipping4", "compression90", "soteria80"],
    "seed003": ["compression20", "quantization4", "noise0.001"],
    # the Bayes paper's settings; its loss comparison (L2 / L1 / cosine / likelihood, each
    # tuned) is bayes_losses.py
    "bayes": ["noise0.1", "laplace0.1", "softpruning-gaussian", "softpruning-laplace"],
}


def build_parts() -> tuple[dict, dict]:
    """``(parts, group -> part names)``."""
    parts, groups = {}, {group: [] for group in GROUPS}
    for attack, settings in ATTACKS.items():
        for label, chain in DEFENSES.items():
            for adaptive in ((False,) if not chain else (False, True)):
                name = f"{attack}-{label}" + ("-adaptive" if adaptive else "")
                for group, labels in GROUPS.items():
                    if label in labels or label == "none":
                        groups[group].append(name)
                description = (f"{attack}, {label}" + (", adaptive" if adaptive else "")
                               + f", LeNet, budget {settings['budget']}")
                parts[name] = (description, dict(model="lenet", defense=chain,
                                                 adaptive=adaptive, **settings))
    # PRECODE changes the model: the closed-form attack against IG on the same wrapped victim
    groups["precode"] = []
    for name, description, kwargs in (
            ("precode-analytic-mlp", "precode-analytic, MLP + PRECODE",
             dict(model="mlp", attack="precode-analytic")),
            ("precode-analytic-lenet", "precode-analytic, LeNet + PRECODE",
             dict(model="lenet", attack="precode-analytic")),
            ("ig-precode-lenet", "ig (ignores PRECODE), LeNet + PRECODE, budget 1000",
             dict(model="lenet", attack="ig", budget=1000))):
        groups["precode"].append(name)
        parts[name] = (description, dict(defense=("precode",), **kwargs))
    return parts, groups


PARTS, GROUP_PARTS = build_parts()


def _part_rows(part: str) -> list[dict]:
    """The part's rows, first record per index (parts may be re-run)."""
    path = RESULTS / f"{part}.jsonl"
    by_index: dict[int, dict] = {}
    if path.exists():
        for line in filter(None, path.read_text().splitlines()):
            row = json.loads(line)
            by_index.setdefault(row["index"], row)
    return [by_index[i] for i in sorted(by_index)]


def _mean_cell(part: str) -> str:
    """``"PSNR / SSIM"`` means over the part's digits, or ``-``."""
    rows = _part_rows(part)
    if not rows:
        return "-"
    cell = (f"{statistics.mean(r['psnr'] for r in rows):.1f} / "
            f"{statistics.mean(r['ssim'] for r in rows):.2f}")
    return cell + (f" ({len(rows)} digits)" if len(rows) < 8 else "")


def matrix(labels: list[str]) -> None:
    """Markdown matrix: one row per attack and mode, one column per defense label."""
    print("| attack | mode | " + " | ".join(labels) + " |")
    print("|---|---|" + "---|" * len(labels))
    for attack in ATTACKS:
        for adaptive in (False, True):
            cells = []
            for label in labels:
                if label == "none":
                    cells.append(_mean_cell(f"{attack}-none"))
                else:
                    cells.append(_mean_cell(f"{attack}-{label}"
                                            + ("-adaptive" if adaptive else "")))
            mode = "adaptive" if adaptive else "non-adaptive"
            print(f"| {attack} | {mode} | " + " | ".join(cells) + " |")

def claims(labels=("compression90", "clipping4", "soteria80")) -> None:
    """Adaptive minus non-adaptive mean PSNR per attack, and on how many digits it won."""
    print("| attack | " + " | ".join(labels) + " |")
    print("|---|" + "---|" * len(labels))
    for attack in ATTACKS:
        cells = []
        for label in labels:
            plain, adaptive = _part_rows(f"{attack}-{label}"), _part_rows(f"{attack}-{label}-adaptive")
            if len(plain) < 8 or len(adaptive) < 8:
                cells.append("-")
                continue
            gain = statistics.mean(a["psnr"] - p["psnr"] for a, p in zip(adaptive, plain))
            wins = sum(a["psnr"] > p["psnr"] for a, p in zip(adaptive, plain))
            cells.append(f"{gain:+.1f} dB ({wins}/8 digits)")
        print(f"| {attack} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if "--claims" in sys.argv:        # --claims: adaptive minus non-adaptive, per attack
        claims()
        sys.exit(0)
    if "--matrix" in sys.argv:        # --matrix: mean PSNR / SSIM, attack x defense
        for group in ("table3", "seed003", "bayes"):
            print(f"\n{group}:\n")
            matrix(["none"] + GROUPS[group])
        sys.exit(0)
    if "--group" in sys.argv:         # --group NAME: every part of the attacks x that group
        position = sys.argv.index("--group")
        group = GROUP_PARTS[sys.argv[position + 1]]
        del sys.argv[position:position + 2]
        for part in group:
            sys.argv += ["--part", part]
    main(PARTS, RESULTS, __doc__)
