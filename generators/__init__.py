"""Generators for Generative Gradient Leakage, and the priors shipped with ggl.

- :mod:`generators.wgan_gp`: the DCGAN-style WGAN-GP generator of GGL, trained by
  ``ggl train-prior`` (safetensors + JSON checkpoints).
- ``SHIPPED_PRIORS``: dataset name -> folder of the prior ggl ships for it (trained with the
  command recorded in experiments/README.md).
"""
from __future__ import annotations

from pathlib import Path

from ggl.errors import GGLError

WEIGHTS = Path(__file__).resolve().parent / "weights"

#: dataset -> folder holding ``generator.safetensors`` + ``generator.json``
SHIPPED_PRIORS = {"mnist": WEIGHTS / "mnist-wgan-gp"}


def default_prior(dataset: str) -> Path:
    """The folder of the prior ggl ships for ``dataset``, or a clear error saying what to do."""
    folder = SHIPPED_PRIORS.get(dataset)
    if folder is None:
        raise GGLError(
            f"ggl ships a prior for {', '.join(sorted(SHIPPED_PRIORS))} only, not {dataset!r}: "
            f"train one with `ggl train-prior --dataset {dataset} --out DIR` and pass "
            f"--generator wgan-gp:DIR")
    if not (folder / "generator.safetensors").is_file():
        raise GGLError(f"the shipped {dataset} prior is missing from the installation: "
                       f"{folder / 'generator.safetensors'} (reinstall ggl)")
    return folder
