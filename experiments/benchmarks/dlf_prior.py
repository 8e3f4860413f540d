"""DLF's epoch order-invariant prior: which statistic ties the per-epoch copies together.

    OMP_NUM_THREADS=1 python experiments/benchmarks/dlf_prior.py

A client of 4 private digits (3..6) trains LeNet for 5 reshuffled epochs of 2 steps at lr
0.01; known labels; `dlf` with its paper's settings at 400 iterations, the prior's
statistic varied: none, the mean image (the authors' FEMNIST scripts' ``l2_mean``) and the
elementwise max of random 3x3-convolution features (``l2_max_conv``, seed 001's choice,
ggl's default); and ig-multi (IG's recipe, one set of candidates for every epoch) beside
them. Prints each copy's PSNR (matched to the truth) and the returned average's.
"""
from __future__ import annotations

import torch

from ggl import RunConfig
from ggl.api import run
from ggl.metrics import match, psnr, to_unit_range
from ggl.plan import resolve

SETTINGS = {
    "no prior": {"reorder": 0.0},
    "mean image": {"reorder_statistic": "mean", "reorder_conv": False},
    "max of random-conv features (default)": {},
}
COMMON = dict(protocol="fedavg", local_epochs=5, local_batch_size=2, local_lr=0.01,
              batch_size=4, index=(3,), known_labels=True, budget=400, control="none",
              device="cpu")


def matched_psnr(images: torch.Tensor, truth: torch.Tensor) -> float:
    x = to_unit_range(images, (0.5,), (0.5,)).clamp(0, 1)
    return psnr(x[match(x, truth)], truth).mean().item()


def main() -> None:
    print("| dlf prior | returned (mean of matched copies), dB | each copy, dB |")
    print("|---|---|---|")
    for label, extra in SETTINGS.items():
        plan = resolve(RunConfig(attack="dlf", extra=extra, **COMMON))
        result = run(plan, write=False)
        truth = to_unit_range(result.secret.images, (0.5,), (0.5,))
        copies = plan.attack._best_extras[0]
        each = ", ".join(f"{matched_psnr(c, truth):.1f}" for c in copies)
        print(f"| {label} | {result.record['metrics']['psnr']:.2f} | {each} (copies 2-5) |")
    multi = run(RunConfig(attack="ig-multi", **COMMON), write=False)
    print(f"| ig-multi (IG's signed Adam, one candidate set) | "
          f"{multi.record['metrics']['psnr']:.2f} | |")


if __name__ == "__main__":
    main()
