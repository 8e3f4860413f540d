"""Scoring a population of 50 candidate batches by their simulated FedAvg update: one
vmapped simulation vs one simulation per candidate, in the same process (a ratio).

    OMP_NUM_THREADS=1 python experiments/benchmarks/fedavg_batched_simulation.py

LeNet, N = 2 images, E = 2 epochs of single-image steps (4 local steps), lr 0.05.
"""
from __future__ import annotations

import time

import torch

from ggl.attacks.weight_update import UpdateMatching
from ggl.contracts import Observation, WeightUpdate
from ggl.data import load_dataset
from ggl.local_training import LocalTraining, simulate_update
from ggl.models import build_victim


def main(population: int = 50, repeats: int = 5) -> None:
    data = load_dataset("mnist")
    model = build_victim("lenet", 1, 32, 10, seed=0)
    images, labels = data.private_batch([3, 4])
    training = LocalTraining(epochs=2, batch_size=1, lr=0.05)
    order = training.batch_order(2, torch.Generator().manual_seed(0))
    update = tuple(simulate_update(model, images, labels, training, order))
    observation = Observation(model=model, gradient=update, batch_size=2,
                              image_shape=(1, 32, 32), num_classes=10, mean=(0.5,), std=(0.5,),
                              weight_update=WeightUpdate(update, training, 2))
    matching = UpdateMatching(observation, "l2", "mean", tv=0.0)
    candidates = torch.randn(population, 2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    timings = {}
    with torch.no_grad():
        for name, score in (("batched", lambda: matching(candidates, labels)),
                            ("one at a time", lambda: torch.cat(
                                [matching(c.unsqueeze(0), labels) for c in candidates]))):
            score()                                    # warm-up
            started = time.perf_counter()
            for _ in range(repeats):
                values = score()
            timings[name] = (time.perf_counter() - started) / repeats
            timings[name + " values"] = values
    assert torch.allclose(timings["batched values"], timings["one at a time values"], rtol=1e-4)
    print(f"population {population}: batched {timings['batched']:.3f} s, one at a time "
          f"{timings['one at a time']:.3f} s, speed-up x{timings['one at a time'] / timings['batched']:.1f}")


if __name__ == "__main__":
    main()
