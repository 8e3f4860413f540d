"""The Bayes paper's loss comparison with its protocol: every loss gets its own tuned TV weight.

Balunovic et al. (ICLR 2022, seed 002) compare the L2, L1 and cosine gradient distances with
the Bayes-optimal likelihood of the defense's noise (Gaussian -> L2 / (2 sigma^2), Laplace ->
L1 / b). Their script (``tune_attacks_dp.py``) tunes the total-variation weight *separately for
each loss* on held-out images before the evaluation runs — the losses live on very different
scales (cosine <= 2, LeNet's squared L2 ~ 10^3, the Gaussian likelihood at sigma 0.01 ~ 10^7),
so one shared TV weight favours whichever loss it happens to suit.

Here: victim DLG's LeNet (untrained, seed 0), batch 1, labels inferred, the attack ``ig-adam``
(Adam, cosine lr 0.1, 500 steps, pixels boxed). For each defense and loss the TV weight is
chosen from the decades 1e-6 .. 1e6 (and 0), then from 1/4, 1/2, 2 and 4 times the best
decade, by the mean PSNR on the tuning digits (private indices 8, 9), then the loss is run with that weight on the evaluation digits 0..7, the same
8 digits as every other table. Rows go to ``experiments/results/bayes/``.

    python experiments/benchmarks/bayes_losses.py --defense laplace0.01 --defense noise0.01
    python experiments/benchmarks/bayes_losses.py --table
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from ggl import RunConfig, run

RESULTS = Path(__file__).resolve().parents[1] / "results" / "bayes"

DEFENSES = {
    "laplace0.01": ("laplace:0.01",),
    "noise0.01": ("noise:0.01",),
    "laplace0.1": ("laplace:0.1",),
    "noise0.1": ("noise:0.1",),
    "softpruning-laplace0.01": ("pruning:50,laplace=0.01",),
    "softpruning-gaussian0.01": ("pruning:50,noise=0.01",),
}
#: loss -> RunConfig keywords; "likelihood" is the Bayes-optimal loss of the defense (--adaptive)
LOSSES = {
    "l2": dict(distance="l2"),
    "l1": dict(distance="l1"),
    "cosine": dict(distance="cosine"),
    "likelihood": dict(adaptive=True),
}
TV_GRID = [0.0] + [10.0 ** k for k in range(-6, 7)]
#: second stage, as the paper's bisection-then-linear search: multiples of the best decade
TV_REFINE = (0.25, 0.5, 2.0, 4.0)
TUNING_INDICES = (8, 9)
EVAL_INDICES = tuple(range(8))
STEPS = 500


def _config(defense: str, loss: str, tv: float, index: int) -> RunConfig:
    return RunConfig(attack="ig-adam", model="lenet", budget=STEPS, tv=tv, index=(index,),
                     device="cpu", defense=DEFENSES[defense], **LOSSES[loss])


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line] \
        if path.exists() else []


def _run_rows(path: Path, defense: str, loss: str, tvs, indices) -> list[dict]:
    """Run every (tv, index) not yet in ``path``; return all rows of ``path``."""
    done = {(row["tv"], row["index"]) for row in _rows(path)}
    for tv in tvs:
        for index in indices:
            if (tv, index) in done:
                continue
            record = run(_config(defense, loss, tv, index), write=False).record
            row = {"defense": defense, "loss": loss, "tv": tv, "index": index,
                   "psnr": record["metrics"]["psnr"], "ssim": record["metrics"]["ssim"],
                   "seconds": record["attack_wall_time_s"]}
            with path.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
    return _rows(path)


def best_tv(rows: list[dict]) -> float:
    """The TV weight with the highest mean tuning PSNR (ties: the smaller weight)."""
    by_tv: dict[float, list[float]] = {}
    for row in rows:
        by_tv.setdefault(row["tv"], []).append(row["psnr"])
    return max(sorted(by_tv), key=lambda tv: statistics.mean(by_tv[tv]))


def measure(defense: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    for loss in LOSSES:
        path = RESULTS / f"tune-{defense}-{loss}.jsonl"
        decade = best_tv(_run_rows(path, defense, loss, TV_GRID, TUNING_INDICES))
        tuning = _run_rows(path, defense, loss, [decade * factor for factor in TV_REFINE],
                           TUNING_INDICES)
        tv = best_tv(tuning)
        rows = _run_rows(RESULTS / f"eval-{defense}-{loss}.jsonl", defense, loss,
                         [tv], EVAL_INDICES)
        psnrs = [row["psnr"] for row in rows if row["tv"] == tv]
        print(f"{defense} {loss}: tuned TV {tv:g}, mean PSNR {statistics.mean(psnrs):.2f} "
              f"on {len(psnrs)} digits", flush=True)


def table() -> None:
    print("| defense | loss | tuned TV | PSNR per private index 0..7 (dB) | mean PSNR | "
          "mean SSIM | tuning PSNR (digits 8, 9) |")
    print("|---|---|---|---|---|---|---|")
    for defense in DEFENSES:
        for loss in LOSSES:
            tuning = _rows(RESULTS / f"tune-{defense}-{loss}.jsonl")
            if not tuning:
                continue
            tv = best_tv(tuning)
            rows = sorted((row for row in _rows(RESULTS / f"eval-{defense}-{loss}.jsonl")
                           if row["tv"] == tv), key=lambda row: row["index"])
            if not rows:
                continue
            tuned = statistics.mean(row["psnr"] for row in tuning if row["tv"] == tv)
            print(f"| {defense} | {loss} | {tv:g} | "
                  + " / ".join(f"{row['psnr']:.1f}" for row in rows)
                  + f" | {statistics.mean(row['psnr'] for row in rows):.2f} | "
                  f"{statistics.mean(row['ssim'] for row in rows):.3f} | {tuned:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--defense", action="append", choices=sorted(DEFENSES), default=[])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for defense in args.defense:
        measure(defense)
    if args.table:
        table()


if __name__ == "__main__":
    main()
