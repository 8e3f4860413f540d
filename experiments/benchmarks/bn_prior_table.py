"""GradInversion's BatchNorm-statistics prior: `ig-adam` with and without it.

Victims with BatchNorm (ConvNet, ResNet-18) trained for ``--victim-steps`` steps on the
public digits (so their running statistics are those of digits), whose client computes
its gradient in train mode (BatchNorm normalises with the private batch's own
statistics). For batches of 4 and 8 private digits (seeds 0..``--seeds``-1), `ig-adam`
runs with no prior, with ``bn_prior`` W, and with W plus GradInversion's group
consistency (``group`` seeds side by side); each setting also on its random-gradient
control (on the first ``--control-seeds`` seeds). Prints one Markdown row per setting:
mean PSNR, SSIM, judge accuracy, and the control's PSNR / judge; writes the first seed's
runs to experiments/results/bn_prior/.

    OMP_NUM_THREADS=1 python experiments/benchmarks/bn_prior_table.py --variants plain,bn
    OMP_NUM_THREADS=1 python experiments/benchmarks/bn_prior_table.py --variants group \
        --models convnet:16 --batches 4
"""
from __future__ import annotations

import argparse
import statistics
from dataclasses import replace
from pathlib import Path

from ggl import RunConfig
from ggl.api import run

OUT = Path(__file__).resolve().parents[1] / "results" / "bn_prior"


def measure(config: RunConfig, folder: str | None = None) -> tuple[float, float, float]:
    """(PSNR, SSIM, judge accuracy) of one run; with ``folder`` the run (original.png,
    reconstruction.png, run.json) is written to experiments/results/bn_prior/folder."""
    if folder:
        config = replace(config, out=str(OUT / folder))
    m = run(config, write=folder is not None, overwrite=True).record["metrics"]
    return m["psnr"], m["ssim"], m["judge_accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=500)
    parser.add_argument("--victim-steps", type=int, default=100)
    parser.add_argument("--weight", type=float, default=0.1, help="bn_prior's weight W")
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--models", default="convnet:16,resnet18:16",
                        help="model:width pairs, comma-separated")
    parser.add_argument("--batches", default="4,8")
    parser.add_argument("--variants", default="plain,bn,group",
                        help="plain (no prior), bn (bn_prior W), group (W and the group)")
    parser.add_argument("--control-seeds", type=int, default=1)
    args = parser.parse_args()
    variants = {"plain": ("ig-adam", {}),
                "bn": (f"+ bn_prior {args.weight:g}", {"bn_prior": args.weight}),
                "group": (f"+ bn_prior {args.weight:g}, group {args.group}",
                          {"bn_prior": args.weight, "group": args.group})}
    chosen = [variants[name] for name in args.variants.split(",")]
    print("| victim | B | attack | PSNR | SSIM | judge | control: PSNR / judge |")
    print("|---|---|---|---|---|---|---|")
    for pair in args.models.split(","):
        model, width = pair.split(":")
        for batch in map(int, args.batches.split(",")):
            for label, extra in chosen:
                configs = [RunConfig(attack="ig-adam", model=model, width=int(width),
                                     model_mode="train", victim_steps=args.victim_steps,
                                     batch_size=batch, budget=args.budget, seed=seed,
                                     device="cpu", control="none", extra=extra)
                           for seed in range(args.seeds)]
                tag = "_".join([f"{model}_b{batch}"] + [f"{k}{v:g}" for k, v in extra.items()])
                runs = [measure(c, tag if c.seed == 0 else None) for c in configs]
                controls = [measure(replace(c, control="random-gradient"))
                            for c in configs[:args.control_seeds]]
                print(f"| {model} (width {width}) | {batch} | {label} | "
                      f"{statistics.mean(r[0] for r in runs):.2f} | "
                      f"{statistics.mean(r[1] for r in runs):.3f} | "
                      f"{100 * statistics.mean(r[2] for r in runs):.0f}% | "
                      f"{statistics.mean(r[0] for r in controls):.2f} / "
                      f"{100 * statistics.mean(r[2] for r in controls):.0f}% |", flush=True)


if __name__ == "__main__":
    main()
