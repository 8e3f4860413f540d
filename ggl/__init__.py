"""ggl: audit privacy defenses in federated learning by attacking them.

The Python API mirrors the ``ggl`` command: build a ``RunConfig`` and ``run`` it.
"""
from ggl.config import RunConfig
from ggl.errors import GGLError


def run(config, progress=None, write=True):
    """Run one attack end to end (see ``ggl.api.run``)."""
    from ggl.api import run as _run

    return _run(config, progress, write)


__all__ = ["RunConfig", "GGLError", "run"]
