"""The acceptance cell of the FedAvg table at growing attack budgets: does simulating the
local steps beat reading the update as one gradient once the optimizers have converged?

    OMP_NUM_THREADS=1 python experiments/benchmarks/fedavg_acceptance.py [BUDGET ...]

A client of 8 private digits (0..7) trains LeNet (untrained) for 10 local SGD steps in
batches of 4 (5 reshuffled epochs) at lr 0.01; the server knows the hyperparameters and the
labels. The naive baseline (ig-adam on update / lr), ig-multi with the same optimizer
(plain Adam, cosine lr) and dlf (its paper's settings) at budgets of 300 (the table's, the
seed's 300 reconstruction iterations), 1000 and 3000 iterations. Prints mean PSNR, SSIM and
the judge's right-class rate per attack and budget.
"""
from __future__ import annotations

import sys

from ggl import RunConfig
from ggl.api import run

ATTACKS = {"naive (ig-adam on update / lr)": ("ig-adam", {}),
           "ig-multi": ("ig-multi", {"signed": False, "schedule": "cosine"}),
           "dlf": ("dlf", {})}
COMMON = dict(protocol="fedavg", local_steps=10, local_batch_size=4, local_lr=0.01,
              batch_size=8, index=(0,), known_labels=True, control="none", device="cpu")


def main() -> None:
    budgets = [int(b) for b in sys.argv[1:]] or [300, 1000, 3000]
    print("| attack | iterations | PSNR (dB) | SSIM | judge (%) | time (s) |")
    print("|---|---|---|---|---|---|")
    for label, (attack, extra) in ATTACKS.items():
        for budget in budgets:
            record = run(RunConfig(attack=attack, budget=budget, extra=extra, **COMMON),
                         write=False).record
            m = record["metrics"]
            judge = "n/a" if m["judge_accuracy"] is None else f"{100 * m['judge_accuracy']:.0f}"
            print(f"| {label} | {budget} | {m['psnr']:.2f} | {m['ssim']:.3f} | {judge} | "
                  f"{record['attack_wall_time_s']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
