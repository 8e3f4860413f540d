"""GGL objective evaluations per second: a population scored in one batched pass vs one at a time.

One evaluation = generator forward + the victim's per-candidate FedSGD gradient + the L2
distance to the shared gradient + KL, exactly the objective ``ggl run`` hands its optimizer.
"batched" scores the population with one generator call and ``torch.func`` (vmap over
per-candidate gradients, chunked on a GPU); "loop" generates and differentiates candidate by
candidate, as GGL's original code does.

    python experiments/benchmarks/latent_eval_speed.py --device cpu --threads 2
    python experiments/benchmarks/latent_eval_speed.py --device cuda --biggan   # GPU machine

``--biggan`` also times a random-initialised BigGAN-deep-256-sized generator with ResNet-18 at
224 px (the original's ImageNet setting, ~43 ms per evaluation one at a time).
Rows are appended to experiments/results/latent_eval_speed.jsonl.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from ggl.generators import default_prior
from ggl.generators.prior import wgan_gp_prior
from ggl.attacks.latent import latent_kl
from ggl.models import build_victim
from ggl.objective import GradientMatching

RESULTS = Path(__file__).resolve().parents[1] / "results" / "latent_eval_speed.jsonl"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_objective(prior, victim, path: str, device: torch.device):
    """``latents (P, d) -> (P,)`` with the victim's gradient of a prior sample as the target."""
    image_shape = prior.image_shape
    labels = torch.tensor([3], device=device)
    secret = prior(prior.sample_latent(1).to(device), labels if prior.conditional else None)
    target = torch.autograd.grad(torch.nn.functional.cross_entropy(victim(secret), labels),
                                 list(victim.parameters()))
    objective = GradientMatching(victim, target, path=path)

    def evaluate(latents):
        with torch.no_grad():
            if path == "loop":           # one candidate at a time, generator included
                images = torch.cat([prior(z[None], labels if prior.conditional else None)
                                    for z in latents])
            else:
                classes = labels.repeat(len(latents)) if prior.conditional else None
                images = prior(latents, classes)
            return objective(images.view(len(latents), 1, *image_shape), labels) \
                + 0.1 * latent_kl(latents)

    return evaluate


def rate(evaluate, prior, population: int, device, repeats: int) -> float:
    latents = prior.sample_latent(population, torch.Generator().manual_seed(0)).to(device)
    evaluate(latents)                                   # warm-up
    synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        evaluate(latents)
    synchronize(device)
    return population * repeats / (time.perf_counter() - started)


def biggan_setup(device):
    from pytorch_pretrained_biggan import BigGAN, BigGANConfig

    from ggl.generators.biggan import initialise_random, prior_from_biggan

    config = BigGANConfig(output_dim=256, z_dim=128, class_embed_dim=128, channel_width=128,
                          num_classes=1000, attention_layer_position=8,
                          layers=[(False, 16, 16), (True, 16, 16), (False, 16, 16),
                                  (True, 16, 8), (False, 8, 8), (True, 8, 8), (False, 8, 4),
                                  (True, 4, 4), (False, 4, 2), (True, 2, 2), (False, 2, 1),
                                  (True, 1, 1)])
    torch.manual_seed(0)
    prior = prior_from_biggan(initialise_random(BigGAN(config)), "biggan-deep-256 (random)")
    prior = prior.to(device).bind((3, 224, 224), (0.5,) * 3, (0.5,) * 3)
    victim = build_victim("resnet18", 3, 224, 1000, seed=0).to(device)
    return prior, victim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--population", type=int, default=50)
    parser.add_argument("--models", nargs="+", default=["lenet", "resnet18"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--biggan", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    setups = []
    for model in args.models:
        prior = wgan_gp_prior(default_prior("mnist")).to(device).bind((1, 32, 32), (0.5,), (0.5,))
        setups.append((f"{model} 1x32x32, shipped 32x32 prior", prior,
                       build_victim(model, 1, 32, 10, seed=0).to(device)))
    if args.biggan:
        setups.append(("resnet18 3x224x224, biggan-deep-256-sized", *biggan_setup(device)))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    for name, prior, victim in setups:
        rates = {path: rate(make_objective(prior, victim, path, device), prior,
                            args.population, device, args.repeats)
                 for path in ("loop", "vmap")}
        row = {"setup": name, "device": str(device), "population": args.population,
               "threads": torch.get_num_threads(),
               "loop_evals_per_s": round(rates["loop"], 2),
               "batched_evals_per_s": round(rates["vmap"], 2),
               "speedup": round(rates["vmap"] / rates["loop"], 2),
               "loop_ms_per_eval": round(1000 / rates["loop"], 2),
               "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
               "cpu": platform.processor() or platform.machine(), "torch": torch.__version__}
        print(json.dumps(row), flush=True)
        with RESULTS.open("a") as handle:
            handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
