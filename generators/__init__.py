"""Generators for Generative Gradient Leakage, and the priors shipped with ggl.

- :mod:`ggl.generators.wgan_gp`: the DCGAN-style WGAN-GP generator of GGL, trained by
  ``ggl train-prior`` (safetensors + JSON checkpoints).
- ``SHIPPED_PRIORS``: dataset name -> folder of the prior ggl ships for it (trained with the
  command recorded in experiments/README.md); ``SHIPPED_CONDITIONAL_PRIORS`` the same for
  its class-conditional prior, which ``--generator default`` prefers (GGL always has labels:
  known, or inferred from the gradient).
"""
from __future__ import annotations

from pathlib import Path

from ggl.errors import GGLError

WEIGHTS = Path(__file__).resolve().parent / "weights"

#: dataset -> folder holding ``generator.safetensors`` + ``generator.json``
SHIPPED_PRIORS = {"mnist": WEIGHTS / "mnist-wgan-gp"}
#: dataset -> folder of its shipped class-conditional prior
SHIPPED_CONDITIONAL_PRIORS = {"mnist": WEIGHTS / "mnist-wgan-gp-conditional"}


def ships_conditional_prior(dataset: str) -> bool:
    """Whether this installation holds a class-conditional prior for ``dataset``."""
    folder = SHIPPED_CONDITIONAL_PRIORS.get(dataset)
    return folder is not None and (folder / "generator.safetensors").is_file()


def default_prior(dataset: str, conditional: bool = False) -> Path:
    """The folder of the prior ggl ships for ``dataset`` (its class-conditional one with
    ``conditional``), or a clear error saying what to do."""
    if conditional:
        if not ships_conditional_prior(dataset):
            shipped = sorted(d for d in SHIPPED_CONDITIONAL_PRIORS if ships_conditional_prior(d))
            raise GGLError(
                f"ggl ships a class-conditional prior for {', '.join(shipped) or 'no dataset'} "
                f"only, not {dataset!r}: train one with `ggl train-prior --dataset {dataset} "
                f"--conditional --out DIR` and pass --generator wgan-gp:DIR")
        return SHIPPED_CONDITIONAL_PRIORS[dataset]
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
