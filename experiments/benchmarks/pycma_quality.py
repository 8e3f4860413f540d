"""`--ng_method CMA` on pycma (one ask/tell per population) against nevergrad's CMA
(`--ng_method ng-CMA`, one candidate per ask/tell) on the same 8 private digits and seeds:
PSNR, judge, the attack's wall time and its evaluations per second, each digit and the mean.

GGL as published (one CMA-ES search, LeNet, the shipped MNIST prior, unconditional, so the
label does not pick the class), ``--budget`` evaluations, population 50, single-threaded.

    OMP_NUM_THREADS=1 python experiments/benchmarks/pycma_quality.py [--budget 25000]
    OMP_NUM_THREADS=1 python experiments/benchmarks/pycma_quality.py --control   # on noise
"""
from __future__ import annotations

import argparse
import statistics

from ggl import RunConfig
from ggl.api import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=25_000)
    parser.add_argument("--digits", type=int, default=8)
    parser.add_argument("--methods", nargs="+", default=["CMA", "ng-CMA"],
                        help="latent optimizers to compare (default: CMA ng-CMA)")
    parser.add_argument("--control", action="store_true",
                        help="the random-gradient control: the same searches given noise")
    args = parser.parse_args()
    rows = {}
    for method in args.methods:
        rows[method] = []
        for index in range(args.digits):
            record = run(RunConfig(attack="ggl", index=(index,), budget=args.budget, seed=0,
                                   device="cpu",
                                   control="random-gradient" if args.control else "none",
                                   extra={"ng_method": method,
                                          "generator": "default-unconditional"}),
                         write=False).record
            seconds = record["attack_wall_time_s"]
            rows[method].append((record["metrics"]["psnr"], record["metrics"]["judge_accuracy"],
                                 seconds, record["evaluations"] / seconds))
            print(method, index, rows[method][-1], flush=True)
    print(f"| digit | " + " | ".join(f"{m}: PSNR / judge / s" for m in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for index in range(args.digits):
        cells = [f"{rows[m][index][0]:.2f} / {'yes' if rows[m][index][1] else 'no'} / "
                 f"{rows[m][index][2]:.1f}" for m in rows]
        print(f"| {index} | " + " | ".join(cells) + " |")
    means = [f"**{statistics.mean(r[0] for r in rows[m]):.2f}** / "
             f"{100 * statistics.mean(r[1] for r in rows[m]):.0f}% / "
             f"{statistics.mean(r[2] for r in rows[m]):.1f} "
             f"({statistics.mean(r[3] for r in rows[m]):.0f} evals/s)" for m in rows]
    print("| mean | " + " | ".join(means) + " |")


if __name__ == "__main__":
    main()
