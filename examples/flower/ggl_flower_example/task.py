"""What a Flower user already has: the model (Flower's quickstart CNN, sized for the
1 x 32 x 32 MNIST digits) and each client's data (a partition of the offline MNIST split
that ggl ships, so the example runs without a download).

The only ggl-specific line registers the model under a name, so that the server's audit
can rebuild the architecture the parameters belong to.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from ggl.models import MODELS

MODEL_NAME = "flower-quickstart-cnn"
#: ggl's MNIST images are 32 x 32 (as in the GGL papers): Flower's CNN then sees the
#: 16 x 5 x 5 features of its CIFAR-10 original
RESOLUTION = 32


class Net(nn.Module):
    """Flower's quickstart-pytorch CNN: images ``(B, C, R, R)`` -> logits ``(B, classes)``.

    ``width`` and ``dropout`` are ggl's model options; this model has neither."""

    def __init__(self, channels: int = 1, resolution: int = RESOLUTION, num_classes: int = 10,
                 width: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        side = ((resolution - 4) // 2 - 4) // 2
        self.fc1 = nn.Linear(16 * side * side, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = x.flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


if MODEL_NAME not in MODELS:
    MODELS.add(MODEL_NAME, Net, "Flower's quickstart CNN (examples/flower)")


@functools.lru_cache(maxsize=None)
def _shares(num_partitions: int, seed: int) -> tuple:
    from ggl.data import load_dataset
    from ggl.federation import split_clients

    data = load_dataset("mnist", resolution=RESOLUTION)
    labels = torch.tensor([int(data.private[i][1]) for i in range(len(data.private))])
    return data, split_clients(labels, num_partitions, None, seed)


def load_partition(partition_id: int, num_partitions: int, images: int, seed: int = 0):
    """The first ``images`` digits of client ``partition_id``'s IID share:
    ``(images (N, 1, 32, 32) normalized, labels (N,), indices into the private split)``."""
    data, shares = _shares(num_partitions, seed)
    indices = list(shares[partition_id][:images])
    x, y = data.private_batch(indices)
    return x, y, indices
