"""Checks of a user's values that several commands share: numbers in range, seeds, and
output folders that can be written, each failing with one ``GGLError`` line that names the
option and what it accepts. Commands run them where their inputs are resolved, before any
work (``ggl.plan.resolve`` for runs, ``TrainPriorConfig.validate`` for ``train-prior``, the
sweep, compare and report entry points for their folders).
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

from ggl.errors import GGLError

#: the largest seed: torch seeds take 64 bits and ggl adds stream offsets to the seed
MAX_SEED = 2 ** 62
#: the largest budget any attack accepts (10^9 evaluations would take years on a CPU)
MAX_BUDGET = 10 ** 9


def at_least(flag: str, value, least, what: str = "") -> None:
    """``value >= least`` (and finite), else ``--flag must be >= least``."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= least):
        raise GGLError(f"{flag} must be {what or f'>= {least}'}, got {value!r}")


def positive(flag: str, value) -> None:
    """A finite number > 0."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise GGLError(f"{flag} must be > 0 (a finite number), got {value!r}")


def finite(flag: str, value) -> None:
    """Any finite number (``None`` passes: the option's default)."""
    if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
        raise GGLError(f"{flag} must be a finite number, got {value!r}")


def seed(flag: str, value: int) -> None:
    """A seed in ``0 .. MAX_SEED``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise GGLError(f"{flag} must be an integer in 0..{MAX_SEED} (2^62), got {value!r}")


def writable_folder(path: str | Path, flag: str) -> Path:
    """``path`` as a folder that can be written: tried by creating it (with its parents)
    and a temporary file in it, so a place that cannot take files fails here, before any
    work, and not after it; what the try created is removed again.

    Raises:
        GGLError: ``path`` (or an ancestor) is a file, or the place cannot be written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise GGLError(f"{flag} {path} is a file, not a folder: give a folder to write into")
    ancestor = next((p for p in path.parents if p.exists()), None)
    if ancestor is not None and not ancestor.is_dir():
        raise GGLError(f"{flag} {path} cannot be created: {ancestor} is a file")
    created = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise GGLError(f"{flag} {path} cannot be written ({err.strerror or err}): give a "
                       f"folder you can write to") from None
    finally:                      # leave no trace: the command creates it when it writes
        for folder in created:
            try:
                folder.rmdir()
            except OSError:
                break
    return path
