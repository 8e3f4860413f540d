"""GGL search plans on chosen private digits: judge, PSNR, search gap and time per plan.

    OMP_NUM_THREADS=1 python experiments/benchmarks/search_stages.py DIGITS PLANS [DEFENSE] [OUT] [MODEL]

    DIGITS   comma-separated private indices, e.g. 200,201,202
    PLANS    JSON: name -> GGL options, e.g.
             '{"cma": {"ng_method": "CMA", "budget": 5000},
               "default": {"budget": 5000}}'
    DEFENSE  none or one --defense spec (compression:90 is modelled: --adaptive); default
             compression:90
    OUT      JSONL file the rows are appended to (default search_stages.jsonl)
    MODEL    the victim (default lenet; resnet18 as in the baseline: untrained, eval mode)

One victim and observation per digit (the run's seed 0, as `ggl run --index D`),
every plan attacks the same observation; each row is scored as `ggl run` scores (judge,
identifiability, ceiling, search gap) and carries each stage's best objective and seconds.
The attack's own wall time is measured on one thread; compare plans as ratios from one run.
"""
from __future__ import annotations

import json
import sys
import time

import torch


def main(digits: list[int], plans: dict, defense: str, out_path: str, model: str) -> None:
    from ggl.api import honest_score, prepare
    from ggl.attacks.latent import GGL
    from ggl.config import RunConfig
    from ggl.plan import resolve

    torch.set_num_threads(1)
    with open(out_path, "a") as out:
        for digit in digits:
            config = RunConfig(index=(digit,), model=model,
                               defense=() if defense == "none" else (defense,),
                               adaptive=defense.startswith("compression"),
                               device="cpu")
            plan = resolve(config)
            torch.manual_seed(config.seed)
            scenario, data = prepare(plan)
            device = plan.device
            observation, secret = scenario.observe()
            for name, options in plans.items():
                attack = GGL(seed=config.seed, adaptive=config.adaptive, **options)
                began = time.perf_counter()
                reconstruction = attack.reconstruct(observation)
                seconds = time.perf_counter() - began
                scores = honest_score(observation, reconstruction, secret, data, device)
                row = {"digit": digit, "model": model, "plan": name, "defense": defense,
                       "stages": attack.options.stages, "starts": attack.options.starts,
                       "psnr": scores.psnr, "ssim": scores.ssim,
                       "judge_accuracy": scores.judge_accuracy,
                       "identifiability": scores.identifiability,
                       "generator": reconstruction.info["generator"],
                       "ceiling_psnr": scores.ceiling_psnr, "search_gap": scores.search_gap,
                       "gradient_loss": reconstruction.loss,
                       "evaluations": reconstruction.evaluations, "seconds": seconds,
                       "returned_stage": reconstruction.info["returned_stage"],
                       "stage_records": [{k: r[k] for k in ("stage", "evaluations", "seconds",
                                                            "best_objective")}
                                         for r in reconstruction.info["stage_records"]]}
                print(json.dumps(row), flush=True)
                out.write(json.dumps(row) + "\n")
                out.flush()


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main([int(d) for d in sys.argv[1].split(",")], json.loads(sys.argv[2]),
         sys.argv[3] if len(sys.argv) > 3 else "compression:90",
         sys.argv[4] if len(sys.argv) > 4 else "search_stages.jsonl",
         sys.argv[5] if len(sys.argv) > 5 else "lenet")
