"""Label inference from FedAvg weight updates: how often ggl's rules (iDLG's sign rule for
one image, last-layer counts for a batch) still give the client's labels when the update is
several local SGD steps, read as update / lr.

    OMP_NUM_THREADS=1 python experiments/benchmarks/fedavg_labels.py

LeNet (DLG's, untrained), the offline MNIST private split; per setting, 50 clients of N
consecutive private digits starting at 10 k (k = 0..49). Accuracy: the share of the
clients' labels recovered as a multiset (for N > 1 the rules recover counts, not order).
Prints a Markdown table.
"""
from __future__ import annotations

import collections

import torch

from ggl.data import load_dataset
from ggl.labels import infer_labels
from ggl.local_training import LocalTraining
from ggl.models import build_victim
from ggl.scenario import Scenario

SETTINGS = [  # (N, E, B, lr)
    (1, 1, None, 0.1), (1, 5, None, 0.05), (1, 5, None, 0.01),
    (4, 1, None, 0.1), (4, 1, 1, 0.05), (4, 5, 2, 0.05), (8, 2, 4, 0.05), (8, 5, 2, 0.1),
]
CLIENTS = 50


def accuracy(data, n: int, training: LocalTraining | None) -> float:
    model = build_victim("lenet", 1, 32, 10, seed=0)
    hits = total = 0
    for client in range(CLIENTS):
        images, labels = data.private_batch(list(range(10 * client, 10 * client + n)))
        observation, secret = Scenario(model, images, labels, num_classes=10, mean=data.mean,
                                       std=data.std, seed=client,
                                       local_training=training).observe()
        found = collections.Counter(infer_labels(observation).tolist())
        truth = collections.Counter(secret.labels.tolist())
        hits += sum((found & truth).values())
        total += n
    return hits / total


def main() -> None:
    data = load_dataset("mnist")
    print("| N | E | B | lr | local steps | labels recovered (FedSGD rule on update / lr) |")
    print("|---|---|---|---|---|---|")
    for n, epochs, batch, lr in SETTINGS:
        training = LocalTraining(epochs=epochs, batch_size=batch, lr=lr)
        print(f"| {n} | {epochs} | {batch or n} | {lr} | {training.steps(n)} | "
              f"{accuracy(data, n, training):.0%} |")
    for n in (1, 4, 8):
        print(f"| {n} | FedSGD | | | 1 | {accuracy(data, n, None):.0%} |")


if __name__ == "__main__":
    main()
