"""Why `dlf` gains less than `ig-multi` on the FedAvg acceptance cell: oracle ablations.

    OMP_NUM_THREADS=1 python experiments/benchmarks/dlf_label_order.py [BUDGET ...]

The acceptance cell of the FedAvg table (a client of 8 private digits 0..7, LeNet
untrained, 10 local SGD steps in batches of 4 = 5 reshuffled epochs, lr 0.01, known labels).
Two things separate dlf from the truth, and each ablation gives the attack, as an oracle,
one piece of the client's Secret that no server has:

- ``dlf, per-epoch label order known``: DLF keeps one label sequence for every epoch's copy
  (the authors' ``np.tile``), so epochs 2-5 are simulated with the wrong classes in each
  batch. Here copy e's candidates carry the classes the client's shuffling put in epoch e.
- ``ig-multi, shuffling known``: one set of candidates run in the client's true batch
  order: the simulation is then exact and neither copies nor a prior are needed, the upper
  bound of both attacks at this budget.

With ``--objectives`` it runs, instead, each attack with the other's objective and
optimizer (the distance, layer weights, lr and schedule, TV), to separate what the copies and
their prior cost from what DLF's squared-L2 objective costs.

Prints mean PSNR, SSIM and the judge's right-class rate per variant and budget. These
oracles live here only: ggl's attacks never see the Secret.
"""
from __future__ import annotations

import sys

import torch

from ggl import RunConfig
from ggl.api import prepare, run
from ggl.attacks import dlf, weight_update
from ggl.plan import resolve

COMMON = dict(protocol="fedavg", local_steps=10, local_batch_size=4, local_lr=0.01,
              batch_size=8, index=(0,), known_labels=True, control="none", device="cpu")
IG_MULTI = {"signed": False, "schedule": "cosine"}   # as in the FedAvg table
#: ig-multi's objective and optimizer (ig's defaults, unsigned Adam, cosine lr) and dlf's
IG_OBJECTIVE = {"distance": "cosine", "layer_weights": "mean", "lr": 0.1, "tv": 1e-4,
                "schedule": "cosine"}
DLF_OBJECTIVE = {"distance": "l2", "layer_weights": "pair-exponential", "lr": 0.4,
                 "tv": 1e-3, "schedule": "steps"}


class OracleLabels:
    """Wraps a copies' matching objective: replaces the tiled labels by the true ones."""

    def __init__(self, inner, labels: torch.Tensor):
        self.inner, self.labels = inner, labels

    def __call__(self, images, _tiled_labels):
        return self.inner(images, self.labels)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def oracle_copy_labels(training, secret) -> torch.Tensor:
    """``(copies x N,)`` labels: candidate ``order[t][i]`` gets the class of the image the
    client's step t really used at place i."""
    order, copies, _ = dlf.epoch_copy_order(training, len(secret.labels))
    labels = secret.labels.repeat(copies).clone()
    for server_batch, client_batch in zip(order, secret.batch_order):
        for slot, image in zip(server_batch, client_batch):
            labels[slot] = secret.labels[image]
    return labels


def run_dlf_with_label_order(plan, secret, training):
    labels = oracle_copy_labels(training, secret)
    original = dlf.EpochCopiesMatching.__init__

    def patched(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.matching = OracleLabels(self.matching, labels.to(secret.labels.device))

    dlf.EpochCopiesMatching.__init__ = patched
    try:
        return run(plan, write=False)
    finally:
        dlf.EpochCopiesMatching.__init__ = original


def run_ig_multi_with_order(plan, secret):
    original = weight_update.UpdateMatching.__init__
    true_order = [list(batch) for batch in secret.batch_order]

    def patched(self, observation, distance, weights, tv, order=None, defense=None):
        original(self, observation, distance, weights, tv, order=order or true_order,
                 defense=defense)

    weight_update.UpdateMatching.__init__ = patched
    try:
        return run(plan, write=False)
    finally:
        weight_update.UpdateMatching.__init__ = original


def swap_objectives(budgets: list[int]) -> None:
    for budget in budgets:
        for name, attack, extra in [
                ("dlf with ig-multi's objective and optimizer", "dlf", IG_OBJECTIVE),
                ("ig-multi with dlf's objective (step-decayed lr)", "ig-multi",
                 {**IG_MULTI, **DLF_OBJECTIVE})]:
            m = run(RunConfig(attack=attack, budget=budget, extra=extra, **COMMON),
                    write=False).record["metrics"]
            print(f"| {name} | {budget} | {m['psnr']:.2f} | {m['ssim']:.3f} | "
                  f"{100 * m['judge_accuracy']:.0f} |", flush=True)


def main() -> None:
    arguments = [a for a in sys.argv[1:] if a != "--objectives"]
    budgets = [int(b) for b in arguments] or [300, 1000]
    if "--objectives" in sys.argv:
        print("| variant | iterations | PSNR (dB) | SSIM | judge (%) |")
        print("|---|---|---|---|---|")
        return swap_objectives(budgets)
    print("| variant | iterations | PSNR (dB) | SSIM | judge (%) |")
    print("|---|---|---|---|---|")
    for budget in budgets:
        def plan(attack, extra):   # a fresh plan (and attack) for every run
            return resolve(RunConfig(attack=attack, budget=budget, extra=extra, **COMMON))

        scenario, _ = prepare(plan("dlf", {}))
        observation, secret = scenario.observe()
        training = observation.weight_update.training
        results = {
            "dlf": run(plan("dlf", {}), write=False),
            "dlf, per-epoch label order known (oracle)":
                run_dlf_with_label_order(plan("dlf", {}), secret, training),
            "ig-multi": run(plan("ig-multi", IG_MULTI), write=False),
            "ig-multi, shuffling known (oracle)":
                run_ig_multi_with_order(plan("ig-multi", IG_MULTI), secret),
        }
        for name, result in results.items():
            assert result.secret.batch_order == secret.batch_order   # the same client
            m = result.record["metrics"]
            print(f"| {name} | {budget} | {m['psnr']:.2f} | {m['ssim']:.3f} | "
                  f"{100 * m['judge_accuracy']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
