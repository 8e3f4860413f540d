"""Seconds per WGAN-GP generator step (n_critic = 5 critic steps + 1 generator step, batch 64).

Times ``PriorTrainer.train_step`` (the exact code behind ``ggl train-prior``) on random data
of each shape, so no dataset is needed: the step's cost does not depend on the pixels.

    python experiments/benchmarks/train_prior_speed.py                  # CPU, this machine's threads
    python experiments/benchmarks/train_prior_speed.py --device cuda    # a GPU
    python experiments/benchmarks/train_prior_speed.py --threads 1 --widths 32 64

Prints one JSON line per configuration and appends them to
experiments/results/train_prior/speed.jsonl.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from ggl.gan_training.trainer import PriorTrainer, TrainPriorConfig
from ggl.data import ImageData, TensorImages

RESULTS = Path(__file__).resolve().parents[1] / "results" / "train_prior" / "speed.jsonl"


def random_data(channels: int, resolution: int, size: int = 2048) -> ImageData:
    images = torch.rand(size, channels, resolution, resolution) * 2 - 1
    labels = torch.arange(size) % 10
    split = TensorImages(images, labels)
    return ImageData("random", split, split, channels, resolution, 10, (0.5,) * channels,
                     (0.5,) * channels)


def time_step(width: int, channels: int, resolution: int, device: str, repeats: int) -> dict:
    data = random_data(channels, resolution)
    with tempfile.TemporaryDirectory() as out:
        config = TrainPriorConfig(out=out, width=width, device=device, resolution=resolution)
        trainer = PriorTrainer(config, data=data)
        trainer.train_step()  # warm-up (allocator, cuDNN autotune)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(repeats):
            trainer.train_step()  # .item() on the losses synchronizes each step
        seconds = (time.perf_counter() - started) / repeats
    return {"width": width, "channels": channels, "resolution": resolution,
            "device": str(trainer.device), "threads": torch.get_num_threads(),
            "seconds_per_generator_step": round(seconds, 4),
            "cpu": platform.processor() or platform.machine(),
            "gpu": torch.cuda.get_device_name() if trainer.device.type == "cuda" else None,
            "torch": torch.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--shapes", nargs="+", default=["1x32", "3x32", "3x64"],
                        help="CHANNELSxRESOLUTION")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    for shape in args.shapes:
        channels, resolution = map(int, shape.split("x"))
        for width in args.widths:
            row = time_step(width, channels, resolution, args.device, args.repeats)
            print(json.dumps(row), flush=True)
            with RESULTS.open("a") as handle:
                handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
