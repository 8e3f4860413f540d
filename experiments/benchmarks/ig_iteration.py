"""Iteration cost of ggl's ``ig`` against a bare PyTorch loop doing the same work.

Both do, per iteration: forward of the victim, the FedSGD gradient with ``create_graph``,
IG's cosine distance + TV, the gradient w.r.t. the image, its sign, an Adam step with the
step schedule, and the clamp to the pixel box. ggl additionally runs its objective object,
label inference, history, snapshots, progress callbacks and, like IG, one more evaluation
at the end to score the restart (included in its time: 1/300 of LeNet's iterations, 1/20
of ResNet-18's on the CPU). Reported: milliseconds per
iteration (median of ``--repeats`` timings) and ggl's overhead in percent.

    python experiments/benchmarks/ig_iteration.py --device cpu --threads 2
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from ggl.attacks.pixel import InvertingGradients
from ggl.data import load_dataset
from ggl.models import build_victim
from ggl.scenario import Scenario


def bare_ig(model, target, labels, image_shape, iterations, device, tv=1e-4, lr=0.1):
    """A plain loop written as one would without ggl. Returns seconds per iteration."""
    params = list(model.parameters())
    target_norm = sum(g.pow(2).sum() for g in target).sqrt()
    x = torch.randn(1, *image_shape, generator=torch.Generator().manual_seed(0)).to(device)
    x.requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=lr)
    milestones = [int(iterations // 2.667), int(iterations // 1.6), int(iterations // 1.142)]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)
    history = []
    start = time.perf_counter()
    for _ in range(iterations):
        loss = F.cross_entropy(model(x), labels)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        dot = sum((g * t).sum() for g, t in zip(grads, target))
        norm = sum(g.pow(2).sum() for g in grads).sqrt()
        rec = 1 - dot / (norm * target_norm)
        rec = rec + tv * ((x[..., 1:] - x[..., :-1]).abs().mean()
                          + (x[..., 1:, :] - x[..., :-1, :]).abs().mean())
        grad, = torch.autograd.grad(rec, x)
        x.grad = grad.sign()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            x.clamp_(-1, 1)
        history.append(rec.item())
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / iterations


def ggl_ig(observation, iterations):
    attack = InvertingGradients(seed=0, budget=iterations)
    start = time.perf_counter()
    attack.reconstruct(observation)
    if observation.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / iterations


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", default="lenet,resnet18")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = load_dataset("mnist")
    images, labels = data.private_batch([0])
    iterations = {"lenet": 300, "resnet18": 20}
    results = []
    for name in args.models.split(","):
        model = build_victim(name, 1, 32, 10, seed=0).to(device)
        observation, _ = Scenario(model, images.to(device), labels.to(device), num_classes=10,
                                  mean=data.mean, std=data.std).observe()
        n = iterations.get(name, 50) * (5 if device.type == "cuda" else 1)
        bare_ig(observation.model, observation.gradient, labels.to(device), data.shape, 5, device)
        ggl_ig(observation, 5)                                           # warm-up
        bare, ours = [], []
        for _ in range(args.repeats):                                    # interleaved
            bare.append(bare_ig(observation.model, observation.gradient, labels.to(device),
                                data.shape, n, device))
            ours.append(ggl_ig(observation, n))
        row = {"model": name, "device": str(device), "threads": args.threads,
               "iterations": n, "bare_ms": 1000 * statistics.median(bare),
               "ggl_ms": 1000 * statistics.median(ours)}
        row["overhead_percent"] = 100 * (row["ggl_ms"] / row["bare_ms"] - 1)
        results.append(row)
        print(f"{name:9s} {device}: bare {row['bare_ms']:.2f} ms/it, ggl {row['ggl_ms']:.2f} "
              f"ms/it, overhead {row['overhead_percent']:+.1f}%", flush=True)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
