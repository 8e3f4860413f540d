"""Experiment grids (``ggl sweep``): a YAML grid of runs, a resumable result store, executors.

A sweep config is a YAML file with four top-level keys::

    name: tiny                    # optional; default: the file's stem
    settings:                     # any RunConfig field, shared by every cell
      model: lenet
      device: cpu
    grid:                         # axes: every combination of their values is one cell
      attack: [idlg, ig]
      defense:                    # none | a --defense spec | a chain | a name with params
        - none
        - noise:0.01
        - [clipping:4, noise:0.01]                  # a chain, in the order given
        - {name: compression, params: [20, 90]}     # = compression:20, compression:90
        - {name: pruning, params: [50], options: {noise: 0.1}}   # = pruning:50,noise=0.1
      adaptive: [false, true]
      index: [0, 1]               # one private image per cell; [[0, 1]] = one batch of 2
      seed: [0]
    attack_options:               # per-attack options (common or attack-specific)
      idlg: {budget: 5}
      ig: {budget: 10, signed: false}
      ggl: {ng_method: CMA, budget: 200}
    exclude:                      # optional: partial cells left out of the grid
      - {attack: idlg, adaptive: true}
      - {defense: none, seed: [1, 2]}            # a list: any of these values

``settings`` accepts every field of :class:`ggl.config.RunConfig` except ``out`` (the sweep
places each run): ``model``, ``dataset``, ``budget``, ``known_labels``, ``device``,
``defense_known``, ``extra`` (a mapping of attack-specific options), ... A ``grid`` axis is
``attack``, ``defense``, ``adaptive``, ``index``, ``seed`` or any other RunConfig field
(``model: [lenet, convnet]``, ``budget: [100, 1000]``, ``control: [none,
random-gradient]``: each cell also run on noise instead of the update, which ``ggl report``
shows beside it); its value is a list (a single value
is a one-element list). Axes combine in the order written. A defense entry is ``none``
(no defense), a spec string exactly as ``--defense`` takes it, a list of specs (a chain) or
``{name, params, options}``. ``attack_options.<attack>`` applies to that attack's cells
only: the options every attack understands (``budget``, ``lr``, ``tv``, ``distance``,
``layer_weights``, ``restarts``, ``init``) set the RunConfig field, the others go to
``extra`` (what ``--set`` and GGL's own flags do on the command line). A key may be set in
one place only: ``settings``, ``grid`` or ``attack_options`` (for each attack).
``exclude`` lists partial cells (grid axes -> a value or a list of values) to leave out,
e.g. the distance axis for adaptive cells whose noise likelihood replaces the distance.

Everything is validated before anything runs: unknown keys, wrong types, unknown names and
bad defense specs raise one :class:`GGLError` naming the file, the line and what is
accepted, and every cell's RunConfig is built and validated. Only what needs the data is
left to run time (an index beyond the private split fails that cell). Without a defense,
``adaptive`` and ``defense_known`` mean nothing, so such cells are normalised to the
defaults and run once.

A cell's id is the first 16 hex digits of the SHA-256 of its canonical config: the JSON
(sorted keys) of the RunConfig fields that differ from their defaults, ``out`` excluded.
The same run therefore has the same id in every sweep and stays stable when RunConfig
gains a field with a default.

The store, in ``--out DIR``::

    DIR/index.jsonl          one JSON line per finished attempt: the store (below)
    DIR/runs/<cell_id>/      run.json, original.png, reconstruction.png, progress.gif
                             (written atomically by ggl.api.run, as `ggl run` writes them)
    DIR/sweep.json           the last grid run into DIR: name, source file, YAML, cell ids
    DIR/.sweep.lock          held while a sweep writes (a second sweep on DIR is refused)

Each line of ``index.jsonl`` is one cell's record: ``cell_id``, ``status`` (``done`` or
``failed``), ``attempt``, ``cell`` (its grid values), ``config`` (the full RunConfig),
``metrics`` (``psnr``, ``ssim``, ``lpips`` or null, ``label_accuracy``, ``mse``,
``feature_mse``, ``judge_accuracy`` (null without a judge), ``identifiability`` and its
``identifiability_space``, ``ceiling_psnr`` and ``search_gap`` (null for pixel attacks)), ``loss``, ``evaluations``, ``iterations``, ``wall_time_s``,
``attack_wall_time_s``, ``error`` and ``traceback`` (null when done), ``run_dir``,
``finished_at``, ``host``. Non-finite numbers are written as null (strict JSON). The latest
line of a cell wins. A cell whose run raises, or whose loss is NaN or infinite, is recorded
as ``failed`` with its error, and the sweep goes on.

Why JSON lines and not SQLite: only the parent process writes (workers return records), so
no concurrent-writer locking is needed; an append of one line is the unit of atomicity and
a line torn by a kill is dropped when the store is next opened (that cell simply runs
again); the file is readable with ``grep``/``jq``/``pandas.read_json(lines=True)``, diffs
and commits like the other tables under ``experiments/results/``, and needs no schema
migration. The per-run files sit beside it, so nothing is lost if the index is removed.

Re-running the same command resumes: cells whose latest record is ``done`` are skipped,
``failed`` ones are retried, and a cell killed mid-run has no record and runs again. Kill a
sweep at any moment and run it again: nothing finished is lost and nothing runs twice.

Executors (every executor runs the same :func:`run_cell`; the parent writes the store as
each cell finishes, so a kill loses only the cells in flight):

* ``local`` (default): ``workers=1`` runs cells one after another in this process;
  ``workers=N`` in N spawned processes (``concurrent.futures``).
* ``ray``: one Ray task per cell, on a local Ray instance started for the sweep (no
  ``address``) or on a cluster (``address``, e.g. one started with ``ray start --head``).
  ``workers`` caps the tasks in flight. On a cluster of several machines ``--out`` must be
  on a filesystem every node sees (workers write the run folders; the driver the index),
  and ggl must be installed on every node. Needs ``pip install "ggl[ray]"``.

Each cell sets ``torch.set_num_threads(threads)``, ``threads = max(1, cores // workers)``
by default, so parallel workers do not oversubscribe the cores. Runs are seeded; on the CPU
a cell gives the same metrics with every executor (tested).

Example::

    from ggl.sweep import run_sweep
    summary = run_sweep("experiments/configs/tiny_sweep.yaml", "results/tiny", workers=2)
    print(summary.line())
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import math
import os
import socket
import time
import traceback
import types
import typing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import yaml

from ggl.config import COMMON_ATTACK_OPTIONS, RunConfig, resolve_device
from ggl.errors import GGLError, choose

#: top-level keys of a sweep config
TOP_LEVEL_KEYS = ("name", "settings", "grid", "attack_options", "exclude")
#: keys of a ``{name, params, options}`` defense entry
DEFENSE_ENTRY_KEYS = ("name", "params", "options")
#: RunConfig fields a sweep config may not set
RESERVED_FIELDS = ("out",)
#: the store's files inside the output folder
INDEX_FILE = "index.jsonl"
RUNS_DIR = "runs"
SWEEP_FILE = "sweep.json"
LOCK_FILE = ".sweep.lock"
#: metrics copied from run.json into the index
INDEX_METRICS = ("psnr", "ssim", "lpips", "label_accuracy", "mse", "feature_mse",
                 "judge_accuracy", "judge_private_accuracy", "identifiability", "identifiability_space", "ceiling_psnr",
                 "search_gap")
EXECUTORS = ("local", "ray")

_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
_HINTS = typing.get_type_hints(RunConfig)
#: RunConfig fields a sweep may set, in RunConfig's order
SETTABLE_FIELDS = tuple(name for name in _FIELDS if name not in RESERVED_FIELDS)


# --------------------------------------------------------------------------------------
# YAML with line numbers
# --------------------------------------------------------------------------------------
class _Problem(Exception):
    """A mistake at a line of the config; turned into a GGLError naming the file."""

    def __init__(self, line: int | None, message: str):
        super().__init__(message)
        self.line = line


class _Map(dict):
    """A YAML mapping that remembers its line and the line of each key."""

    line: int = 0
    lines: dict


class _Seq(list):
    """A YAML sequence that remembers its line and the line of each item."""

    line: int = 0
    lines: list


class _LineLoader(yaml.SafeLoader):
    """yaml's safe loader, building mappings and sequences that keep their line numbers."""


def _construct_map(loader: _LineLoader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    result = _Map()
    result.line, result.lines = node.start_mark.line + 1, {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise _Problem(line, f"a key must be a plain name, got {key!r}")
        if key in result:
            raise _Problem(line, f"duplicate key {key!r} (first at line {result.lines[key]})")
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = line
    return result


def _construct_seq(loader: _LineLoader, node: yaml.SequenceNode) -> _Seq:
    result = _Seq(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.lines = [child.start_mark.line + 1 for child in node.value]
    return result


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def _line(container: Any, key: Any = None) -> int | None:
    """The line of ``container[key]`` (or of the container itself)."""
    if key is not None:
        lines = getattr(container, "lines", None)
        if isinstance(lines, dict):
            return lines.get(key, getattr(container, "line", None))
        if isinstance(lines, list) and isinstance(key, int) and key < len(lines):
            return lines[key]
    return getattr(container, "line", None)


def _plain(value: Any) -> Any:
    """``_Map``/``_Seq`` -> dict/list, recursively (for configs and JSON)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------------------
# values
# --------------------------------------------------------------------------------------
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
        raise _Problem(None, f"{name} must be true or false, got {value!r}")
    if base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Problem(None, f"{name} must be an integer, got {value!r}")
    if base is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Problem(None, f"{name} must be a number, got {value!r}")
    if base is str:
        if isinstance(value, str):
            return value
        raise _Problem(None, f"{name} must be a string, got {value!r}")
    raise _Problem(None, f"{name}: unsupported value {value!r}")


def _field_value(name: str, value: Any) -> Any:
    """One value of the RunConfig field ``name``, type-checked and normalised (a tuple
    field takes one item or a list; ``defense`` takes every form of a defense entry but
    the ``{name, params}`` one, which can mean several)."""
    if name == "defense":
        specs = _defense_entry(value, allow_params=False)
        return specs[0]
    base, optional, element = _kind(_HINTS[name])
    if value is None:
        if optional:
            return None
        raise _Problem(None, f"{name} must not be null")
    if base is tuple:
        items = value if isinstance(value, list) else [value]
        checked = tuple(_check_scalar(f"{name} entry", item, element) for item in items)
        if name == "index":
            for i in checked:
                if i < 0:
                    raise _Problem(None, f"index must be >= 0, got {i}")
        return checked
    if base is dict:
        if not isinstance(value, dict):
            raise _Problem(None, f"{name} must be a mapping (KEY: VALUE), got {value!r}")
        return _plain(value)
    value = _check_scalar(name, value, base)
    try:                            # names checked where they are written
        if name in _REGISTRIES:
            choose(_REGISTRIES[name](), value, name)
        elif name == "device":
            resolve_device(value)
    except GGLError as err:
        raise _Problem(None, str(err)) from None
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


#: fields whose value is a registry name, checked where they are written
def _controls() -> dict:
    from ggl.controls import CONTROLS

    return CONTROLS


_REGISTRIES = {"attack": _attacks, "model": _models, "dataset": _datasets,
               "control": _controls}


def _format_param(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Problem(None, f"a defense parameter must be a number, got {value!r}")
    return repr(value) if isinstance(value, float) else str(value)


def _defense_entry(entry: Any, allow_params: bool = True) -> list[tuple[str, ...]]:
    """One defense entry -> the chains (tuples of ``--defense`` specs) it stands for,
    each checked by ``ggl.defenses.parse_defenses`` (the CLI's parser)."""
    from ggl.defenses import parse_defenses

    if entry is None or (isinstance(entry, str) and entry.strip().lower() == "none"):
        chains: list[tuple[str, ...]] = [()]
    elif isinstance(entry, str):
        chains = [(entry.strip(),)]
    elif isinstance(entry, list):
        if not all(isinstance(spec, str) for spec in entry):
            raise _Problem(None, f"a defense chain is a list of specs like 'clipping:4', "
                                 f"got {_plain(entry)!r}")
        chains = [tuple(spec.strip() for spec in entry)]
    elif isinstance(entry, dict):
        unknown = [key for key in entry if key not in DEFENSE_ENTRY_KEYS]
        if unknown or "name" not in entry:
            what = f"unknown key {unknown[0]!r}" if unknown else "missing key 'name'"
            raise _Problem(_line(entry, unknown[0]) if unknown else _line(entry),
                           f"defense entry: {what}; valid keys: {', '.join(DEFENSE_ENTRY_KEYS)}"
                           f" (e.g. {{name: compression, params: [20, 90]}})")
        name = entry["name"]
        if not isinstance(name, str):
            raise _Problem(_line(entry, "name"), f"defense name must be a string, got {name!r}")
        params = entry.get("params")
        params = [None] if params is None else params if isinstance(params, list) else [params]
        if not params:
            raise _Problem(_line(entry, "params"), "defense params is an empty list")
        if len(params) > 1 and not allow_params:
            raise _Problem(_line(entry), "settings.defense is one defense (or chain); put "
                                         "several parameters in grid.defense")
        options = entry.get("options") or {}
        if not isinstance(options, dict):
            raise _Problem(_line(entry, "options"), f"defense options must be a mapping, "
                                                    f"e.g. {{noise: 0.1}}, got {options!r}")
        suffix = "".join(f",{key}={value}" for key, value in options.items())
        chains = [((name if p is None else f"{name}:{_format_param(p)}") + suffix,)
                  for p in params]
    else:
        raise _Problem(None, f"a defense entry is none, a spec like 'noise:0.01', a list (a "
                             f"chain) or {{name: ..., params: [...]}}; got {entry!r}")
    for chain in chains:
        try:
            parse_defenses(chain)
        except GGLError as err:
            raise _Problem(None, str(err)) from None
    return chains


# --------------------------------------------------------------------------------------
# the grid and its cells
# --------------------------------------------------------------------------------------
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
    path: Path | None
    text: str
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


def _mapping(parent: dict, key: str) -> dict:
    value = parent.get(key)
    if value is None:
        return _Map()
    if not isinstance(value, dict):
        raise _Problem(_line(parent, key), f"{key} must be a mapping (KEY: VALUE), got "
                                           f"{_plain(value)!r}")
    return value


def _unknown_key(container: dict, key: Any, where: str, valid: Iterable[str],
                 hint: str = "") -> _Problem:
    return _Problem(_line(container, key), f"unknown key {key!r} in {where}; valid keys: "
                                           f"{', '.join(valid)}{hint}")


def _parse_exclude(data: dict, axes: dict[str, list]) -> list[dict[str, list]]:
    """``exclude``: a list of partial cells, each ``{axis: value or [values]}``; a cell
    whose value on every named axis is among the listed ones is left out of the grid."""
    if "exclude" not in data:
        return []
    node = data["exclude"]
    if not isinstance(node, list):
        raise _Problem(_line(data, "exclude"), "exclude must be a list of partial cells, e.g. "
                                               "[{adaptive: true, distance: [l1, cosine]}]")
    rules = []
    for position, entry in enumerate(node):
        line = _line(node, position)
        if not isinstance(entry, dict) or not entry:
            raise _Problem(line, f"exclude[{position}] must be a mapping of grid axes to "
                                 f"values, got {_plain(entry)!r}")
        rule = {}
        for key, values in entry.items():
            if key not in axes:
                raise _unknown_key(entry, key, f"exclude[{position}]", list(axes),
                                   " (exclude names grid axes only)")
            items = values if isinstance(values, list) and key != "index" else [values]
            try:
                rule[key] = [v for item in items for v in (
                    _defense_entry(item) if key == "defense" else [_field_value(key, item)])]
            except _Problem as problem:
                raise _Problem(problem.line or _line(entry, key),
                               f"exclude[{position}].{key}: {problem}") from None
        rules.append(rule)
    return rules


def _excluded(values: dict, rules: list[dict[str, list]]) -> bool:
    return any(all(values[key] in allowed for key, allowed in rule.items()) for rule in rules)


def _parse(data: Any, default_name: str) -> tuple[str, dict, dict, dict, int]:
    """The config's parts: name, settings, axes (name -> values), attack options."""
    from ggl.attacks import ATTACKS

    if not isinstance(data, dict):
        raise _Problem(_line(data) or 1, "a sweep config is a mapping with the keys "
                                         f"{', '.join(TOP_LEVEL_KEYS)}")
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise _unknown_key(data, key, "the top level", TOP_LEVEL_KEYS)
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name.strip():
        raise _Problem(_line(data, "name"), f"name must be a non-empty string, got {name!r}")
    field_hint = " (attack-specific options go in attack_options.<attack> or settings.extra)"

    settings_node = _mapping(data, "settings")
    settings = {}
    for key, value in settings_node.items():
        if key not in SETTABLE_FIELDS:
            raise _unknown_key(settings_node, key, "settings", SETTABLE_FIELDS, field_hint)
        try:
            settings[key] = _field_value(key, value)
        except _Problem as problem:
            raise _Problem(problem.line or _line(settings_node, key),
                           f"settings.{key}: {problem}") from None

    if "grid" not in data:
        raise _Problem(_line(data), "missing key 'grid' (the axes to sweep, e.g. "
                                    "grid: {attack: [idlg, ig], index: [0, 1]})")
    grid = _mapping(data, "grid")
    axes: dict[str, list] = {}
    for key, values in grid.items():
        if key not in SETTABLE_FIELDS:
            raise _unknown_key(grid, key, "grid", SETTABLE_FIELDS,
                               " (the usual axes: attack, defense, adaptive, index, seed)")
        if key in settings:
            raise _Problem(_line(grid, key), f"{key} is set both in settings (line "
                                             f"{_line(settings_node, key)}) and in grid; "
                                             f"keep one")
        items = values if isinstance(values, list) else [values]
        if not items:
            raise _Problem(_line(grid, key), f"grid.{key} is an empty list")
        axis = []
        for position, item in enumerate(items):
            line = _line(values, position) if isinstance(values, list) else _line(grid, key)
            try:
                if key == "defense":
                    axis.extend(_defense_entry(item))
                else:
                    axis.append(_field_value(key, item))
            except _Problem as problem:
                raise _Problem(problem.line or line, f"grid.{key}: {problem}") from None
        axes[key] = axis

    options_node = _mapping(data, "attack_options")
    attack_options: dict[str, dict] = {}
    for attack, options in options_node.items():
        line = _line(options_node, attack)
        if attack not in ATTACKS:
            raise _Problem(line, f"attack_options: unknown attack {attack!r}; valid attacks: "
                                 f"{', '.join(sorted(ATTACKS))}")
        if not isinstance(options, dict):
            raise _Problem(line, f"attack_options.{attack} must be a mapping of options, e.g. "
                                 f"{{budget: 100}}, got {_plain(options)!r}")
        parsed = {}
        for key, value in options.items():
            key_line = _line(options, key)
            if key in axes or key in settings:
                where = "grid" if key in axes else "settings"
                raise _Problem(key_line, f"attack_options.{attack}.{key} is also set in "
                                         f"{where}; keep one")
            if key in COMMON_ATTACK_OPTIONS:
                try:
                    value = _field_value(key, value)
                except _Problem as problem:
                    raise _Problem(key_line, f"attack_options.{attack}: {problem}") from None
            try:                    # the attack's own check of this one option
                ATTACKS[attack](**{key: _plain(value)})
            except GGLError as err:
                raise _Problem(key_line, f"attack_options.{attack}: {err}") from None
            except TypeError as err:
                raise _Problem(key_line, f"attack_options.{attack}.{key}: bad value "
                                         f"{value!r} ({err})") from None
            parsed[key] = _plain(value)
        attack_options[attack] = parsed
    return name.strip(), settings, axes, attack_options, _line(data, "grid") or 1


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


def parse_sweep(text: str, path: str | Path | None = None) -> Sweep:
    """Parse and validate a sweep config given as YAML text (see the module docstring).

    Raises:
        GGLError: naming the file and line of the first mistake and what is accepted.
    """
    where = str(path) if path is not None else "<sweep config>"
    try:
        data = yaml.load(text, Loader=_LineLoader)
        if data is None:
            raise _Problem(1, "the sweep config is empty; it needs at least a grid")
        default_name = Path(path).stem if path is not None else "sweep"
        name, settings, axes, attack_options, grid_line = _parse(data, default_name)
        excludes = _parse_exclude(data, axes)
    except _Problem as problem:
        raise GGLError(f"{where}:{problem.line or 1}: {problem}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(err, "problem", None) or str(err)
        raise GGLError(f"{where}:{line}: invalid YAML: {problem}") from None

    cells, seen, excluded = [], set(), 0
    for combo in itertools.product(*axes.values()):
        values = dict(zip(axes, combo))
        if _excluded(values, excludes):
            excluded += 1
            continue
        try:
            config = _cell_config(settings, values, attack_options).validate()
        except GGLError as err:
            label = Cell("", values, RunConfig()).label()
            raise GGLError(f"{where}:{grid_line}: cell [{label}]: {err}") from None
        identifier = cell_id(config)
        if identifier in seen:
            continue
        seen.add(identifier)
        shown = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
        if "defense" in shown and not shown["defense"] and "adaptive" in shown:
            shown["adaptive"] = config.adaptive
        cells.append(Cell(identifier, shown, config))
    merged = math.prod(len(v) for v in axes.values()) - len(cells) - excluded
    return Sweep(name, Path(path) if path is not None else None, text, _plain(axes), cells,
                 merged, excluded)


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate the sweep config at ``path`` (see :func:`parse_sweep`)."""
    path = Path(path)
    if not path.is_file():
        raise GGLError(f"sweep config {str(path)!r} not found (a YAML file with a grid; "
                       f"example: experiments/configs/tiny_sweep.yaml)")
    return parse_sweep(path.read_text(encoding="utf-8"), path)


# --------------------------------------------------------------------------------------
# the store
# --------------------------------------------------------------------------------------
def _finite(value: Any) -> Any:
    """Non-finite floats -> None, recursively (the index is strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class ResultStore:
    """The sweep's output folder: ``index.jsonl`` (one record per line, the latest line of a
    cell wins) and ``runs/<cell_id>/``. Only one process writes it, under a lock."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.index = self.root / INDEX_FILE
        self._lock = None

    def run_dir(self, identifier: str) -> Path:
        return self.root / RUNS_DIR / identifier

    def lock(self) -> None:
        """Take the folder's lock, or raise GGLError if another sweep holds it."""
        self.root.mkdir(parents=True, exist_ok=True)
        handle = open(self.root / LOCK_FILE, "a+")
        try:
            import fcntl
        except ImportError:              # no advisory locks on this platform
            self._lock = handle
            return
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise GGLError(f"another ggl sweep is writing to {self.root} (it holds "
                           f"{self.root / LOCK_FILE}); wait for it to finish or use another "
                           f"--out") from None
        self._lock = handle

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()          # closing the file releases the lock
            self._lock = None

    def repair(self) -> None:
        """Drop a last line torn by a kill mid-append (its cell will simply run again)."""
        if not self.index.exists():
            return
        data = self.index.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.index, "r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)

    def records(self) -> dict[str, dict]:
        """The latest record of every cell in the store, by cell id (attempts counted)."""
        latest: dict[str, dict] = {}
        if not self.index.exists():
            return latest
        with open(self.index, encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue            # a torn line: that cell has no record
                if isinstance(record, dict) and "cell_id" in record:
                    latest[record["cell_id"]] = record
        return latest

    def append(self, record: dict) -> dict:
        """Append one record as one line (one write, flushed and fsynced); returns the
        record as stored (what :meth:`records` will read back)."""
        self.root.mkdir(parents=True, exist_ok=True)
        line = json.dumps(_finite(record), allow_nan=False, default=str)
        with open(self.index, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return json.loads(line)


# --------------------------------------------------------------------------------------
# one cell
# --------------------------------------------------------------------------------------
def _task(cell: Cell, store: ResultStore, threads: int | None) -> dict:
    """What a worker needs to run a cell: plain data, picklable and JSON-able."""
    config = dataclasses.replace(cell.config, out=str(store.run_dir(cell.cell_id)))
    return {"cell_id": cell.cell_id, "cell": cell.values, "config": config.to_dict(),
            "threads": threads}


def _base_record(task: dict) -> dict:
    return {"cell_id": task["cell_id"], "status": "failed", "cell": task["cell"],
            "config": task["config"], "metrics": None, "loss": None, "evaluations": None,
            "iterations": None, "wall_time_s": None, "attack_wall_time_s": None,
            "error": None, "traceback": None,
            "run_dir": f"{RUNS_DIR}/{task['cell_id']}", "host": socket.gethostname()}


def failed_record(task: dict, error: str, trace: str | None = None) -> dict:
    """The record of a cell that failed outside :func:`run_cell` (e.g. its worker died)."""
    record = _base_record(task)
    record.update(error=error, traceback=trace)
    return record


def run_cell(task: dict) -> dict:
    """Run one cell with ``ggl.api.run(config, write=True)`` and return its record.

    Never raises for a failing run: an exception, or a non-finite loss, gives a record with
    ``status: failed`` and the error. Runs in whichever process the executor chose.
    """
    import torch

    from ggl import api

    if task.get("threads"):
        torch.set_num_threads(task["threads"])
    record = _base_record(task)
    started = time.perf_counter()
    try:
        config_dict = dict(task["config"])
        for name in ("index", "defense"):
            config_dict[name] = tuple(config_dict[name])
        result = api.run(RunConfig(**config_dict), write=True)
        run = result.record
        record.update(
            metrics={k: run["metrics"].get(k) for k in INDEX_METRICS},
            loss=run["loss"], evaluations=run["evaluations"], iterations=run["iterations"],
            attack_wall_time_s=run["attack_wall_time_s"])
        loss = float(run["loss"])
        if math.isfinite(loss):
            record["status"] = "done"
        else:
            record["error"] = f"the gradient-matching loss is {loss} (not finite)"
    except Exception as err:                  # noqa: BLE001 -- a failed cell is recorded
        record["error"] = str(err) if isinstance(err, GGLError) else \
            f"{type(err).__name__}: {err}"
        if not isinstance(err, GGLError):
            record["traceback"] = traceback.format_exc(limit=-12)
    record["wall_time_s"] = time.perf_counter() - started
    return record


# --------------------------------------------------------------------------------------
# executors
# --------------------------------------------------------------------------------------
def available_cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


class LocalExecutor:
    """Cells in this process (``workers=1``) or in ``workers`` spawned processes."""

    def __init__(self, workers: int = 1, threads: int | None = None):
        self.workers = workers
        self.threads = threads or max(1, available_cores() // workers)

    def run(self, tasks: Sequence[dict], on_record: Callable[[dict], None]) -> None:
        for task in tasks:
            task["threads"] = self.threads
        if self.workers == 1:
            import torch

            previous = torch.get_num_threads()
            try:
                for task in tasks:
                    on_record(run_cell(task))
            finally:
                torch.set_num_threads(previous)
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from concurrent.futures.process import BrokenProcessPool

        pool = ProcessPoolExecutor(max_workers=self.workers,
                                   mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(self.threads,))
        try:
            futures = {pool.submit(run_cell, task): task for task in tasks}
            for future in as_completed(futures):
                try:
                    record = future.result()
                except BrokenProcessPool:
                    raise GGLError("a sweep worker process died (out of memory? killed?); "
                                   "the cells finished so far are stored: run the same "
                                   "command again to resume") from None
                except Exception as err:      # noqa: BLE001 -- e.g. an unpicklable result
                    record = failed_record(futures[future], f"{type(err).__name__}: {err}")
                on_record(record)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)


class RayExecutor:
    """One Ray task per cell, on a local Ray instance (no ``address``) or a cluster.

    Each task reserves ``threads`` CPUs and sets torch to that many threads, so Ray never
    runs more tasks than there are cores; ``workers`` also caps the tasks in flight.
    """

    def __init__(self, address: str | None = None, workers: int | None = None,
                 threads: int | None = None):
        self.address = address
        self.workers = workers
        self.threads = threads

    @staticmethod
    def _import_ray():
        try:
            import ray
        except ImportError:
            raise GGLError('the ray executor needs Ray, which is not installed: '
                           'pip install "ggl[ray]" (or use --executor local)') from None
        return ray

    def _start(self, ray) -> bool:
        """Connect to (or start) Ray; True when this executor started it."""
        if ray.is_initialized():
            return False
        try:
            if self.address:
                ray.init(address=self.address, logging_level=logging.WARNING,
                         log_to_driver=False)
            else:
                ray.init(num_cpus=available_cores(), include_dashboard=False,
                         logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray"
            raise GGLError(f"could not start or reach {where}: {err} (start a cluster with "
                           f"`ray start --head` and pass its address, or omit --address "
                           f"for a local one)") from None
        return True

    def _threads(self, ray) -> int:
        """CPUs (= torch threads) per task: ``threads``, else the cluster's CPUs shared by
        ``workers`` tasks, else 1; never more than the largest node has (Ray would wait
        forever for a task no node can hold)."""
        nodes = [node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]]
        largest = max(1, int(max(nodes, default=1)))
        if self.threads:
            wanted = self.threads
        elif self.workers:
            wanted = int(sum(nodes)) // self.workers
        else:
            wanted = 1
        return max(1, min(largest, wanted))

    def run(self, tasks: Sequence[dict], on_record: Callable[[dict], None]) -> None:
        ray = self._import_ray()
        started = self._start(ray)
        try:
            threads = self._threads(ray)
            remote = ray.remote(num_cpus=threads, max_retries=0)(run_cell)
            queue = list(tasks)
            limit = self.workers or len(queue)
            running: dict = {}
            try:
                while queue or running:
                    while queue and len(running) < limit:
                        task = queue.pop(0)
                        task["threads"] = threads
                        running[remote.remote(task)] = task
                    ready, _ = ray.wait(list(running), num_returns=1)
                    for ref in ready:
                        task = running.pop(ref)
                        try:
                            record = ray.get(ref)
                        except Exception as err:    # noqa: BLE001 -- a crashed task
                            record = failed_record(task, f"{type(err).__name__}: "
                                                         f"{str(err).strip()[-2000:]}")
                        on_record(record)
            except BaseException:
                for ref in running:
                    ray.cancel(ref, force=True)
                raise
        finally:
            if started:
                ray.shutdown()


def make_executor(executor: str = "local", workers: int | None = None,
                  address: str | None = None, threads: int | None = None):
    """``local`` or ``ray``, checked; see the module docstring."""
    if executor not in EXECUTORS:
        raise GGLError(f"unknown executor {executor!r}; valid executors: {', '.join(EXECUTORS)}")
    if workers is not None and workers < 1:
        raise GGLError(f"--workers must be at least 1, got {workers}")
    if threads is not None and threads < 1:
        raise GGLError(f"--threads must be at least 1, got {threads}")
    if executor == "local":
        if address:
            raise GGLError("--address is the Ray cluster's address: use it with --executor ray")
        return LocalExecutor(workers or 1, threads)
    executor = RayExecutor(address, workers, threads)
    executor._import_ray()             # fail before anything runs
    return executor


# --------------------------------------------------------------------------------------
# the sweep
# --------------------------------------------------------------------------------------
@dataclass
class SweepSummary:
    """What one ``run_sweep`` call did. ``records`` holds the latest record of every cell
    of the grid, by cell id, in the grid's order."""

    name: str
    store: Path
    total: int
    done: int
    failed: int
    skipped: int
    records: dict = field(default_factory=dict)

    def line(self) -> str:
        retry = "; run the same command again to retry the failed ones" if self.failed else ""
        return (f"sweep {self.name}: {self.total} cells: {self.done} done, {self.failed} "
                f"failed, {self.skipped} skipped (done before) -> {self.store}{retry}")


def run_sweep(config: str | Path | Sweep, out: str | Path, executor: str = "local",
              workers: int | None = None, address: str | None = None,
              threads: int | None = None, quiet: bool = False) -> SweepSummary:
    """Run every cell of a sweep config that is not done yet in the store ``out``.

    Args:
        config: a sweep config file (YAML, see the module docstring) or a parsed Sweep.
        out: the store's folder; the same folder resumes.
        executor: ``local`` (processes; default) or ``ray``.
        workers: local: processes (default 1 = this process); ray: tasks in flight.
        address: ray only: the cluster's address (default: start a local Ray).
        threads: torch threads per cell (default: cores // workers, at least 1).
        quiet: no progress bar or failure lines.

    Raises:
        GGLError: a mistake in the config or the options (nothing has run), or the store
            is in use by another sweep.
    """
    from tqdm import tqdm

    sweep = config if isinstance(config, Sweep) else load_sweep(config)
    runner = make_executor(executor, workers, address, threads)
    store = ResultStore(out)
    store.lock()
    try:
        store.repair()
        from ggl.results import atomic_write_json

        atomic_write_json(store.root / SWEEP_FILE, {
            "name": sweep.name, "source": str(sweep.path) if sweep.path else None,
            "yaml": sweep.text, "axes": sweep.axes,
            "cells": [{"cell_id": c.cell_id, **c.values} for c in sweep.cells]})
        existing = store.records()
        pending = [c for c in sweep.cells
                   if existing.get(c.cell_id, {}).get("status") != "done"]
        summary = SweepSummary(sweep.name, store.index, len(sweep.cells), 0, 0,
                               len(sweep.cells) - len(pending))
        labels = {c.cell_id: c.label() for c in sweep.cells}
        bar = tqdm(total=len(sweep.cells), initial=summary.skipped, desc=sweep.name,
                   unit="cell", disable=quiet, dynamic_ncols=True)

        def on_record(record: dict) -> None:
            previous = existing.get(record["cell_id"])
            record["attempt"] = (previous or {}).get("attempt", 0) + 1
            record["sweep"] = sweep.name
            record["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            record = store.append(record)
            existing[record["cell_id"]] = record
            if record["status"] == "done":
                summary.done += 1
            else:
                summary.failed += 1
                if not quiet:
                    bar.write(f"failed: {labels.get(record['cell_id'])} "
                              f"[{record['cell_id']}]: {record['error']}")
            bar.set_postfix(done=summary.done, failed=summary.failed, refresh=False)
            bar.update(1)

        try:
            runner.run([_task(cell, store, None) for cell in pending], on_record)
        finally:
            bar.close()
        summary.records = {c.cell_id: existing[c.cell_id] for c in sweep.cells
                           if c.cell_id in existing}
        return summary
    finally:
        store.unlock()
