"""The Bayes paper's loss comparison with its protocol: every loss gets its own tuned TV weight.

Balunovic et al. (ICLR 2022, seed 002) compare the L2, L1 and cosine gradient distances with
the Bayes-optimal likelihood of the defense's noise (Gaussian -> L2 / (2 sigma^2), Laplace ->
L1 / b). Their script (``tune_attacks_dp.py``) tunes the total-variation weight *separately for
each loss* on held-out images before the evaluation runs — the losses live on very different
scales (cosine <= 2, LeNet's squared L2 ~ 10^3, the Gaussian likelihood at sigma 0.01 ~ 10^7),
so one shared TV weight favours whichever loss it happens to suit.

Here: victim DLG's LeNet (untrained, seed 0), batch 1, labels inferred. Two optimizers:
``ig-adam`` (Adam, cosine lr 0.1, 500 steps, pixels boxed) and ``idlg`` (L-BFGS with a
strong-Wolfe line search, 100 iterations) — which one suits a loss depends on the loss (on
this victim squared L2 stalls under Adam near 20 dB, with or without noise, and converges
under L-BFGS), so each loss gets the better of the two. For each defense and loss the TV weight is chosen
with Adam from the decades 1e-6 .. 1e6 (and 0), then from 1/4, 1/2, 2 and 4 times the best
decade, by the mean PSNR on the tuning digits (private indices 8, 9); L-BFGS then runs
without TV and with 0.1, 0.3, 1, 3 and 10 times Adam's weight on the same digits; the best
(optimizer, TV) runs on the evaluation digits 0..7, the same 8 digits as every other table.
Rows go to ``experiments/results/bayes/``.

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
    "none": (),         # each loss without noise: how well it optimizes, apart from the noise
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
#: optimizer -> RunConfig keywords: ig-adam (first order) and iDLG's L-BFGS (second order)
#: L-BFGS tries no TV and these multiples of Adam's tuned weight (Adam stalls on L2-type
#: losses here, so the weight it picks for them is only a starting point)
LBFGS_TV_FACTORS = (0.1, 0.3, 1.0, 3.0, 10.0)
OPTIMIZERS = {
    "adam": dict(attack="ig-adam", budget=500),
    "lbfgs": dict(attack="idlg", budget=100),
}


def _config(defense: str, loss: str, optimizer: str, tv: float, index: int) -> RunConfig:
    return RunConfig(model="lenet", tv=tv, index=(index,), device="cpu",
                     defense=DEFENSES[defense], **OPTIMIZERS[optimizer], **LOSSES[loss])


def _rows(path: Path) -> list[dict]:
    """The rows of a results file (rows written before L-BFGS was added are Adam's)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line] \
        if path.exists() else []
    for row in rows:
        row.setdefault("optimizer", "adam")
    return rows


def _run_rows(path: Path, defense: str, loss: str, optimizer: str, tvs, indices) -> list[dict]:
    """Run every (optimizer, tv, index) not yet in ``path``; return all rows of ``path``."""
    done = {(row["optimizer"], row["tv"], row["index"]) for row in _rows(path)}
    for tv in tvs:
        for index in indices:
            if (optimizer, tv, index) in done:
                continue
            record = run(_config(defense, loss, optimizer, tv, index), write=False).record
            row = {"defense": defense, "loss": loss, "optimizer": optimizer, "tv": tv,
                   "index": index, "psnr": record["metrics"]["psnr"],
                   "ssim": record["metrics"]["ssim"], "seconds": record["attack_wall_time_s"]}
            with path.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
    return _rows(path)


def best_setting(rows: list[dict], optimizer: str | None = None) -> tuple[str, float]:
    """``(optimizer, tv)`` with the highest mean tuning PSNR (ties: the first tried)."""
    by_setting: dict[tuple[str, float], list[float]] = {}
    for row in rows:
        if optimizer in (None, row["optimizer"]):
            by_setting.setdefault((row["optimizer"], row["tv"]), []).append(row["psnr"])
    return max(by_setting, key=lambda setting: statistics.mean(by_setting[setting]))


def measure(defense: str) -> None:
    """Tune the TV weight with Adam (decades, then multiples of the best decade); try L-BFGS
    without TV and with 0.1x .. 10x Adam's weight; run the best of all on digits 0..7."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    for loss in LOSSES:
        if loss == "likelihood" and not DEFENSES[defense]:
            continue
        path = RESULTS / f"tune-{defense}-{loss}.jsonl"
        _, decade = best_setting(_run_rows(path, defense, loss, "adam", TV_GRID,
                                           TUNING_INDICES), "adam")
        _run_rows(path, defense, loss, "adam", [decade * f for f in TV_REFINE], TUNING_INDICES)
        _, adam_tv = best_setting(_rows(path), "adam")
        tuning = _run_rows(path, defense, loss, "lbfgs",
                           sorted({0.0} | {adam_tv * f for f in LBFGS_TV_FACTORS}),
                           TUNING_INDICES)
        optimizer, tv = best_setting(tuning)
        rows = _run_rows(RESULTS / f"eval-{defense}-{loss}.jsonl", defense, loss, optimizer,
                         [tv], EVAL_INDICES)
        psnrs = [row["psnr"] for row in rows if (row["optimizer"], row["tv"]) == (optimizer, tv)]
        print(f"{defense} {loss}: {optimizer}, tuned TV {tv:g}, mean PSNR "
              f"{statistics.mean(psnrs):.2f} on {len(psnrs)} digits", flush=True)


def table() -> None:
    """One row per (defense, loss): the setting tuned on digits 8, 9 and its 8-digit result;
    the tuning PSNR of each optimizer's best setting shows what the other would have given."""
    print("| defense | loss | chosen (tuned on 8, 9) | PSNR per private index 0..7 (dB) | "
          "mean PSNR | mean SSIM | tuning PSNR: Adam / L-BFGS |")
    print("|---|---|---|---|---|---|---|")
    for defense in DEFENSES:
        for loss in LOSSES:
            tuning = _rows(RESULTS / f"tune-{defense}-{loss}.jsonl")
            if not tuning:
                continue
            setting = best_setting(tuning)
            rows = sorted((row for row in _rows(RESULTS / f"eval-{defense}-{loss}.jsonl")
                           if (row["optimizer"], row["tv"]) == setting),
                          key=lambda row: row["index"])
            if not rows:
                continue
            per_optimizer = []
            for optimizer in OPTIMIZERS:
                if any(row["optimizer"] == optimizer for row in tuning):
                    best = best_setting(tuning, optimizer)
                    per_optimizer.append(f"{statistics.mean(r['psnr'] for r in tuning if (r['optimizer'], r['tv']) == best):.1f}")
                else:
                    per_optimizer.append("-")
            print(f"| {defense} | {loss} | {setting[0]}, TV {setting[1]:g} | "
                  + " / ".join(f"{row['psnr']:.1f}" for row in rows)
                  + f" | {statistics.mean(row['psnr'] for row in rows):.2f} | "
                  f"{statistics.mean(row['ssim'] for row in rows):.3f} | "
                  + " / ".join(per_optimizer) + " |")


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
