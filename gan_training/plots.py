"""Pictures written at each training checkpoint: the sample grid and the loss curves."""
from __future__ import annotations

import io
import math
from pathlib import Path

import torch

from ggl.metrics import to_unit_range
from ggl.results import atomic_save_image, atomic_write_bytes, image_grid


def save_sample_grid(images: torch.Tensor, path: Path, mean, std) -> None:
    """Normalized ``images (N, C, R, R)`` as one square-ish PNG grid, written atomically."""
    rows = max(1, int(math.sqrt(len(images))))
    grid = image_grid(to_unit_range(images, mean, std), min_size=32, nrow=rows)
    atomic_save_image(grid, Path(path))


def save_loss_plot(history, path: Path) -> None:
    """Critic Wasserstein estimate, gradient penalty and generator loss per generator step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    steps = range(1, len(history.wasserstein) + 1)
    axes[0].plot(steps, history.wasserstein, label="critic W estimate  D(real) - D(fake)")
    axes[0].plot(steps, history.gradient_penalty, label="gradient penalty")
    axes[1].plot(steps, history.generator_loss, label="generator loss  -D(G(z))", color="C2")
    for axis in axes:
        axis.set_xlabel("generator step")
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())
