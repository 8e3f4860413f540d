"""Does a class-conditional prior draw the class it is given? The judge decides.

    OMP_NUM_THREADS=1 python experiments/benchmarks/conditional_prior.py \
        experiments/results/train_prior/cond-ac [more checkpoint folders or generator files] \
        --out experiments/results/conditional_prior/judge.json

For each generator (a ``ggl train-prior --conditional`` output folder, which holds the
generator of its latest checkpoint, or a ``generator.safetensors``), draws
``--per-class`` images of every class (latents from N(0, I), seed ``--seed``) and reports
the share the independent judge (``ggl.judge``: the shipped offline-MNIST classifier,
trained on the public split only) assigns to the class asked for -- overall and per
class -- and the judge's mean confidence in it. The acceptance bar of the search issue is
90% overall.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch


@torch.no_grad()
def conditional_accuracy(generator, judge, num_classes: int, per_class: int,
                         seed: int) -> dict:
    """Judge agreement with the class asked for: ``{"accuracy", "per_class", "confidence"}``."""
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    latents = torch.randn(len(labels), generator.config.latent_dim,
                          generator=torch.Generator().manual_seed(seed))
    generator.eval()
    agreed, confidence = [], []
    for start in range(0, len(labels), 500):
        images = generator(latents[start:start + 500], labels[start:start + 500])
        probabilities = judge.net(images.to(judge.device)).softmax(1).cpu()
        wanted = labels[start:start + 500]
        agreed.append(probabilities.argmax(1) == wanted)
        confidence.append(probabilities[torch.arange(len(wanted)), wanted])
    agreed, confidence = torch.cat(agreed).float(), torch.cat(confidence)
    return {"accuracy": agreed.mean().item(),
            "per_class": {c: agreed[labels == c].mean().item() for c in range(num_classes)},
            "confidence": confidence.mean().item(), "samples": len(labels)}


def main() -> None:
    from ggl.generators.wgan_gp import load_generator
    from ggl.data import load_dataset
    from ggl.judge import load_judge
    from ggl.results import atomic_write_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("generators", nargs="+", help="conditional generator folders / files")
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = parser.parse_args()

    data = load_dataset("mnist")
    judge, _ = load_judge(data)
    results = {}
    for path in args.generators:
        generator = load_generator(Path(path))
        if not generator.config.conditional:
            raise SystemExit(f"Error: {path} is not a class-conditional generator")
        result = conditional_accuracy(generator, judge, data.num_classes, args.per_class,
                                      args.seed)
        results[str(path)] = result
        worst = min(result["per_class"].items(), key=lambda item: item[1])
        print(f"{path}: judge agrees with the class asked for on {result['accuracy']:.1%} "
              f"of {result['samples']} samples (worst class {worst[0]}: {worst[1]:.1%}), "
              f"mean confidence in it {result['confidence']:.3f}")
    if args.out:
        atomic_write_json(Path(args.out), {"per_class_samples": args.per_class,
                                           "seed": args.seed, "results": results})


if __name__ == "__main__":
    main()
