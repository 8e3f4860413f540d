"""Label inference from FedAvg weight updates: how often ggl's rules give the client's
labels when the update is several local SGD steps. For N > 1 two rules side by side:
``bias-count`` (the FedSGD rule, reading update / lr as one gradient) and ``update-count``
(the counts over the S local steps with the softmax interpolated between the sent and the
returned model, Dimitrov et al. 2022); for N = 1 iDLG's sign rule. The server probes with
its 64 public images, as in ``ggl run``.

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
from ggl.labels import LABEL_METHODS, label_method
from ggl.local_training import LocalTraining
from ggl.models import build_victim
from ggl.scenario import Scenario

SETTINGS = [  # (N, E, B, lr)
    (1, 1, None, 0.1), (1, 5, None, 0.05), (1, 5, None, 0.01),
    (4, 1, None, 0.1), (4, 1, 1, 0.05), (4, 5, 2, 0.05), (8, 2, 4, 0.05), (8, 5, 2, 0.1),
    # at lr 0.05 one step of this LeNet already saturates its softmax on the step's image
    # (768 sigmoid features: the logit moves by ~lr x 192); smaller steps keep the
    # trajectory close to the straight line the interpolation assumes
    (4, 1, 1, 0.005), (4, 5, 2, 0.005), (8, 5, 2, 0.005), (8, 5, 2, 0.001),
]
CLIENTS = 50


def accuracy(data, n: int, training: LocalTraining | None, method: str | None = None) -> float:
    """Share of the labels ``method`` (default: what an attack would use) recovers."""
    model = build_victim("lenet", 1, 32, 10, seed=0)
    public = torch.stack([data.public[i][0] for i in range(64)])
    hits = total = 0
    for client in range(CLIENTS):
        images, labels = data.private_batch(list(range(10 * client, 10 * client + n)))
        observation, secret = Scenario(model, images, labels, num_classes=10, mean=data.mean,
                                       std=data.std, seed=client, public_images=public,
                                       local_training=training).observe()
        rule = LABEL_METHODS[method or label_method(observation)]
        found = collections.Counter(rule(observation).tolist())
        truth = collections.Counter(secret.labels.tolist())
        hits += sum((found & truth).values())
        total += n
    return hits / total


def main() -> None:
    data = load_dataset("mnist")
    print("| N | E | B | lr | local steps | bias-count (update / lr as a gradient) | "
          "update-count (over the steps) |")
    print("|---|---|---|---|---|---|---|")
    for n, epochs, batch, lr in SETTINGS:
        training = LocalTraining(epochs=epochs, batch_size=batch, lr=lr)
        if n == 1:
            cells = f"iDLG {accuracy(data, n, training):.0%} | iDLG (the same rule) |"
        else:
            cells = (f"{accuracy(data, n, training, 'bias-count'):.0%} | "
                     f"{accuracy(data, n, training, 'update-count'):.0%} |")
        print(f"| {n} | {epochs} | {batch or n} | {lr} | {training.num_steps(n)} | {cells}")
    for n in (1, 4, 8):
        print(f"| {n} | FedSGD | | | 1 | {accuracy(data, n, None):.0%} | |")


if __name__ == "__main__":
    main()
