"""Accuracy of label inference: iDLG for B = 1, label-count restoration for B > 1.

For each victim (untrained, seeded, eval mode) and batch size, draws ``--batches`` seeded
random batches from the offline MNIST private split and reports how often the inferred
labels are exactly the true multiset, and the mean fraction of labels recovered. B > 1 is
measured twice: with the server's public images (ggl's default) and with random inputs
(what the server can do without public data).

    python experiments/benchmarks/label_counts.py --batches 50
"""
from __future__ import annotations

import argparse
import dataclasses

import torch

from ggl.api import PUBLIC_SAMPLE
from ggl.data import load_dataset
from ggl.labels import count_labels, idlg_label
from ggl.metrics import label_set_accuracy
from ggl.models import build_victim
from ggl.scenario import Scenario


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--models", default="lenet,convnet,mlp,resnet18")
    parser.add_argument("--sizes", default="1,2,4,8")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("mnist")
    public = torch.stack([data.public[i][0] for i in range(PUBLIC_SAMPLE)])
    print("| victim | B | method | exact multiset | labels recovered |")
    print("|---|---|---|---|---|")
    for name in args.models.split(","):
        model = build_victim(name, 1, 32, 10, seed=0)
        for batch in map(int, args.sizes.split(",")):
            methods = ["idlg"] if batch == 1 else ["counts (public images)",
                                                   "counts (random inputs)"]
            for method in methods:
                exact, recovered = 0, 0.0
                for trial in range(args.batches):
                    generator = torch.Generator().manual_seed(trial)
                    indices = torch.randperm(len(data.private), generator=generator)[:batch]
                    images, labels = data.private_batch(indices.tolist())
                    observation, _ = Scenario(model, images, labels, num_classes=10,
                                              mean=data.mean, std=data.std,
                                              public_images=public).observe()
                    if method == "idlg":
                        predicted = idlg_label(observation)
                    elif "random" in method:
                        predicted = count_labels(dataclasses.replace(observation,
                                                                     public_images=None))
                    else:
                        predicted = count_labels(observation)
                    exact += int(torch.equal(predicted.sort().values, labels.sort().values))
                    recovered += label_set_accuracy(predicted, labels)
                print(f"| {name} | {batch} | {method} | {exact / args.batches:.0%} | "
                      f"{recovered / args.batches:.1%} |", flush=True)


if __name__ == "__main__":
    main()
