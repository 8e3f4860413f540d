"""Run records and images: ``run.json``, ``original.png``, ``reconstruction.png``, ``progress.gif``.

Every file is written atomically (a temporary file in the same folder, then a rename), so a
run killed while writing never leaves a half-written record behind.
"""
from __future__ import annotations

import json
import math
import os
import platform
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from ggl.metrics import to_unit_range


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)      # mkstemp makes 0600; give what open() would
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files :func:`atomic_write_bytes` leaves when its process is
    killed mid-write (``.NAME.*.tmp``); call it only where no other process writes. Returns
    what was removed."""
    stale = sorted(Path(folder).glob(".*.tmp")) if Path(folder).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


def strict_json(obj) -> str:
    """``obj`` as standard JSON for scripts (``--json``): a non-finite float (a NaN loss)
    becomes null, which every JSON reader accepts, where Python's ``NaN`` is not JSON."""
    def finite(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {str(k): finite(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [finite(v) for v in value]
        return value
    return json.dumps(finite(obj), indent=1, default=str, allow_nan=False)


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that decide the numbers."""
    versions = {"python": platform.python_version()}
    for package in ("ggl", "torch", "torchvision", "numpy", "scipy", "torchmetrics",
                    "nevergrad", "botorch", "gpytorch"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def downsample(history: Sequence[float], points: int = 1000) -> dict[str, list]:
    """At most ``points`` (iteration, loss) pairs of a loss history, always with the last."""
    n = len(history)
    step = max(1, n // points)
    iterations = list(range(0, n, step))
    if n and iterations[-1] != n - 1:
        iterations.append(n - 1)
    return {"iteration": iterations, "loss": [float(history[i]) for i in iterations]}


def image_grid(images01: torch.Tensor, min_size: int = 128,
               nrow: int | None = None) -> "PIL.Image.Image":
    """A grid of ``[0, 1]`` images ``(B, C, H, W)``, ``nrow`` per row (default: one row),
    upscaled (nearest) to be seen."""
    from PIL import Image
    from torchvision.utils import make_grid

    scale = max(1, min_size // images01.shape[-1])
    images01 = F.interpolate(images01.float().cpu(), scale_factor=scale, mode="nearest")
    grid = make_grid(images01, nrow=nrow or len(images01), padding=2, pad_value=1.0)
    array = grid.mul(255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
    return Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array)


def atomic_save_image(image, path: Path, **kwargs) -> None:
    """Save a PIL image (format from the suffix) through :func:`atomic_write_bytes`."""
    import io

    buffer = io.BytesIO()
    image.save(buffer, format=path.suffix.lstrip(".").upper(), **kwargs)
    atomic_write_bytes(path, buffer.getvalue())


def save_images(out: str | Path, original: torch.Tensor | None, reconstruction: torch.Tensor,
                snapshots: Sequence[tuple[int, torch.Tensor]], mean, std) -> list[str]:
    """Write ``original.png`` (unless ``original`` is None: no ground truth),
    ``reconstruction.png`` and ``progress.gif`` into ``out``.

    ``reconstruction`` must already be in the originals' (matched) order. Returns the names.
    """
    out = Path(out)
    names = []
    if original is not None:
        atomic_save_image(image_grid(to_unit_range(original, mean, std)), out / "original.png")
        names.append("original.png")
    atomic_save_image(image_grid(to_unit_range(reconstruction, mean, std)),
                       out / "reconstruction.png")
    names.append("reconstruction.png")
    if snapshots:
        frames = [image_grid(to_unit_range(images, mean, std)).convert("P")
                  for _, images in snapshots]
        atomic_save_image(frames[0], out / "progress.gif", save_all=True,
                           append_images=frames[1:], duration=120, loop=0)
        names.append("progress.gif")
    return names
