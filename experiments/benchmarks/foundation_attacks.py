"""Acceptance numbers of the foundation: DLG / iDLG / IG on 8 fixed private MNIST digits.

Each part runs one attack configuration on the private indices 0..7 of the offline MNIST
split (digits 0..7; ``--indices`` to change) through the Python API, exactly as
``ggl run --attack ... --index i`` would, and appends one JSON line per run to
``experiments/results/foundation/<part>.jsonl``. ``--table`` prints the Markdown tables.

    python experiments/benchmarks/foundation_attacks.py --part dlg --part ig-2000
    python experiments/benchmarks/foundation_attacks.py --table
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from ggl import RunConfig, run

RESULTS = Path(__file__).resolve().parents[1] / "results" / "foundation"

#: part -> (description, RunConfig keyword arguments)
PARTS = {
    "dlg": ("dlg (default: L-BFGS + strong Wolfe), LeNet, 300 it",
            dict(attack="dlg", model="lenet", budget=300)),
    "dlg-no-line-search": ("dlg as in the paper (no line search), LeNet, 300 it",
                           dict(attack="dlg", model="lenet", budget=300,
                                extra={"line_search": "none"})),
    "idlg": ("idlg, LeNet, 300 it", dict(attack="idlg", model="lenet", budget=300)),
    "ig-2000": ("ig (paper recipe), LeNet, 2000 it", dict(attack="ig", model="lenet", budget=2000)),
    "ig-unsigned-2000": ("ablation: ig with unsigned Adam (steps schedule), LeNet, 2000 it",
                         dict(attack="ig", model="lenet", budget=2000,
                              extra={"signed": False})),
    "ig-signed-cosine-2000": ("ablation: ig with signed Adam and cosine lr, LeNet, 2000 it",
                              dict(attack="ig", model="lenet", budget=2000,
                                   extra={"schedule": "cosine"})),
    "ig-24000": ("ig (paper recipe), LeNet, 24000 it",
                 dict(attack="ig", model="lenet", budget=24000)),
    "ig-adam-2000": ("ig-adam, LeNet, 2000 it", dict(attack="ig-adam", model="lenet", budget=2000)),
    "ig-adam-24000": ("ig-adam, LeNet, 24000 it",
                      dict(attack="ig-adam", model="lenet", budget=24000)),
    # ResNet-18 with the CIFAR-style stem costs ~0.4 s per IG iteration on one CPU core
    # (double backward at full 32x32 resolution): budgets are cut to fit the CPU.
    "resnet18-ig-300": ("ig (paper recipe), ResNet-18 (untrained, eval), 300 it",
                        dict(attack="ig", model="resnet18", budget=300)),
    "resnet18-ig-2000": ("ig (paper recipe), ResNet-18 (untrained, eval), 2000 it",
                         dict(attack="ig", model="resnet18", budget=2000)),
    "resnet18-ig-adam-300": ("ig-adam, ResNet-18 (untrained, eval), 300 it",
                             dict(attack="ig-adam", model="resnet18", budget=300)),
    "resnet18-dlg-10": ("dlg, ResNet-18 (untrained, eval), 10 it",
                        dict(attack="dlg", model="resnet18", budget=10)),
}


def run_part(part: str, indices: list[int], threads: int, parts=PARTS, results=RESULTS) -> None:
    torch.set_num_threads(threads)
    description, kwargs = parts[part]
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{part}.jsonl"
    done = set()
    if path.exists():
        done = {json.loads(line)["index"] for line in path.read_text().splitlines() if line}
    for index in indices:
        if index in done:
            continue
        result = run(RunConfig(index=(index,), device="cpu", **kwargs), write=False)
        record = result.record
        row = {"part": part, "index": index, "label": record["true_labels"][0],
               "psnr": record["metrics"]["psnr"], "ssim": record["metrics"]["ssim"],
               "label_accuracy": record["metrics"]["label_accuracy"],
               "loss": record["loss"], "evaluations": record["evaluations"],
               "iterations": record["iterations"], "seconds": record["attack_wall_time_s"],
               "device": record["device"], "threads": threads}
        with path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(f"{part} index {index}: PSNR {row['psnr']:.2f} SSIM {row['ssim']:.3f} "
              f"({row['seconds']:.0f} s)", flush=True)


def table(parts=PARTS, results=RESULTS, indices: int = 8) -> None:
    print(f"| run | PSNR per private index 0..{indices - 1} (dB) | mean PSNR | median PSNR | "
          "mean SSIM | "
          "min PSNR | label acc. | s/run |")
    print("|---|---|---|---|---|---|---|---|")
    for part, (description, _) in parts.items():
        path = results / f"{part}.jsonl"
        if not path.exists():
            continue
        by_index = {}                   # first record per index (parts may be re-run)
        for line in filter(None, path.read_text().splitlines()):
            row = json.loads(line)
            by_index.setdefault(row["index"], row)
        rows = [by_index[i] for i in sorted(by_index)]
        psnrs = [r["psnr"] for r in rows]
        if len(rows) < indices:
            description += f" (only indices {', '.join(str(r['index']) for r in rows)} so far)"
        cells = " / ".join(f"{p:.1f}" for p in psnrs)
        print(f"| {description} | {cells} | {statistics.mean(psnrs):.2f} | "
              f"{statistics.median(psnrs):.2f} | "
              f"{statistics.mean(r['ssim'] for r in rows):.3f} | {min(psnrs):.2f} | "
              f"{statistics.mean(r['label_accuracy'] for r in rows):.0%} | "
              f"{statistics.mean(r['seconds'] for r in rows):.0f} |")


def main(parts=PARTS, results=RESULTS, doc=__doc__, indices: int = 8):
    """Run the parts given by ``--part`` on the first ``indices`` private digits (or
    ``--indices``), and/or print the table."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--part", action="append", choices=sorted(parts), default=[])
    parser.add_argument("--indices", default=",".join(map(str, range(indices))))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    for part in args.part:
        run_part(part, [int(i) for i in args.indices.split(",")], args.threads, parts, results)
    if args.table:
        table(parts, results, indices)


if __name__ == "__main__":
    main()
