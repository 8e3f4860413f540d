"""GGL's acceptance numbers: latent search vs pixel attacks on 8 fixed private digits.

Victim: ResNet-18 (untrained, seed 0, eval), the offline MNIST private indices 0..7, batch 1,
labels inferred, the shipped MNIST prior. Each part is a plain
``ggl run --model resnet18 --index I ...``; rows go to ``experiments/results/ggl/<part>.jsonl``.

    python experiments/benchmarks/ggl_attacks.py --part resnet18-ggl-cma-500 --table
"""
from __future__ import annotations

from pathlib import Path

from foundation_attacks import main

RESULTS = Path(__file__).resolve().parents[1] / "results" / "ggl"
COMPRESSION_90 = dict(defense=("compression",), d_param=90.0)

#: part -> (description, RunConfig keyword arguments). Budgets are cut to fit the 2-core CPU:
#: 500 GGL evaluations take about as long as 250 IG iterations on ResNet-18.
PARTS = {
    "resnet18-ggl-cma-500": ("GGL-CMA, 500 evaluations, no defense",
                             dict(attack="ggl", model="resnet18", budget=500,
                                  extra={"ng_method": "CMA"})),
    "resnet18-ggl-adam-500": ("GGL-Adam, 500 evaluations (steps), no defense",
                              dict(attack="ggl", model="resnet18", budget=500,
                                   extra={"ng_method": "adam"})),
    "resnet18-ggl-turbo-500": ("GGL-TuRBO, 500 evaluations, no defense",
                               dict(attack="ggl", model="resnet18", budget=500,
                                    extra={"ng_method": "BO"})),
    "resnet18-ig-250": ("IG (paper recipe), 250 iterations, no defense",
                        dict(attack="ig", model="resnet18", budget=250)),
    "resnet18-compression90-ggl-cma-adaptive-500": (
        "compression 90, GGL-CMA --adaptive, 500 evaluations",
        dict(attack="ggl", model="resnet18", budget=500, adaptive=True,
             extra={"ng_method": "CMA"}, **COMPRESSION_90)),
    "resnet18-compression90-ig-250": (
        "compression 90, IG non-adaptive (the paper's baseline), 250 iterations",
        dict(attack="ig", model="resnet18", budget=250, **COMPRESSION_90)),
    "resnet18-compression90-ig-adaptive-250": (
        "compression 90, IG --adaptive, 250 iterations",
        dict(attack="ig", model="resnet18", budget=250, adaptive=True, **COMPRESSION_90)),
    # LeNet (DLG's sigmoid LeNet): cheap enough for the refinement ablation
    "lenet-ggl-cma-2000": ("LeNet, GGL-CMA, 2000 evaluations",
                           dict(attack="ggl", model="lenet", budget=2000,
                                extra={"ng_method": "CMA"})),
    "lenet-ggl-cma-2000-refine-500-tv0": (
        "LeNet, GGL-CMA, 2000 evaluations + 500 pixel-space refinement steps without TV",
        dict(attack="ggl", model="lenet", budget=2000,
             extra={"ng_method": "CMA", "refine_steps": 500, "refine_tv": 0.0})),
    "lenet-ggl-cma-2000-refine-500": (
        "LeNet, GGL-CMA, 2000 evaluations + 500 pixel-space refinement steps, TV 1",
        dict(attack="ggl", model="lenet", budget=2000,
             extra={"ng_method": "CMA", "refine_steps": 500, "refine_tv": 1.0})),
    "lenet-ggl-adam-2000": ("LeNet, GGL-Adam, 2000 evaluations (steps)",
                            dict(attack="ggl", model="lenet", budget=2000,
                                 extra={"ng_method": "adam"})),
}

if __name__ == "__main__":
    main(PARTS, RESULTS, __doc__)
