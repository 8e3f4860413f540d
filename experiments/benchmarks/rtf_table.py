"""Robbing the Fed on the offline MNIST: images recovered at >= 40 dB out of a batch.

For each victim (LeNet, ResNet-18) and bin count (128, 1,000), five batches of 64
private digits (drawn by seeds 0-4) are attacked through `ggl.api.run` (FedSGD, the
malicious server's imprint block before the model); then, on LeNet with 128 bins, FedAvg
updates of 1, 5 and 10 local steps in batches of 8 at lr 0.1 show how recovery degrades.
Each setting is also run on its random-gradient control (the same attack given noise in
place of the update).

    OMP_NUM_THREADS=1 python experiments/benchmarks/rtf_table.py [--batches 5]
"""
from __future__ import annotations

import argparse
import statistics
from dataclasses import replace

from ggl import RunConfig
from ggl.api import run

EXACT_DB = 40.0


def recovered(config: RunConfig) -> tuple[int, int, float]:
    """(images >= 40 dB, bins read, judge accuracy) of one run."""
    record = run(config, write=False).record
    psnr = record["metrics"]["per_image"]["psnr"]
    return (sum(p >= EXACT_DB for p in psnr), record["info"]["bins_read"],
            record["metrics"]["judge_accuracy"])


def row(label: str, configs: list[RunConfig]) -> None:
    results = [recovered(c) for c in configs]
    controls = [recovered(replace(c, control="random-gradient")) for c in configs]
    counts = [r[0] for r in results]
    print(f"| {label} | {statistics.mean(counts):.1f} | {min(counts)}-{max(counts)} | "
          f"{statistics.mean(r[1] for r in results):.1f} | "
          f"{100 * statistics.mean(r[2] for r in results):.0f}% | "
          f"{statistics.mean(r[0] for r in controls):.1f} / "
          f"{100 * statistics.mean(r[2] for r in controls):.0f}% |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    seeds = range(args.batches)
    print(f"| setting | recovered >= 40 dB (of {args.batch_size}), mean | range | bins read "
          f"| judge | control: recovered / judge |")
    print("|---|---|---|---|---|---|")
    for model in ("lenet", "resnet18"):
        for bins in (128, 1000):
            row(f"{model}, {bins} bins, FedSGD", [
                RunConfig(attack="rtf", model=model, batch_size=args.batch_size, seed=s,
                          device="cpu", control="none", extra={"bins": bins})
                for s in seeds])
    for steps in (1, 5, 10):
        row(f"lenet, 128 bins, FedAvg {steps} steps of 8 at lr 0.1", [
            RunConfig(attack="rtf", model="lenet", batch_size=args.batch_size, seed=s,
                      device="cpu", control="none", protocol="fedavg", local_steps=steps,
                      local_batch_size=8, local_lr=0.1) for s in seeds])


if __name__ == "__main__":
    main()
