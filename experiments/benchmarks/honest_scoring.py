"""The judge's accuracy on the private split and the prior's ceiling on real private digits.

    OMP_NUM_THREADS=1 python experiments/benchmarks/honest_scoring.py \
        --out experiments/results/honest_scoring/ceiling.json

Prints (and writes as JSON) the shipped offline-MNIST judge's accuracy on every private
digit (per class too), and the distribution of ``ceiling_psnr`` -- each private digit
projected into the shipped unconditional prior exactly as ``ggl run`` does it
(``ggl.ceiling.project``) -- for the given private indices (default: the baseline table's 200..219 and 20 more,
300..319), with the judge's verdict on each projection and the seconds per digit.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch


def main() -> None:
    from ggl.generators import build_prior
    from ggl.ceiling import project
    from ggl.data import load_dataset
    from ggl.judge import load_judge, stack_split
    from ggl.results import atomic_write_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=int, nargs="*",
                        default=list(range(200, 220)) + list(range(300, 320)))
    parser.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = parser.parse_args()

    data = load_dataset("mnist")
    judge, source = load_judge(data)
    images, labels = stack_split(data.private)
    predicted = judge.predict(images)
    per_class = {int(c): (predicted[labels == c] == c).float().mean().item()
                 for c in labels.unique()}
    accuracy = (predicted == labels).float().mean().item()
    print(f"judge ({source}): {accuracy:.1%} on {len(labels)} private digits; per class "
          + ", ".join(f"{c}: {a:.0%}" for c, a in per_class.items()))

    prior = build_prior("default-unconditional", "mnist").bind(data.shape, data.mean, data.std)
    rows = []
    for index in args.index:
        image, label = data.private_batch([index])
        started = time.perf_counter()
        latent, value = project(prior, image)
        seconds = time.perf_counter() - started
        with torch.no_grad():
            judged = int(judge.predict(prior(latent))[0])
        rows.append({"index": index, "label": int(label), "ceiling_psnr": value.item(),
                     "judge_of_projection": judged, "seconds": seconds})
        print(f"  private {index} (a {int(label)}): ceiling {value.item():.2f} dB, the judge "
              f"sees a {judged}, {seconds:.1f} s")
    values = sorted(r["ceiling_psnr"] for r in rows)
    summary = {
        "judge": {"source": source, "private_accuracy": accuracy, "per_class": per_class,
                  "private_images": len(labels)},
        "ceiling": {"digits": len(rows), "mean": statistics.fmean(values),
                    "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "min": values[0], "median": statistics.median(values), "max": values[-1],
                    "below_25_db": sum(v < 25 for v in values),
                    "projection_judged_right": sum(r["judge_of_projection"] == r["label"]
                                                   for r in rows),
                    "seconds_per_digit": statistics.fmean(r["seconds"] for r in rows)},
        "rows": rows, "threads": torch.get_num_threads()}
    c = summary["ceiling"]
    print(f"ceiling over {c['digits']} digits: mean {c['mean']:.2f} ± {c['std']:.2f} dB, min "
          f"{c['min']:.2f}, median {c['median']:.2f}, max {c['max']:.2f}; {c['below_25_db']} "
          f"below 25 dB; the judge recognises {c['projection_judged_right']} projections; "
          f"{c['seconds_per_digit']:.1f} s per digit")
    if args.out:
        atomic_write_json(Path(args.out), summary)


if __name__ == "__main__":
    main()
