"""Build hook of ggl (its metadata and packages are in pyproject.toml).

The repository keeps ``constants.py`` at its root; a built wheel installs it as
``ggl/constants.py`` (in a source checkout or an editable install, ``ggl/__init__.py`` finds
the root folders themselves).
"""
import os

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPy(build_py):
    """build_py that also installs the root ``constants.py`` as ``ggl.constants``."""

    def run(self):
        super().run()
        if self.editable_mode:          # an editable install reads the checkout itself
            return
        self.mkpath(os.path.join(self.build_lib, "ggl"))
        self.copy_file("constants.py", os.path.join(self.build_lib, "ggl", "constants.py"))


setup(cmdclass={"build_py": BuildPy})
