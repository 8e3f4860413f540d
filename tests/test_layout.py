"""The house's rules (README "For contributors"): which room may import which, that the
command line starts without torch, and that the library imports its heavy optional packages
only where they are used."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: repository folder -> the package name it is installed as
PACKAGES = {"ggl": "ggl", "generators": "ggl.generators", "optimizers": "ggl.optimizers",
            "gan_training": "ggl.gan_training"}


def _module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = list(relative.parts)
    parts[0] = PACKAGES[parts[0]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _ggl_imports(path: Path) -> set[str]:
    """Every ``ggl...`` module ``path`` imports, at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("ggl"):
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("ggl"))
    return found


MODULES = {_module_name(path): _ggl_imports(path)
           for folder in PACKAGES for path in sorted((ROOT / folder).rglob("*.py"))}

#: module prefix -> the ggl modules it must not import (prefix match)
FORBIDDEN = {
    "ggl.contracts": ("ggl.",),                           # the bottom of the house
    "ggl.errors": ("ggl.",),
    "ggl.registry": ("ggl.attacks", "ggl.defenses", "ggl.scenario", "ggl.api", "ggl.study"),
    "ggl.specs": ("ggl.attacks", "ggl.defenses", "ggl.scenario", "ggl.api", "ggl.study"),
    "ggl.attacks": ("ggl.scenario", "ggl.api", "ggl.plan", "ggl.study", "ggl.cli",
                    "ggl.metrics", "ggl.judge"),              # attacks see the Observation only
    "ggl.defenses": ("ggl.attacks", "ggl.scenario", "ggl.api", "ggl.study", "ggl.cli"),
    "ggl.objective": ("ggl.attacks", "ggl.defenses", "ggl.scenario", "ggl.api", "ggl.study"),
    "ggl.generators": ("ggl.attacks", "ggl.scenario", "ggl.api", "ggl.study", "ggl.cli"),
    "ggl.optimizers": ("ggl.attacks", "ggl.scenario", "ggl.api", "ggl.study", "ggl.cli"),
    "ggl.scenario": ("ggl.attacks", "ggl.api", "ggl.study", "ggl.cli"),
    "ggl.plan": ("ggl.api", "ggl.study", "ggl.cli"),
    "ggl.api": ("ggl.study", "ggl.cli"),
    "ggl.study": ("ggl.cli",),
    "ggl.flower": ("ggl.cli",),
    "ggl.flower_sim": ("ggl.cli",),
}


@pytest.mark.parametrize("prefix", sorted(FORBIDDEN))
def test_rooms_import_only_downwards(prefix):
    offenders = {module: sorted(i for i in imports if i.startswith(FORBIDDEN[prefix]))
                 for module, imports in MODULES.items()
                 if module == prefix or module.startswith(prefix + ".")}
    offenders = {module: found for module, found in offenders.items() if found}
    assert not offenders, offenders


def test_prior_and_biggan_do_not_import_each_other():
    assert "ggl.generators.biggan" not in " ".join(MODULES["ggl.generators.prior"])


def test_the_command_line_starts_without_torch():
    code = ("import sys; from ggl.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'ggl --help imported torch'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


#: packages only some attacks, defenses, priors, optimizers, metrics or executors need:
#: each is imported where it is used, so importing the library costs torch and no more
OPTIONAL_HEAVY = ("botorch", "gpytorch", "opacus", "pytorch_pretrained_biggan", "ray", "flwr",
                  "nevergrad", "cma", "scipy", "sklearn", "torchvision", "matplotlib",
                  "lpips", "torchmetrics")


def test_the_library_imports_its_heavy_optional_packages_only_when_used():
    code = ("import sys\n"
            "import ggl.api, ggl.attacks, ggl.defenses, ggl.optimizers, ggl.generators, "
            "ggl.data, ggl.models, ggl.metrics, ggl.study\n"
            "imported = [name for name in sys.argv[1:] if name in sys.modules]\n"
            "assert not imported, f'importing the library imported {imported}'")
    result = subprocess.run([sys.executable, "-c", code, *OPTIONAL_HEAVY],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
