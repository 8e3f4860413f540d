"""Typed dataclasses as the one schema of a set of options (an attack's, a run's).

A field's annotation says what its value may be:

* ``int``, ``float``, ``bool``, ``str``, and ``X | None`` (``None``: "the default of that
  part"); a ``float`` field takes an ``int`` too, no number field takes a ``bool``;
* ``Literal["a", "b"]``: one of fixed choices;
* ``Annotated[str, REGISTRY]``: the name of an entry of a :class:`ggl.registry.Registry`
  (aliases accepted, stored under the registered name);
* ``tuple[int, ...]``: one item or a list of them.

From the schema come the check of every value however it arrives (command line, ``--set``,
Python API, sweep YAML), the parsing of ``--set KEY=VALUE`` text, and the option listing of
``ggl list``: no layer restates which options exist or what they take.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from ggl.errors import GGLError
from ggl.registry import Registry

#: how ``--set`` writes booleans
TRUE_TEXT, FALSE_TEXT = ("true", "yes", "on"), ("false", "no", "off")


@dataclass(frozen=True)
class OptionSpec:
    """What one field accepts: ``base`` type, whether ``None`` is allowed, the ``choices``
    of a ``Literal`` or the ``registry`` of an ``Annotated`` name, and for a tuple the type
    of its items (``base`` is then ``tuple``)."""

    name: str
    base: type
    optional: bool
    default: Any
    choices: tuple | None = None
    registry: Registry | None = None
    item: type | None = None

    def describe(self) -> str:
        """What the field takes, for messages and ``ggl list``: ``int``, ``l2|l1|...``."""
        if self.choices:
            kind = "|".join(map(str, self.choices))
        elif self.registry is not None:
            names = self.registry.names(include_more=False)
            kind = "|".join(names) if len(names) <= 8 else f"a {self.registry.what} name"
        elif self.item is not None:
            kind = f"{self.item.__name__} list"
        else:
            kind = self.base.__name__
        return kind + (" or none" if self.optional else "")


def _spec(name: str, hint, default) -> OptionSpec:
    registry = choices = item = None
    if typing.get_origin(hint) is Annotated:
        hint, *extras = typing.get_args(hint)
        registry = next((e for e in extras if isinstance(e, Registry)), None)
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) or \
        typing.get_origin(hint) is typing.Union else (hint,)
    optional = type(None) in args
    base = next(a for a in args if a is not type(None))
    if typing.get_origin(base) is Annotated:          # Annotated[str, R] | None
        base, *extras = typing.get_args(base)
        registry = next((e for e in extras if isinstance(e, Registry)), None)
    if typing.get_origin(base) is Literal:
        choices = typing.get_args(base)
        base = type(choices[0])
    elif typing.get_origin(base) is tuple:
        item = typing.get_args(base)[0]
        base = tuple
    elif typing.get_origin(base) is not None:
        base = typing.get_origin(base)
    return OptionSpec(name, base, optional, default, choices, registry, item)


@functools.lru_cache(maxsize=None)
def option_specs(schema: type) -> dict[str, OptionSpec]:
    """``field name -> OptionSpec`` of the dataclass ``schema``, in field order."""
    hints = typing.get_type_hints(schema, include_extras=True)
    specs = {}
    for f in dataclasses.fields(schema):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING \
            else f.default
        specs[f.name] = _spec(f.name, hints[f.name], default)
    return specs


def _scalar(spec: OptionSpec, value: Any, base: type, what: str) -> Any:
    if base is bool:
        if isinstance(value, bool):
            return value
        raise GGLError(f"{what} must be true or false, got {value!r}")
    if base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise GGLError(f"{what} must be an integer, got {value!r}")
    if base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise GGLError(f"{what} must be a finite number, got {value!r}")
            return float(value)
        raise GGLError(f"{what} must be a number, got {value!r}")
    if base is str:
        if isinstance(value, str):
            return value
        raise GGLError(f"{what} must be text, got {value!r}")
    if base is dict:
        if isinstance(value, dict):
            return dict(value)
        raise GGLError(f"{what} must be a mapping (KEY: VALUE), got {value!r}")
    raise GGLError(f"{what}: unsupported value {value!r}")


def check_value(spec: OptionSpec, value: Any, what: str | None = None) -> Any:
    """``value`` checked against ``spec`` and normalised (an int for a float field becomes a
    float, a registry alias its registered name, a tuple field's single item a tuple).

    Raises:
        GGLError: naming the option (``what``, default its name) and what it accepts.
    """
    what = what or spec.name
    if value is None:
        if spec.optional:
            return None
        raise GGLError(f"{what} must be given ({spec.describe()}), got none")
    if spec.base is tuple:
        items = value if isinstance(value, (list, tuple)) else [value]
        return tuple(_scalar(spec, item, spec.item, f"{what} entry") for item in items)
    value = _scalar(spec, value, spec.base, what)
    if spec.choices is not None and value not in spec.choices:
        raise GGLError(f"unknown {what} {value!r}; valid: {', '.join(map(str, spec.choices))}")
    if spec.registry is not None:
        value = spec.registry.canonical(value)
    return value


def parse_text(spec: OptionSpec, text: str, what: str | None = None) -> Any:
    """The value ``--set NAME=TEXT`` gives the field of ``spec`` (then :func:`check_value`).

    Booleans are written true/false (yes/no, on/off), ``none`` is ``None`` for an optional
    field, numbers as Python writes them; ``nan`` and ``inf`` are refused for numbers.
    """
    what = what or spec.name
    raw = text.strip()
    lowered = raw.lower()
    if spec.optional and lowered == "none":
        return None
    base = spec.item if spec.base is tuple else spec.base
    try:
        if base is bool:
            if lowered not in TRUE_TEXT + FALSE_TEXT:
                raise ValueError
            value: Any = lowered in TRUE_TEXT
        elif base is int:
            value = int(raw)
        elif base is float:
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError
        else:
            value = raw
    except ValueError:
        kind = {bool: "true or false", int: "an integer", float: "a finite number"}.get(
            base, spec.describe())
        raise GGLError(f"--set {what}={text!r}: {what} takes {kind}"
                       f"{' or none' if spec.optional else ''}") from None
    return check_value(spec, value, what)


def build(schema: type, values: dict, owner: str) -> Any:
    """An instance of ``schema`` from its defaults and ``values`` (``None`` keeps the
    default); every value checked by :func:`check_value`.

    Raises:
        GGLError: an unknown option (listing ``owner``'s options) or a wrong value.
    """
    specs = option_specs(schema)
    unknown = sorted(set(values) - set(specs))
    if unknown:
        raise GGLError(f"{owner} has no option(s) {', '.join(unknown)}; its options: "
                       f"{', '.join(sorted(specs))}")
    checked = {name: check_value(specs[name], value) for name, value in values.items()
               if value is not None}
    return dataclasses.replace(schema(), **checked)
