"""``ig-multi``'s cost against the number of unrolled local steps: time per attack iteration
and peak memory, LeNet and ConvNet, a client of 8 offline MNIST digits in local batches of 8.

    OMP_NUM_THREADS=1 python experiments/benchmarks/fedavg_unrolled_memory.py

One attack iteration differentiates the candidates through S simulated SGD steps (the
graph of every step is kept for the backward pass), so memory grows linearly with S. Each
setting runs in a fresh process; peak memory is the process's peak resident set during 3
iterations (``VmHWM`` after resetting it) minus its resident set just before them (the model, data and interpreter). The
last line per model extrapolates linearly to the number of steps that would fill 24 GB.
Prints a Markdown table.
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

STEPS = (1, 5, 10, 50)
MODELS = ("lenet", "convnet")
ITERATIONS = 3


def resident_bytes() -> int:
    """This process's resident set now (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def reset_peak() -> None:
    """Forget the peak resident set so far (Linux: 5 > /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def peak_bytes() -> int:
    """The peak resident set since :func:`reset_peak` (``VmHWM`` in /proc/self/status)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def measure(model: str, steps: int) -> dict:
    """In this process: one run's observation, then ITERATIONS differentiable evaluations."""
    import torch

    from ggl import RunConfig
    from ggl.api import prepare
    from ggl.attacks.weight_update import UpdateMatching
    from ggl.plan import resolve

    plan = resolve(RunConfig(attack="ig-multi", model=model, protocol="fedavg",
                             local_epochs=steps, local_batch_size=8, local_lr=0.01,
                             batch_size=8, known_labels=True, device="cpu", control="none"))
    observation, _ = prepare(plan)[0].observe()
    objective = UpdateMatching(observation, "cosine", "mean", tv=1e-4)
    images = torch.randn(1, 8, *observation.image_shape, requires_grad=True)
    reset_peak()              # loading the data peaked higher than the attack may
    before = resident_bytes()
    started = time.perf_counter()
    for _ in range(ITERATIONS):
        (grad,) = torch.autograd.grad(objective(images, observation.labels).sum(), images)
    seconds = (time.perf_counter() - started) / ITERATIONS
    peak = peak_bytes()
    saved: dict[tuple, int] = {}          # what the graph keeps for the backward pass

    def pack(tensor):
        key = (tensor.untyped_storage().data_ptr(), tensor.dtype)
        saved[key] = max(saved.get(key, 0), tensor.untyped_storage().nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = objective(images, observation.labels).sum()
    return {"seconds": seconds, "memory_mb": max(0, peak - before) / 2**20,
            "saved_mb": sum(saved.values()) / 2**20,
            "finite": bool(torch.isfinite(grad).all())}


def main() -> None:
    if len(sys.argv) == 3:
        print(json.dumps(measure(sys.argv[1], int(sys.argv[2]))))
        return
    print("| victim | local steps | s per attack iteration | peak resident memory (MB) | "
          "saved for backward (MB) |")
    print("|---|---|---|---|---|")
    for model in MODELS:
        points = []
        for steps in STEPS:
            out = subprocess.run([sys.executable, __file__, model, str(steps)], check=True,
                                 capture_output=True, text=True).stdout.strip().splitlines()
            row = json.loads(out[-1])
            points.append((steps, row["saved_mb"]))
            print(f"| {model} | {steps} | {row['seconds']:.3f} | {row['memory_mb']:.0f} | "
                  f"{row['saved_mb']:.1f} |"
                  + ("" if row["finite"] else " (non-finite gradient)"))
        (s0, m0), (s1, m1) = points[0], points[-1]
        per_step = (m1 - m0) / (s1 - s0)
        if per_step > 0:
            print(f"| {model} | ~{24 * 1024 / per_step:.0f} (extrapolated) | | | 24,576 "
                  f"({per_step:.2f} MB per step) |")


if __name__ == "__main__":
    main()
