"""ggl: audit privacy defenses in federated learning by attacking them.

The Python API mirrors the ``ggl`` command: build a ``RunConfig`` and ``run`` it.
"""
from pathlib import Path as _Path

_ROOT = _Path(__file__).resolve().parent.parent
if (_ROOT / "constants.py").is_file() and (_ROOT / "pyproject.toml").is_file():
    # a source checkout (or an editable install of one): the repository's root folders
    # generators/, optimizers/, gan_training/ and constants.py are ggl.generators, ...,
    # ggl.constants (a built wheel holds them inside ggl/, see pyproject.toml)
    __path__.append(str(_ROOT))

from ggl.config import RunConfig  # noqa: E402
from ggl.errors import GGLError  # noqa: E402


def run(config, progress=None, write=True):
    """Run one attack end to end (see ``ggl.api.run``)."""
    from ggl.api import run as _run

    return _run(config, progress, write)


__all__ = ["RunConfig", "GGLError", "run"]
