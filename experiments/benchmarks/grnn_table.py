"""GRNN against DLG and IG on the DLG LeNet: the same private digits, batches of 1, 4 and 8.

Every run goes through `ggl.api.run` (offline MNIST 1x32x32, LeNet seed = run seed, FedSGD,
labels not known: GRNN learns them with its label branch, DLG with its soft label, IG
infers them from the head's gradient). Seeds 0-2 pick the private batch, the victim's init
and the attack's draws, so each attack sees the same digits. Each setting is also run on its
random-gradient control (the same attack given noise in place of the update).

Budgets (2-core CPU, one thread): GRNN the paper's 1,000 RMSprop iterations (and 3,000, where
most runs have converged), DLG the paper's 300 L-BFGS iterations (ggl's strong-Wolfe
line search), IG 2,000 of the paper's 24,000 signed-Adam iterations (its lr steps at 3/8,
5/8 and 7/8 of the cut budget). Each finished run is appended to
``experiments/results/grnn/runs.jsonl`` and skipped when the script runs again; the table is
printed from that file, and one setting's digits are saved as an image grid.

    OMP_NUM_THREADS=1 python experiments/benchmarks/grnn_table.py [--seeds 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from ggl import RunConfig
from ggl.api import run
from ggl.data import load_dataset
from ggl.metrics import to_unit_range
from ggl.results import atomic_save_image, image_grid

RESULTS = Path(__file__).resolve().parents[1] / "results" / "grnn"
RUNS = RESULTS / "runs.jsonl"
#: (attack, budget, batch sizes)
SETTINGS = [("grnn", 1000, (1, 4, 8)), ("grnn", 3000, (1, 4, 8)), ("dlg", 300, (1, 4, 8)),
            ("ig", 2000, (1, 4, 8))]
#: the batch whose digits are saved as a grid (originals, then one row per setting)
GRID_BATCH, GRID_SEED = 8, 0
GRID = RESULTS / f"lenet_b{GRID_BATCH}_seed{GRID_SEED}.png"


def config(attack: str, budget: int, batch_size: int, seed: int, control: str
           ) -> RunConfig:
    return RunConfig(attack=attack, model="lenet", batch_size=batch_size, seed=seed,
                     budget=budget, device="cpu", control=control)


def key(attack: str, budget: int, batch_size: int, seed: int, control: str) -> str:
    return f"{attack}-{budget}-b{batch_size}-s{seed}-{control}"


def load_done() -> dict[str, dict]:
    if not RUNS.exists():
        return {}
    rows = [json.loads(line) for line in RUNS.read_text().splitlines() if line.strip()]
    return {row["key"]: row for row in rows}


def run_one(attack, budget, batch_size, seed, control, done, grid) -> dict:
    name = key(attack, budget, batch_size, seed, control)
    want_grid = (not GRID.exists() and control == "none" and batch_size == GRID_BATCH
                 and seed == GRID_SEED)
    if name in done and not want_grid:
        return done[name]
    result = run(config(attack, budget, batch_size, seed, control), write=False)
    record, metrics = result.record, result.record["metrics"]
    if want_grid:         # reconstructions in the originals' order (the metrics' matching)
        grid["original"] = result.secret.images.cpu()
        grid[attack, budget] = result.reconstruction.images[
            torch.as_tensor(metrics["matching"])].cpu()
    if name in done:
        return done[name]
    row = {"key": name, "attack": attack, "budget": budget, "batch_size": batch_size,
           "seed": seed, "control": control, "psnr": metrics["psnr"], "ssim": metrics["ssim"],
           "judge": metrics["judge_accuracy"], "label_accuracy": metrics["label_accuracy"],
           "true_labels": record["true_labels"], "recovered_labels": record["recovered_labels"],
           "loss": record["loss"], "attack_wall_time_s": record["attack_wall_time_s"]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    with RUNS.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
    done[name] = row
    print(f"  {name}: {row['psnr']:.2f} dB, judge {row['judge']:.2f}, "
          f"{row['attack_wall_time_s']:.0f} s", flush=True)
    return row


def save_grid(grid: dict) -> None:
    """Originals on top, then one row per setting (``SETTINGS`` order), in [0, 1] (made
    once: delete the PNG to make it again)."""
    if "original" not in grid:
        return
    data = load_dataset("mnist")
    settings = [(a, b) for a, b, batches in SETTINGS if (a, b) in grid]
    rows = [grid["original"]] + [grid[s] for s in settings]
    images = to_unit_range(torch.cat(rows), data.mean, data.std).clamp(0, 1)
    atomic_save_image(image_grid(images, min_size=64, nrow=GRID_BATCH), GRID)
    print(f"grid: {GRID}: originals, then " + ", ".join(f"{a} {b:,}" for a, b in settings))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    seeds = range(args.seeds)
    done, grid, table = load_done(), {}, []
    for attack, budget, batches in SETTINGS:
        for batch_size in batches:
            runs = [run_one(attack, budget, batch_size, s, "none", done, grid) for s in seeds]
            controls = [run_one(attack, budget, batch_size, s, "random-gradient", done, grid)
                        for s in seeds]
            mean = lambda rows, k: statistics.mean(r[k] for r in rows)   # noqa: E731
            table.append(
                f"| {attack} | {budget:,} | {batch_size} | {mean(runs, 'psnr'):.1f} "
                f"({min(r['psnr'] for r in runs):.1f}-{max(r['psnr'] for r in runs):.1f}) | "
                f"{mean(runs, 'ssim'):.2f} | {100 * mean(runs, 'judge'):.0f}% | "
                f"{100 * mean(runs, 'label_accuracy'):.0f}% | {mean(controls, 'psnr'):.1f} / "
                f"{100 * mean(controls, 'judge'):.0f}% | "
                f"{mean(runs, 'attack_wall_time_s'):.0f} s |")
    save_grid(grid)
    print("\n| attack | budget | batch | PSNR dB, mean (range) | SSIM | judge | labels | "
          "control: PSNR / judge | attack time |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(table))


if __name__ == "__main__":
    main()
