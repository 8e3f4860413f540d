"""Defaults of ggl in one place: where data, weights and results live, and normalization.

Every path can be overridden by an environment variable or a command-line option.
"""
import os
from pathlib import Path

#: Root under which torchvision datasets are looked for (``--data-root`` overrides it).
DATA_ROOT = Path(os.environ.get("GGL_DATA_ROOT", Path.home() / ".cache" / "ggl" / "data"))

#: Folder for pretrained weights the user provides (LPIPS backbones, BigGAN folders, ...).
WEIGHTS_DIR = Path(os.environ.get("GGL_WEIGHTS_DIR", Path.home() / ".cache" / "ggl" / "weights"))

#: Where ggl keeps what it computes once and reuses: judges trained on first use, ...
CACHE_DIR = Path(os.environ.get("GGL_CACHE_DIR", Path.home() / ".cache" / "ggl"))

#: Default output folder of ``ggl run`` when ``--out`` is not given.
OUTPUT_DIR = Path(os.environ.get("GGL_OUTPUT_DIR", "results"))

#: Every dataset is normalized per channel with mean = std = 0.5, so images live in [-1, 1]:
#: the range of a tanh generator, which lets GAN priors feed victims without re-scaling.
NORMALIZATION_MEAN = 0.5
NORMALIZATION_STD = 0.5

#: The offline MNIST default: the first PUBLIC_SIZE digits are public, the rest private.
OFFLINE_MNIST_PUBLIC_SIZE = 4000

#: Seed used when none is given.
DEFAULT_SEED = 0
