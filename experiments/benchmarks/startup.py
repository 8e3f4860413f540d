"""Startup costs: CPU seconds of fresh processes, the offline MNIST with and without its
parse cache, ``ggl --help`` and ``ggl list`` (issue 24, item 4); ``ggl list`` prints a shipped
copy of the listing, timed beside the live rendering from the registries it replaces.

Each measurement is a new Python process (``resource.getrusage`` of the children: user +
system CPU seconds), repeated ``--repeats`` times; the median is printed. The cold runs use
an empty cache folder each time (``GGL_CACHE_DIR``), the warm ones a folder built first.

    OMP_NUM_THREADS=1 python experiments/benchmarks/startup.py
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile

IMPORT_TORCH = [sys.executable, "-c", "import torch"]
LOAD_MNIST = [sys.executable, "-c", "import torch; from ggl.data import load_dataset; "
                                    "load_dataset('mnist')"]


def cpu_seconds(command: list[str], env: dict | None = None) -> float:
    """User + system CPU seconds of one run of ``command`` in a new process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def median_of(repeats: int, make) -> float:
    return statistics.median(make() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    ggl = [sys.executable, "-m", "ggl"]

    def cold() -> float:
        with tempfile.TemporaryDirectory() as empty:
            return cpu_seconds(LOAD_MNIST, {"GGL_CACHE_DIR": empty})

    with tempfile.TemporaryDirectory() as warm_dir:
        cpu_seconds(LOAD_MNIST, {"GGL_CACHE_DIR": warm_dir})          # builds the cache
        rows = {
            "import torch alone": median_of(args.repeats, lambda: cpu_seconds(IMPORT_TORCH)),
            "import torch + offline MNIST, no cache (parse)": median_of(args.repeats, cold),
            "import torch + offline MNIST, cache built": median_of(
                args.repeats, lambda: cpu_seconds(LOAD_MNIST, {"GGL_CACHE_DIR": warm_dir})),
            "ggl --help": median_of(args.repeats, lambda: cpu_seconds(ggl + ["--help"])),
            "ggl list": median_of(args.repeats, lambda: cpu_seconds(ggl + ["list"])),
            "ggl list rendered live (python -m ggl.listing)": median_of(
                args.repeats, lambda: cpu_seconds([sys.executable, "-m", "ggl.listing"])),
        }
    print("| process | CPU seconds (median) |")
    print("|---|---|")
    for label, seconds in rows.items():
        print(f"| {label} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
