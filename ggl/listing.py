"""What ``ggl list`` prints, and the shipped copy of it that lets the command answer without
importing torch.

The listing is rendered from the registries (:func:`render`), which import torch and every
attack: seconds of CPU for a page of text. So ``ggl list`` prints the copy in
``listing.json`` (:func:`listing`), rendered by the same code when the registries last
changed. Two parts of the page depend on the user's machine and are filled in when it is
printed: the data root (``$GGL_DATA_ROOT`` or a folder under the home directory) and the
line of nevergrad's optimizer names, which the copy records together with the nevergrad
version they came from; another installed version has its names read live (importing
nevergrad, not torch). A copy that is missing or unreadable falls back to :func:`render`.

After adding, renaming or re-describing a registered name, regenerate the copy
(``tests/test_listing.py`` fails until you do)::

    python -m ggl.listing --write

``python -m ggl.listing`` alone prints the live rendering.
"""
from __future__ import annotations

import json
import sys
import textwrap
from importlib import metadata
from pathlib import Path

from ggl import constants

#: the shipped copy: ``lines`` (ggl's own text, with the two placeholders below),
#: ``ggl_optimizers``, ``nevergrad_version`` and ``nevergrad_names``
SHIPPED = Path(__file__).with_name("listing.json")
#: placeholder of the data root in the shipped text
DATA_ROOT = "<DATA_ROOT>"
#: placeholder line of nevergrad's optimizer names in the shipped text
NEVERGRAD = "<NEVERGRAD OPTIMIZERS>"


def render_own() -> str:
    """ggl's own part of the listing, live from the registries (imports torch), with the
    placeholders :data:`DATA_ROOT` and :data:`NEVERGRAD`."""
    from ggl.attacks import ATTACKS
    from ggl.attacks.pixel import INITS
    from ggl.controls import CONTROLS
    from ggl.data import DATASETS, LAYOUTS
    from ggl.defenses import DEFENSES
    from ggl.generators import GENERATORS, written_as
    from ggl.labels import LABEL_METHODS
    from ggl.models import MODELS
    from ggl.objective import DISTANCES, LAYER_WEIGHTS
    from ggl.optimizers import OPTIMIZERS
    from ggl.options import option_specs

    lines: list[str] = []

    def section(title: str, registry, width: int = 14, spec=lambda entry: entry.name,
                summary=lambda entry: entry.summary) -> None:
        lines.append(f"{title}:")
        for entry in registry.entries(include_more=False):
            aliases = f" (also {', '.join(entry.aliases)})" if entry.aliases else ""
            lines.append(f"  {spec(entry):{width}s} {summary(entry)}{aliases}")

    section("attacks (--attack; options: --set KEY=VALUE)", ATTACKS)
    for entry in ATTACKS.entries():
        options = ", ".join(f"{name}={spec.describe()}"
                            for name, spec in option_specs(entry.factory.Options).items())
        lines.append(textwrap.fill(options, width=88, initial_indent=f"    {entry.name}: ",
                                   subsequent_indent="      "))
    section("models (--model)", MODELS)
    lines.append(f"datasets (--dataset; their files under --data-root, GGL_DATA_ROOT or "
                 f"{DATA_ROOT}):")
    for entry in DATASETS.entries():
        lines.append(f"  {entry.name:14s} {entry.summary}")
        lines.append(textwrap.fill(LAYOUTS[entry.name], width=88,
                                   initial_indent="    files: ", subsequent_indent="      "))

    def defense_spec(entry) -> str:
        cls = entry.factory
        return f"{entry.name}:{cls.param_name}" + "".join(f",{key}=" for key in cls.options)

    section("defenses (--defense NAME[:PARAM][,KEY=VALUE])", DEFENSES, 34, defense_spec,
            lambda e: f"{e.summary} (default {e.factory.default_param:g})")
    section("controls (--control)", CONTROLS, 16)
    section("distances (--distance)", DISTANCES)
    section("layer weights (--layer-weights)", LAYER_WEIGHTS)
    section("label methods (chosen by the batch size unless --known-labels)", LABEL_METHODS)
    section("inits (--init)", INITS)
    section("generators (--generator)", GENERATORS, 22, lambda e: written_as(e.name))
    section("latent optimizers (--ng-method)", OPTIMIZERS)
    lines.append(NEVERGRAD)
    lines += [
        "search stages (--stages NAME[:EVALUATIONS],...):",
        "  sample         score prior draws in batches, keep the --starts best",
        "  <optimizer>    any latent optimizer above, from each start",
        "  gias           tune a copy of the generator's weights (Jeon et al. 2021)",
        "  gifd           search the generator's features layer by layer in l1 balls "
        "(Fang et al. 2023)",
    ]
    return "\n".join(lines)


def registered_nevergrad_names() -> list[str]:
    """The nevergrad optimizers ``--ng-method`` accepts, from ggl's registry (imports
    torch and nevergrad)."""
    from ggl.optimizers import OPTIMIZERS

    own = set(OPTIMIZERS.names(include_more=False))
    return [name for name in OPTIMIZERS.names() if name not in own]


def nevergrad_names(ggl_optimizers: list[str]) -> list[str]:
    """nevergrad's optimizer names less ggl's own optimizers of the same name, read from
    nevergrad itself (imports nevergrad, not torch): what :func:`registered_nevergrad_names`
    gives, for a nevergrad version the shipped copy was not made with."""
    import nevergrad

    own = set(ggl_optimizers)
    return sorted(name for name in nevergrad.optimizers.registry if name not in own)


def installed_nevergrad() -> str | None:
    """The installed nevergrad's version (package metadata: nevergrad is not imported)."""
    try:
        return metadata.version("nevergrad")
    except metadata.PackageNotFoundError:
        return None


def fill(own: str, names: list[str]) -> str:
    """The full listing: ``own`` (from :func:`render_own`) with this machine's data root
    and the line of nevergrad's ``names``."""
    line = textwrap.fill(", ".join(names), width=88,
                         initial_indent=f"  nevergrad ({len(names)}): ", subsequent_indent="    ")
    return own.replace(DATA_ROOT, str(constants.DATA_ROOT)).replace(NEVERGRAD, line)


def render() -> str:
    """The full listing, live from the registries (imports torch and nevergrad)."""
    return fill(render_own(), registered_nevergrad_names())


def listing() -> str:
    """What ``ggl list`` prints: the shipped copy, filled in for this machine (see the
    module docstring); the live :func:`render` when the copy cannot be read."""
    try:
        record = json.loads(SHIPPED.read_text(encoding="utf-8"))
        own, names = "\n".join(record["lines"]), list(record["nevergrad_names"])
        version, ggl_optimizers = record["nevergrad_version"], record["ggl_optimizers"]
    except (OSError, ValueError, KeyError, TypeError):
        return render()
    if version != installed_nevergrad():
        names = nevergrad_names(ggl_optimizers)
    return fill(own, names)


def write(path: Path = SHIPPED) -> None:
    """Render ggl's own text from the registries and save it, with the nevergrad names and
    version it goes with, as the shipped copy at ``path``."""
    from ggl.optimizers import OPTIMIZERS
    from ggl.results import atomic_write_bytes

    record = {"lines": render_own().splitlines(),
              "ggl_optimizers": OPTIMIZERS.names(include_more=False),
              "nevergrad_version": installed_nevergrad(),
              "nevergrad_names": registered_nevergrad_names()}
    atomic_write_bytes(path, (json.dumps(record, indent=1) + "\n").encode())


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write()
        print(f"wrote {SHIPPED}")
    elif sys.argv[1:]:
        sys.exit("usage: python -m ggl.listing [--write]")
    else:
        print(render())
