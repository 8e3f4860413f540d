"""The FedAvg tables of experiments/README.md from the sweep stores behind them.

    python experiments/benchmarks/fedavg_table.py experiments/results/fedavg_steps
    python experiments/benchmarks/fedavg_table.py experiments/results/fedavg

Reads ``index.jsonl`` (run the sweeps first: experiments/configs/fedavg_steps.yaml and
fedavg.yaml) and prints one Markdown row per setting: for each attack the PSNR (dB) / SSIM /
judge's right-class rate (%) of its run, and the PSNR / judge of its random-gradient
control (the same attack given noise instead of the update). Settings are the grid's axes
other than ``attack`` and ``control``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ATTACKS = ("ig-adam", "ig-multi", "dlf", "ggl")
NAMES = {"ig-adam": "naive (ig-adam)", "ig-multi": "ig-multi", "dlf": "dlf", "ggl": "ggl"}


def cell_text(metrics: dict | None, control: dict | None) -> str:
    if metrics is None:
        return "not run"
    judge = lambda m: "n/a" if m.get("judge_accuracy") is None else \
        f"{100 * m['judge_accuracy']:.0f}%"
    text = f"{metrics['psnr']:.1f} / {metrics['ssim']:.2f} / {judge(metrics)}"
    if control is not None:
        text += f" (ctrl {control['psnr']:.1f}, {judge(control)})"
    return text


def main() -> None:
    store = Path(sys.argv[1])
    records = [json.loads(line) for line in (store / "index.jsonl").read_text().splitlines()
               if line.strip()]
    done = [r for r in records if r["status"] == "done"]
    axes = [k for k in done[0]["cell"] if k not in ("attack", "control")]
    table: dict[tuple, dict] = {}
    for record in done:
        setting = tuple(record["cell"][k] for k in axes)
        key = (record["cell"]["attack"], record["cell"].get("control", "none"))
        table.setdefault(setting, {})[key] = record["metrics"]
    print("| " + " | ".join(axes) + " | " + " | ".join(NAMES[a] for a in ATTACKS) + " |")
    print("|" + "---|" * (len(axes) + len(ATTACKS)))
    for setting, cells in table.items():
        row = [cell_text(cells.get((a, "none")), cells.get((a, "random-gradient")))
               for a in ATTACKS]
        print("| " + " | ".join(map(str, setting)) + " | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
