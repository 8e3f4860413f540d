"""One value of a sweep config, checked: a RunConfig field's value or a defense entry.

:func:`field_value` checks a value against the RunConfig field's annotation with the one
type checker of ggl (:mod:`ggl.options`: bool, int, float, str, a tuple of them, a mapping;
None where the field is optional), and a name
against its registry where the field names one (``attack``, ``model``, ``dataset``,
``control``; ``device`` is resolved). :func:`defense_entry` turns one defense entry
(``none``, a ``--defense`` spec, a list of specs, ``{name, params, options}``) into the
chains it stands for, each checked by ``ggl.defenses.parse_defenses`` (the CLI's parser).
A mistake is a :class:`~ggl.study.yaml_lines.Problem` (the caller adds where it is).
"""
from __future__ import annotations

from typing import Any

from ggl.config import RunConfig, resolve_device
from ggl.errors import GGLError
from ggl.options import check_value, option_specs
from ggl.registry import registry_at
from ggl.study.yaml_lines import Problem, line_of, plain

#: keys of a ``{name, params, options}`` defense entry
DEFENSE_ENTRY_KEYS = ("name", "params", "options")


#: RunConfig fields whose value names a registry entry -> where that registry lives
#: (imported on first need: the registries pull in torch)
_REGISTRIES = {"attack": "ggl.attacks:ATTACKS", "model": "ggl.models:MODELS",
               "dataset": "ggl.data:DATASETS", "control": "ggl.controls:CONTROLS"}


def field_value(name: str, value: Any) -> Any:
    """One value of the RunConfig field ``name``, checked by its annotation
    (:func:`ggl.options.check_value`) and normalised (a tuple field takes one item or a
    list); a name against its registry; ``defense`` takes every form of a defense entry
    but the ``{name, params}`` one, which can mean several."""
    if name == "defense":
        specs = defense_entry(value, allow_params=False)
        return specs[0]
    try:
        value = check_value(option_specs(RunConfig)[name], plain(value), name)
        if name == "index" and any(i < 0 for i in value):
            raise GGLError(f"index must be >= 0, got {min(value)}")
        if name in _REGISTRIES:                # names checked where they are written
            registry_at(_REGISTRIES[name]).choose(value)
        elif name == "device":
            resolve_device(value)
    except GGLError as err:
        raise Problem(None, str(err)) from None
    return value


def _format_param(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Problem(None, f"a defense parameter must be a number, got {value!r}")
    return repr(value) if isinstance(value, float) else str(value)


def defense_entry(entry: Any, allow_params: bool = True) -> list[tuple[str, ...]]:
    """One defense entry -> the chains (tuples of ``--defense`` specs) it stands for,
    each checked by ``ggl.defenses.parse_defenses`` (the CLI's parser)."""
    from ggl.defenses import parse_defenses

    if entry is None or (isinstance(entry, str) and entry.strip().lower() == "none"):
        chains: list[tuple[str, ...]] = [()]
    elif isinstance(entry, str):
        chains = [(entry.strip(),)]
    elif isinstance(entry, list):
        if not all(isinstance(spec, str) for spec in entry):
            raise Problem(None, f"a defense chain is a list of specs like 'clipping:4', "
                                f"got {plain(entry)!r}")
        chains = [tuple(spec.strip() for spec in entry)]
    elif isinstance(entry, dict):
        unknown = [key for key in entry if key not in DEFENSE_ENTRY_KEYS]
        if unknown or "name" not in entry:
            what = f"unknown key {unknown[0]!r}" if unknown else "missing key 'name'"
            raise Problem(line_of(entry, unknown[0]) if unknown else line_of(entry),
                          f"defense entry: {what}; valid keys: {', '.join(DEFENSE_ENTRY_KEYS)}"
                          f" (e.g. {{name: compression, params: [20, 90]}})")
        name = entry["name"]
        if not isinstance(name, str):
            raise Problem(line_of(entry, "name"), f"defense name must be a string, got {name!r}")
        params = entry.get("params")
        params = [None] if params is None else params if isinstance(params, list) else [params]
        if not params:
            raise Problem(line_of(entry, "params"), "defense params is an empty list")
        if len(params) > 1 and not allow_params:
            raise Problem(line_of(entry), "settings.defense is one defense (or chain); put "
                                          "several parameters in grid.defense")
        options = entry.get("options") or {}
        if not isinstance(options, dict):
            raise Problem(line_of(entry, "options"), f"defense options must be a mapping, "
                                                     f"e.g. {{noise: 0.1}}, got {options!r}")
        suffix = "".join(f",{key}={value}" for key, value in options.items())
        chains = [((name if p is None else f"{name}:{_format_param(p)}") + suffix,)
                  for p in params]
    else:
        raise Problem(None, f"a defense entry is none, a spec like 'noise:0.01', a list (a "
                            f"chain) or {{name: ..., params: [...]}}; got {entry!r}")
    for chain in chains:
        try:
            parse_defenses(chain)
        except GGLError as err:
            raise Problem(None, str(err)) from None
    return chains
