"""Generators for Generative Gradient Leakage, the priors shipped with ggl, and the
``--generator`` specs that pick one.

- :mod:`ggl.generators.prior`: ``Prior``, a generator seen from the victim.
- :mod:`ggl.generators.wgan_gp`: the DCGAN-style WGAN-GP generator of GGL, trained by
  ``ggl train-prior`` (safetensors + JSON checkpoints).
- :mod:`ggl.generators.biggan`: BigGAN-deep from pytorch-pretrained-biggan.
- ``SHIPPED_PRIORS``: dataset name -> folder of the prior ggl ships for it (trained with the
  command recorded in experiments/README.md); ``SHIPPED_CONDITIONAL_PRIORS`` the same for
  its class-conditional prior, which ``--generator default`` prefers (GGL always has labels:
  known, or inferred from the gradient).
- ``GENERATORS``: the kinds of ``--generator NAME[:LOCATION]``, and :func:`build_prior`.
"""
from __future__ import annotations

from pathlib import Path

from ggl.errors import GGLError
from ggl.registry import Registry
from ggl.specs import parse_spec

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


# ------------------------------------------------------------------ --generator specs
def _shipped(kind: str):
    def factory(location: str | None, domain: str | None):
        if domain is None:
            raise GGLError(f"--generator {kind} needs the data domain; name a generator "
                           f"instead ({_accepted()})")
        conditional = (kind == "default-conditional" or
                       (kind == "default" and ships_conditional_prior(domain)))
        from ggl.generators.prior import wgan_gp_prior

        return wgan_gp_prior(default_prior(domain, conditional))
    return factory


def _wgan_gp(location: str | None, domain: str | None):
    from ggl.generators.prior import wgan_gp_prior

    return wgan_gp_prior(location)


def _biggan(kind: str):
    def factory(location: str | None, domain: str | None):
        from ggl.generators.biggan import biggan_prior

        return biggan_prior(kind, location)
    return factory


#: ``--generator`` kind -> factory(location, domain) -> Prior; ``takes_location`` says
#: whether the kind is written ``KIND:LOCATION``
GENERATORS: Registry = Registry("generator")
GENERATORS.add("default", _shipped("default"),
               "the shipped prior of the dataset: its class-conditional one, drawing the labels "
               "the attack inferred or was given, where ggl ships one, else the unconditional one")
GENERATORS.add("default-unconditional", _shipped("default-unconditional"),
               "the shipped unconditional prior of the dataset")
GENERATORS.add("default-conditional", _shipped("default-conditional"),
               "the shipped class-conditional prior of the dataset")
GENERATORS.add("wgan-gp", _wgan_gp, "PATH: a `ggl train-prior` output folder (or its file)")
for _name in ("biggan-deep-128", "biggan-deep-256", "biggan-deep-512"):
    GENERATORS.add(_name, _biggan(_name),
                   "DIR: a pytorch-pretrained-biggan folder (config.json + weights)")
#: the kinds written KIND:LOCATION -> what the location is (the others take none)
LOCATED = {"wgan-gp": "PATH", "biggan-deep-128": "DIR", "biggan-deep-256": "DIR",
           "biggan-deep-512": "DIR"}


def written_as(kind: str) -> str:
    """How ``--generator`` names ``kind``: ``default``, ``wgan-gp:PATH``, ..."""
    return f"{kind}:{LOCATED[kind]}" if kind in LOCATED else kind


def _accepted() -> str:
    return ", ".join(written_as(name) for name in GENERATORS.names())


def check_generator(spec: str) -> str:
    """The generator kind of ``spec`` (``default``, ``wgan-gp:PATH``, ...), checked for its
    form without loading anything; raises GGLError with what is accepted."""
    parsed = parse_spec(spec, "--generator", options=False)
    entry = GENERATORS.find(parsed.name)
    if entry is None or (parsed.name in LOCATED) != bool(parsed.arg):
        raise GGLError(f"unknown --generator {spec!r}; accepted: {_accepted()}")
    return entry.name


def build_prior(spec: str, domain: str | None):
    """The :class:`ggl.generators.prior.Prior` of a user's ``--generator`` spec.

    Args:
        spec: a ``GENERATORS`` kind, with ``:LOCATION`` for the kinds in ``LOCATED``.
        domain: the dataset name, for the shipped (``default*``) priors.
    """
    kind = check_generator(spec)
    return GENERATORS[kind](parse_spec(spec, "--generator", options=False).arg, domain)
