"""One value of a sweep config, checked: a RunConfig field's value or a defense entry.

:func:`field_value` checks a value against the RunConfig field's annotation (bool, int,
float, str, a tuple of them, a mapping; None where the field is optional), and a name
against its registry where the field names one (``attack``, ``model``, ``dataset``,
``control``; ``device`` is resolved). :func:`defense_entry` turns one defense entry
(``none``, a ``--defense`` spec, a list of specs, ``{name, params, options}``) into the
chains it stands for, each checked by ``ggl.defenses.parse_defenses`` (the CLI's parser).
A mistake is a :class:`~ggl.study.yaml_lines.Problem` (the caller adds where it is).
"""
from __future__ import annotations

import types
import typing
from typing import Any

from ggl.config import RunConfig, resolve_device
from ggl.errors import GGLError, choose
from ggl.study.yaml_lines import Problem, line_of, plain

#: keys of a ``{name, params, options}`` defense entry
DEFENSE_ENTRY_KEYS = ("name", "params", "options")

_HINTS = typing.get_type_hints(RunConfig)


def _kind(hint) -> tuple[type, bool, type | None]:
    """``(base type, None allowed, element type of a tuple)`` of a RunConfig annotation."""
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    optional = type(None) in args
    base = next(a for a in args if a is not type(None))
    origin = typing.get_origin(base) or base
    element = typing.get_args(base)[0] if origin is tuple else None
    return origin, optional, element


def _check_scalar(name: str, value: Any, base: type) -> Any:
    if base is bool:
        if isinstance(value, bool):
            return value
        raise Problem(None, f"{name} must be true or false, got {value!r}")
    if base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise Problem(None, f"{name} must be an integer, got {value!r}")
    if base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise Problem(None, f"{name} must be a number, got {value!r}")
    if base is str:
        if isinstance(value, str):
            return value
        raise Problem(None, f"{name} must be a string, got {value!r}")
    raise Problem(None, f"{name}: unsupported value {value!r}")


def field_value(name: str, value: Any) -> Any:
    """One value of the RunConfig field ``name``, type-checked and normalised (a tuple
    field takes one item or a list; ``defense`` takes every form of a defense entry but
    the ``{name, params}`` one, which can mean several)."""
    if name == "defense":
        specs = defense_entry(value, allow_params=False)
        return specs[0]
    base, optional, element = _kind(_HINTS[name])
    if value is None:
        if optional:
            return None
        raise Problem(None, f"{name} must not be null")
    if base is tuple:
        items = value if isinstance(value, list) else [value]
        checked = tuple(_check_scalar(f"{name} entry", item, element) for item in items)
        if name == "index":
            for i in checked:
                if i < 0:
                    raise Problem(None, f"index must be >= 0, got {i}")
        return checked
    if base is dict:
        if not isinstance(value, dict):
            raise Problem(None, f"{name} must be a mapping (KEY: VALUE), got {value!r}")
        return plain(value)
    value = _check_scalar(name, value, base)
    try:                            # names checked where they are written
        if name in _REGISTRIES:
            choose(_REGISTRIES[name](), value, name)
        elif name == "device":
            resolve_device(value)
    except GGLError as err:
        raise Problem(None, str(err)) from None
    return value


def _attacks() -> dict:
    from ggl.attacks import ATTACKS

    return ATTACKS


def _models() -> dict:
    from ggl.models import MODELS

    return MODELS


def _datasets() -> dict:
    from ggl.data import DATASETS

    return DATASETS


def _controls() -> dict:
    from ggl.controls import CONTROLS

    return CONTROLS


#: fields whose value is a registry name, checked where they are written
_REGISTRIES = {"attack": _attacks, "model": _models, "dataset": _datasets,
               "control": _controls}


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
