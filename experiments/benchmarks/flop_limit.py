"""GGL's latent search against the machine's limits (issue 24, item 1).

Measured side by side in one process, single-threaded unless ``--threads``:

- **the FLOP limit**: the machine's dense fp32 matmul rate (GFLOP/s, best of a few
  1024 x 1024 products) divided by the FLOPs of one evaluation, counted by torch's FLOP
  counter (``torch.utils.flop_counter``: generator forward + the victim's forward and
  backward, on one candidate; the distance's elementwise work is not counted, as the
  counter counts matrix products and convolutions only);
- **the bare-PyTorch floor**: a minimal loop with the same generator, victim and squared-L2
  distance (one generator call, ``vmap(grad(...))`` over the population in chunks, the
  distance written out, the KL term), at its best chunk of those tried;
- **ggl's objective**: the ``GradientMatching`` + prior + KL that ``ggl run`` hands its
  optimizer, with its own automatic chunk;
- **ggl's whole search**: ``ggl run --ng_method CMA`` (GGL as published, pycma, population
  50) on one digit, the attack's own CPU time (``attack_cpu_time_s``); its system time and
  page faults are those of the whole run (data, victim, scoring included).

Each row prints evaluations per CPU second, its share of the FLOP limit and of the floor,
and the CPU time spent in the kernel (system seconds) and minor page faults per evaluation:
a buffer too large for the allocator's heap is mapped afresh and faulted page by page on
every call.

    OMP_NUM_THREADS=1 python experiments/benchmarks/flop_limit.py
    OMP_NUM_THREADS=1 python experiments/benchmarks/flop_limit.py --models resnet18 --chunks 1 2 4 12
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap
from torch.utils.flop_counter import FlopCounterMode

from ggl import RunConfig
from ggl.allocator import keep_freed_memory
from ggl.api import run
from ggl.attacks.latent import latent_kl
from ggl.generators import default_prior
from ggl.generators.prior import wgan_gp_prior
from ggl.models import build_victim
from ggl.objective import GradientMatching

RESULTS = Path(__file__).resolve().parents[1] / "results" / "flop_limit.jsonl"
KL = 0.1               # GGL's default weight of the latent KL term
POPULATION = 50        # nevergrad's and pycma's population in ggl
#: evaluations of the whole search per model (ResNet-18 runs ~10 per CPU second)
SEARCH_BUDGET = {"lenet": 5_000, "resnet18": 300}


def matmul_gflops(size: int = 1024, repeats: int = 10, trials: int = 5) -> float:
    """The dense fp32 matmul rate, best of ``trials``: ``2 n^3`` FLOPs per product."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = 0.0
    for _ in range(trials):
        started = time.process_time()
        for _ in range(repeats):
            a @ b
        best = max(best, 2 * size ** 3 * repeats / (time.process_time() - started) / 1e9)
    return best


class Usage:
    """CPU seconds (user + system), system seconds and minor page faults of a block."""

    def __enter__(self):
        self._before = resource.getrusage(resource.RUSAGE_SELF)
        return self

    def __exit__(self, *exc):
        after = resource.getrusage(resource.RUSAGE_SELF)
        self.user = after.ru_utime - self._before.ru_utime
        self.system = after.ru_stime - self._before.ru_stime
        self.cpu = self.user + self.system
        self.faults = after.ru_minflt - self._before.ru_minflt


def setup(model: str):
    """The shipped MNIST prior (unconditional), the victim, labels and a shared gradient
    (of a prior sample: the speed does not depend on which image it is)."""
    prior = wgan_gp_prior(default_prior("mnist")).bind((1, 32, 32), (0.5,), (0.5,))
    victim = build_victim(model, 1, 32, 10, seed=0)
    labels = torch.tensor([3])
    with torch.no_grad():
        secret = prior(prior.sample_latent(1, torch.Generator().manual_seed(1)))
    target = torch.autograd.grad(F.cross_entropy(victim(secret), labels),
                                 list(victim.parameters()))
    return prior, victim, labels, [g.detach() for g in target]


def ggl_objective(prior, victim, labels, target, chunk_size=None):
    """``latents (P, d) -> (P,)``: ggl's objective as ``ggl run`` builds it."""
    matching = GradientMatching(victim, target, chunk_size=chunk_size)

    def evaluate(latents):
        with torch.no_grad():
            images = prior(latents).view(len(latents), 1, 1, 32, 32)
            return matching(images, labels) + KL * latent_kl(latents)
    evaluate.matching = matching
    return evaluate


def bare_floor(prior, victim, labels, target, chunk_size: int):
    """``latents (P, d) -> (P,)``: the same computation in a minimal PyTorch loop."""
    names = [name for name, _ in victim.named_parameters()]
    params = {name: p.detach() for name, p in victim.named_parameters()}
    buffers = dict(victim.named_buffers())
    weight = 1 / len(names)

    def loss(params, image, label):
        return F.cross_entropy(functional_call(victim, (params, buffers), (image,)), label)

    per_candidate = vmap(grad(loss), in_dims=(None, 0, None))

    def evaluate(latents):
        with torch.no_grad():
            images = prior(latents).view(len(latents), 1, 1, 32, 32)
            losses = []
            for start in range(0, len(latents), chunk_size):
                grads = per_candidate(params, images[start:start + chunk_size], labels)
                losses.append(sum((grads[n] - t).pow(2).flatten(1).sum(1)
                                  for n, t in zip(names, target)) * weight)
            return torch.cat(losses) + KL * latent_kl(latents)
    return evaluate


def counted_flops(function, *args) -> int:
    with FlopCounterMode(display=False) as counter:
        function(*args)
    return counter.get_total_flops()


def flops_per_evaluation(prior, victim, labels, target, latent) -> tuple[int, int]:
    """``(FLOPs of one evaluation, of its generator pass)``, counted on one candidate
    through the module generator and the loop path: under vmap the counter reads the
    batched convolutions' weight gradients as dense ones and counts P times too many."""
    generator = counted_flops(lambda z: prior.net.upsample(prior.net.first_features(z)),
                              latent)
    with torch.no_grad():
        image = prior(latent).view(1, 1, 1, 32, 32)
    victim_pass = counted_flops(GradientMatching(victim, target, path="loop"), image, labels)
    return generator + victim_pass, generator


def measure(evaluate, latents, seconds: float) -> dict:
    """Evaluations per CPU second over at least ``seconds`` of repeated calls."""
    evaluate(latents)                                          # warm-up
    calls = 0
    with Usage() as usage:
        started = time.process_time()
        while calls == 0 or time.process_time() - started < seconds:
            evaluate(latents)
            calls += 1
    evaluations = calls * len(latents)
    return {"evals_per_cpu_s": evaluations / usage.cpu,
            "system_share": usage.system / usage.cpu,
            "faults_per_eval": usage.faults / evaluations}


def whole_search(model: str, budget: int) -> dict:
    """``ggl run --ng_method CMA`` (unconditional prior) on digit 0: the attack's CPU time,
    after a search of two populations has paid the process's one-time costs (importing
    pycma, torch's first vmap), which the startup benchmark reports."""
    def search(evaluations: int) -> dict:
        return run(RunConfig(attack="ggl", model=model, index=(0,), budget=evaluations,
                             seed=0, device="cpu",
                             extra={"ng_method": "CMA", "generator": "default-unconditional"}),
                   write=False).record

    search(2 * POPULATION)
    with Usage() as usage:
        record = search(budget)
    return {"evals_per_cpu_s": record["evaluations"] / record["attack_cpu_time_s"],
            "system_share": usage.system / usage.cpu, "faults_per_eval":
            usage.faults / record["evaluations"], "psnr": record["metrics"]["psnr"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["lenet", "resnet18"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="CPU seconds each objective row runs for (at least one call)")
    parser.add_argument("--chunks", type=int, nargs="+", default=None,
                        help="the floor's chunks to try (default: 1, 2, 5, 10, 25, 50)")
    parser.add_argument("--no-search", action="store_true", help="skip the whole search")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's malloc as it is (GGL_MALLOC=default), to measure "
                             "what ggl.allocator saves")
    args = parser.parse_args()
    if args.default_malloc:
        os.environ["GGL_MALLOC"] = "default"
    print(f"malloc tuned (ggl.allocator): {keep_freed_memory()}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    gflops = matmul_gflops()
    print(f"matmul rate: {gflops:.1f} GFLOP/s ({args.threads} thread(s), "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__})",
          flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    for model in args.models:
        prior, victim, labels, target = setup(model)
        latents = prior.sample_latent(POPULATION, torch.Generator().manual_seed(0))
        objective = ggl_objective(prior, victim, labels, target)
        flops, generator_flops = flops_per_evaluation(prior, victim, labels, target,
                                                      latents[:1])
        limit = gflops * 1e9 / flops
        print(f"{model}: {flops / 1e6:.2f} MFLOP per evaluation (generator "
              f"{generator_flops / 1e6:.2f}), limit {limit:,.0f} evals/s", flush=True)
        rows = {}
        for chunk in args.chunks or (1, 2, 5, 10, 25, 50):
            rows[f"floor, chunk {chunk}"] = measure(
                bare_floor(prior, victim, labels, target, chunk), latents, args.seconds)
        floor = max(row["evals_per_cpu_s"] for row in rows.values())
        auto = objective.matching._auto_chunk(POPULATION)
        rows[f"ggl objective (chunk {auto})"] = measure(objective, latents, args.seconds)
        rows["generator alone"] = measure(lambda z: prior(z).sum(), latents, args.seconds)
        if not args.no_search:
            rows[f"ggl run --ng_method CMA, {SEARCH_BUDGET[model]} evals"] = whole_search(
                model, SEARCH_BUDGET[model])
        print("| configuration | evals per CPU s | share of FLOP limit | share of floor | "
              "system time | page faults per eval |")
        print("|---|---|---|---|---|---|")
        for name, row in rows.items():
            generator_only = name == "generator alone"
            share_limit = row["evals_per_cpu_s"] * (generator_flops if generator_only
                                                    else flops) / (gflops * 1e9)
            share_floor = "" if generator_only else f"{row['evals_per_cpu_s'] / floor:.0%}"
            print(f"| {name} | {row['evals_per_cpu_s']:,.1f} | {share_limit:.0%} | "
                  f"{share_floor} | {row['system_share']:.0%} | {row['faults_per_eval']:.0f} |",
                  flush=True)
            with RESULTS.open("a") as handle:
                handle.write(json.dumps({"model": model, "configuration": name,
                                         "matmul_gflops": gflops, "flops_per_eval": flops,
                                         "generator_flops": generator_flops,
                                         "threads": args.threads, **row}) + "\n")


if __name__ == "__main__":
    main()
