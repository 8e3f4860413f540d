"""GGL attached to a real Flower simulation: leakage and the cost of attaching it.

    OMP_NUM_THREADS=1 python experiments/benchmarks/flower_table.py [OUT]

10 Flower clients (Ray backend, one CPU) share the offline private split (Dirichlet 0.5),
each holding 8 digits of its share, and train LeNet for 3 rounds of FedAvg (1 local epoch
in batches of 4 at lr 0.1, seed 001's lr) under no defense, Gaussian noise (sigma 0.01 on
the update) or compression (90% of every layer's smallest entries zeroed). ggl attacks
client 0 in rounds 1 and 3 with GGL (1000 evaluations, known labels) and scores it against
the client's digits, beside the same attack on its random-gradient control. Each setting
runs twice, with ggl attached and without, and prints the
wall time of both (the difference is the attacks: Flower's training is the same, which the
script checks by comparing the final global models, equal up to the rounding of Flower's
arrival-order sums).
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ggl import RunConfig
from ggl.flower import FlowerAudit
from ggl.flower_sim import ClientSetup, client_batch, simulate

DEFENSES = {"none": (), "noise:0.01": ("noise:0.01",), "compression:90": ("compression:90",)}
COMMON = dict(attack="ggl", budget=1000, model="lenet", protocol="fedavg", clients=10,
              rounds=3, dirichlet=0.5, local_epochs=1, local_batch_size=4, local_lr=0.1,
              batch_size=8, index=(0,), known_labels=True, device="cpu", seed=0)


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    print("| defense | round | GGL: PSNR (dB) / SSIM / judge | random-gradient control: "
          "PSNR / judge | simulation with ggl (s) | without (s) |")
    print("|---|---|---|---|---|---|")
    for name, defense in DEFENSES.items():
        config = RunConfig(defense=defense, **COMMON)
        setup = ClientSetup(config, clients=10, dirichlet=0.5)
        audit = FlowerAudit(config, clients=[0], rounds=[1, 3],
                            out=root / name.replace(":", "_"),
                            secret=lambda round_, client: client_batch(setup, client))
        started = time.perf_counter()
        audited = simulate(setup, 3, audit=audit)
        with_ggl = time.perf_counter() - started
        started = time.perf_counter()
        plain = simulate(setup, 3)
        without = time.perf_counter() - started
        # Flower sums the clients' replies in arrival order, which changes between runs:
        # equal up to float rounding (the exact identity is tests/test_flower.py's)
        drift = max(float(np.abs(a - b).max()) for a, b in zip(audited, plain))
        assert drift < 1e-5, f"training changed by {drift}"
        print(f"<!-- {name}: final global models differ by at most {drift:.1e} -->")
        cells = {(r["cell"]["round"], r["cell"]["control"]): r for r in audit.records}
        for round_ in (1, 3):
            attack, control = cells[(round_, "none")], cells[(round_, "random-gradient")]
            if "failed" in (attack["status"], control["status"]):
                print(f"| {name} | {round_} | failed: {attack['error'] or control['error']} |")
                continue
            m, c = attack["metrics"], control["metrics"]
            print(f"| {name} | {round_} | {m['psnr']:.2f} / {m['ssim']:.3f} / "
                  f"{100 * m['judge_accuracy']:.0f}% | {c['psnr']:.2f} / "
                  f"{100 * c['judge_accuracy']:.0f}% | {with_ggl:.1f} | {without:.1f} |",
                  flush=True)
    print(f"records: {root}")


if __name__ == "__main__":
    main()
