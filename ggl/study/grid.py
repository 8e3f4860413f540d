"""The grid of a sweep: its cells, their canonical configs and their ids.

A cell is one run: the grid values that make it (one value per axis) and the validated
:class:`~ggl.config.RunConfig` they give with the sweep's settings and attack options.
:func:`expand` walks every combination of the axes in the order written, leaves out the
excluded ones and merges combinations that are the same run (e.g. ``adaptive`` without a
defense).

A cell's id is the first 16 hex digits of the SHA-256 of its canonical config: the JSON
(sorted keys) of the RunConfig fields that differ from their defaults, ``out`` excluded.
The same run therefore has the same id in every sweep and stays stable when RunConfig
gains a field with a default.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

from ggl.config import COMMON_ATTACK_OPTIONS, RunConfig
from ggl.errors import GGLError

#: RunConfig fields a sweep config may not set (the sweep places each run)
RESERVED_FIELDS = ("out",)

_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}


@dataclass(frozen=True)
class Cell:
    """One run of a sweep: its id, its grid values and its validated RunConfig
    (``out`` unset; the executor places it in ``DIR/runs/<cell_id>``)."""

    cell_id: str
    values: dict
    config: RunConfig

    def label(self) -> str:
        parts = []
        for key, value in self.values.items():
            if key == "defense":
                value = "+".join(value) or "none"
            elif isinstance(value, (list, tuple)):
                value = ",".join(map(str, value))
            parts.append(value if key == "attack" else f"{key}={value}")
        return " ".join(map(str, parts))


@dataclass
class Sweep:
    """A parsed, validated sweep config: its cells in execution order (no duplicates)."""

    name: str
    path: Path | None        # None for a config given as a mapping
    text: str                # the YAML (of a mapping: its yaml.safe_dump)
    axes: dict
    cells: list[Cell]
    merged: int = 0          # cells of the grid that were the same run as an earlier one
    excluded: int = 0        # cells of the grid left out by ``exclude``


def canonical_config(config: RunConfig) -> dict:
    """The RunConfig fields that differ from their defaults (``out`` excluded)."""
    canonical = {}
    for name, spec in _FIELDS.items():
        if name in RESERVED_FIELDS:
            continue
        default = spec.default_factory() if spec.default_factory is not dataclasses.MISSING \
            else spec.default
        value = getattr(config, name)
        if value != default:
            canonical[name] = list(value) if isinstance(value, tuple) else value
    return canonical


def cell_id(config: RunConfig) -> str:
    """16 hex digits of the SHA-256 of the canonical config's JSON (sorted keys)."""
    text = json.dumps(canonical_config(config), sort_keys=True, separators=(",", ":"),
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _excluded(values: dict, rules: list[dict[str, list]]) -> bool:
    return any(all(values[key] in allowed for key, allowed in rule.items()) for rule in rules)


def _cell_config(settings: dict, values: dict, attack_options: dict) -> RunConfig:
    kwargs = {**settings, **values}
    kwargs["extra"] = dict(kwargs.get("extra") or {})   # a copy: attack options go in below
    for key, value in attack_options.get(kwargs.get("attack", RunConfig.attack), {}).items():
        if key in COMMON_ATTACK_OPTIONS:
            kwargs[key] = value
        else:
            kwargs["extra"][key] = value
    index = kwargs.get("index", ())
    if len(index) > 1 and "batch_size" not in settings and "batch_size" not in values:
        kwargs["batch_size"] = len(index)          # [[0, 1]] is a batch of two
    if not kwargs.get("defense"):                   # nothing to model without a defense
        kwargs["adaptive"] = RunConfig.adaptive
        kwargs["defense_known"] = RunConfig.defense_known
    return RunConfig(**kwargs)


def expand(settings: dict, axes: dict[str, list], attack_options: dict,
           excludes: list[dict[str, list]], where: str) -> tuple[list[Cell], int, int]:
    """The cells of a validated grid, each config built and validated.

    Args:
        settings: RunConfig field -> value, shared by every cell.
        axes: axis -> its values, combined in this order.
        attack_options: attack -> {option: value} for that attack's cells.
        excludes: partial cells (axis -> values) to leave out.
        where: the prefix of an error (``FILE:LINE: `` of the grid, or the source's name).

    Returns:
        ``(cells, merged, excluded)``: the cells in execution order, the combinations that
        were the same run as an earlier cell, the combinations left out.

    Raises:
        GGLError: a cell's config does not validate (``where cell [LABEL]: ...``).
    """
    from ggl.plan import resolve

    cells, seen, excluded = [], set(), 0
    for combo in itertools.product(*axes.values()):
        values = dict(zip(axes, combo))
        if _excluded(values, excludes):
            excluded += 1
            continue
        try:
            config = _cell_config(settings, values, attack_options)
            resolve(config)          # every cell is checked before any runs
        except GGLError as err:
            label = Cell("", values, RunConfig()).label()
            raise GGLError(f"{where}cell [{label}]: {err}") from None
        identifier = cell_id(config)
        if identifier in seen:
            continue
        seen.add(identifier)
        shown = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
        if "defense" in shown and not shown["defense"] and "adaptive" in shown:
            shown["adaptive"] = config.adaptive
        cells.append(Cell(identifier, shown, config))
    merged = math.prod(len(v) for v in axes.values()) - len(cells) - excluded
    return cells, merged, excluded
