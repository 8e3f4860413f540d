"""The shipped MNIST prior's generator pass, 50 latents at a time (issue 24, item 5): its
modules layer by layer, the folded matrix products ggl runs (``ggl.generators.folded``), and
each of the two under ``torch.compile`` (first call's cost, then the steady rate).

Rates are images per CPU second of this process, single-threaded. The first call of a
compiled function is also given in wall seconds: inductor compiles its C++ in worker
processes, whose CPU time this process does not see. Use a fresh inductor cache to time a
first compile as a user would meet it.

    OMP_NUM_THREADS=1 TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) python experiments/benchmarks/generator_pass.py
"""
from __future__ import annotations

import time

import torch

from ggl.allocator import keep_freed_memory
from ggl.generators import default_prior
from ggl.generators.prior import wgan_gp_prior

POPULATION = 50


def rate(function, latents: torch.Tensor, seconds: float = 4.0) -> float:
    """Images per CPU second over at least ``seconds`` of repeated calls, after one."""
    function(latents)
    calls, started = 0, time.process_time()
    while calls == 0 or time.process_time() - started < seconds:
        function(latents)
        calls += 1
    return len(latents) * calls / (time.process_time() - started)


def main() -> None:
    torch.set_num_threads(1)
    keep_freed_memory()
    net = wgan_gp_prior(default_prior("mnist")).net
    latents = torch.randn(POPULATION, net.config.latent_dim,
                          generator=torch.Generator().manual_seed(0))

    def modules(z):
        return net.upsample(net.first_features(z))

    with torch.no_grad():
        print("| pass | images per CPU s | first call |")
        print("|---|---|---|")
        for name, function in (("modules (ConvTranspose2d + BatchNorm)", modules),
                               ("folded matrix products (ggl)", net.folded())):
            print(f"| {name} | {rate(function, latents):,.0f} | |", flush=True)
            compiled = torch.compile(function, dynamic=False)
            cpu, wall = time.process_time(), time.perf_counter()
            compiled(latents)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            print(f"| {name}, torch.compile | {rate(compiled, latents):,.0f} | "
                  f"{wall:.1f} s wall ({cpu:.1f} CPU s in this process) |", flush=True)


if __name__ == "__main__":
    main()
