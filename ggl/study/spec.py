"""The sweep spec (``ggl sweep CONFIG``): a YAML file, or a plain mapping, -> a validated grid.

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
(``model: [lenet, convnet]``, ``budget: [100, 1000]``, ``control: [none, random-gradient]``:
each cell also run on noise instead of the update, which ``ggl report`` shows beside it);
its value is a list (a single value is a one-element list). Axes combine in the order
written. A defense entry is ``none`` (no defense), a spec string exactly as ``--defense``
takes it, a list of specs (a chain) or ``{name, params, options}``.
``attack_options.<attack>`` applies to that attack's cells only: the options every attack
understands (``budget``, ``lr``, ``tv``, ``distance``, ``layer_weights``, ``restarts``,
``init``) set the RunConfig field, the others go to ``extra`` (what ``--set`` and GGL's own
flags do on the command line). A key may be set in one place only: ``settings``, ``grid`` or
``attack_options`` (for each attack). ``exclude`` lists partial cells (grid axes -> a value
or a list of values) to leave out, e.g. the distance axis for adaptive cells whose noise
likelihood replaces the distance.

Everything is validated before anything runs: unknown keys, wrong types, unknown names and
bad defense specs raise one :class:`GGLError` naming the file, the line and what is accepted
(a config given as a mapping, :func:`sweep_from_mapping`, has no lines: its errors name
their source instead), and every cell's RunConfig is built and validated. Only what needs
the data is left to run time (an index beyond the private split fails that cell). Without a
defense, ``adaptive`` and ``defense_known`` mean nothing, so such cells are normalised to
the defaults and run once.

The grid's cells and their ids: :mod:`ggl.study.grid`; one value checked:
:mod:`ggl.study.fields`; YAML with line numbers: :mod:`ggl.study.yaml_lines`.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from ggl.config import COMMON_ATTACK_OPTIONS, RunConfig
from ggl.errors import GGLError
from ggl.study.fields import defense_entry, field_value
from ggl.study.grid import RESERVED_FIELDS, Sweep, expand
from ggl.study.yaml_lines import Problem, line_of, load_yaml, plain

#: top-level keys of a sweep config
TOP_LEVEL_KEYS = ("name", "settings", "grid", "attack_options", "exclude")
#: RunConfig fields a sweep may set, in RunConfig's order
SETTABLE_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig)
                        if f.name not in RESERVED_FIELDS)


def _mapping(parent: dict, key: str) -> dict:
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Problem(line_of(parent, key), f"{key} must be a mapping (KEY: VALUE), got "
                                            f"{plain(value)!r}")
    return value


def _unknown_key(container: dict, key: Any, where: str, valid: Iterable[str],
                 hint: str = "") -> Problem:
    return Problem(line_of(container, key), f"unknown key {key!r} in {where}; valid keys: "
                                            f"{', '.join(valid)}{hint}")


def _parse_exclude(data: dict, axes: dict[str, list]) -> list[dict[str, list]]:
    """``exclude``: a list of partial cells, each ``{axis: value or [values]}``; a cell
    whose value on every named axis is among the listed ones is left out of the grid."""
    if "exclude" not in data:
        return []
    node = data["exclude"]
    if not isinstance(node, list):
        raise Problem(line_of(data, "exclude"), "exclude must be a list of partial cells, e.g. "
                                                "[{adaptive: true, distance: [l1, cosine]}]")
    rules = []
    for position, entry in enumerate(node):
        line = line_of(node, position)
        if not isinstance(entry, dict) or not entry:
            raise Problem(line, f"exclude[{position}] must be a mapping of grid axes to "
                                f"values, got {plain(entry)!r}")
        rule = {}
        for key, values in entry.items():
            if key not in axes:
                raise _unknown_key(entry, key, f"exclude[{position}]", list(axes),
                                   " (exclude names grid axes only)")
            items = values if isinstance(values, list) and key != "index" else [values]
            try:
                rule[key] = [v for item in items for v in (
                    defense_entry(item) if key == "defense" else [field_value(key, item)])]
            except Problem as problem:
                raise Problem(problem.line or line_of(entry, key),
                              f"exclude[{position}].{key}: {problem}") from None
        rules.append(rule)
    return rules


def _parse(data: Any, default_name: str) -> tuple[str, dict, dict, dict, int]:
    """The config's parts: name, settings, axes (name -> values), attack options."""
    from ggl.attacks import ATTACKS

    if not isinstance(data, dict):
        raise Problem(line_of(data) or 1, "a sweep config is a mapping with the keys "
                                          f"{', '.join(TOP_LEVEL_KEYS)}")
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise _unknown_key(data, key, "the top level", TOP_LEVEL_KEYS)
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name.strip():
        raise Problem(line_of(data, "name"), f"name must be a non-empty string, got {name!r}")
    field_hint = " (attack-specific options go in attack_options.<attack> or settings.extra)"

    settings_node = _mapping(data, "settings")
    settings = {}
    for key, value in settings_node.items():
        if key not in SETTABLE_FIELDS:
            raise _unknown_key(settings_node, key, "settings", SETTABLE_FIELDS, field_hint)
        try:
            settings[key] = field_value(key, value)
        except Problem as problem:
            raise Problem(problem.line or line_of(settings_node, key),
                          f"settings.{key}: {problem}") from None

    if "grid" not in data:
        raise Problem(line_of(data), "missing key 'grid' (the axes to sweep, e.g. "
                                     "grid: {attack: [idlg, ig], index: [0, 1]})")
    grid = _mapping(data, "grid")
    if not grid:
        raise Problem(line_of(data, "grid"), "the grid has no axis: name at least one, e.g. "
                                             "grid: {attack: [idlg, ig], index: [0, 1]}")
    axes: dict[str, list] = {}
    for key, values in grid.items():
        if key not in SETTABLE_FIELDS:
            raise _unknown_key(grid, key, "grid", SETTABLE_FIELDS,
                               " (the usual axes: attack, defense, adaptive, index, seed)")
        if key in settings:
            first = line_of(settings_node, key)
            at = f" (line {first})" if first is not None else ""
            raise Problem(line_of(grid, key), f"{key} is set both in settings{at} and in "
                                              f"grid; keep one")
        items = values if isinstance(values, list) else [values]
        if not items:
            raise Problem(line_of(grid, key), f"grid.{key} is an empty list")
        axis = []
        for position, item in enumerate(items):
            line = line_of(values, position) if isinstance(values, list) else line_of(grid, key)
            try:
                if key == "defense":
                    axis.extend(defense_entry(item))
                else:
                    axis.append(field_value(key, item))
            except Problem as problem:
                raise Problem(problem.line or line, f"grid.{key}: {problem}") from None
        axes[key] = axis

    options_node = _mapping(data, "attack_options")
    attack_options: dict[str, dict] = {}
    for attack, options in options_node.items():
        line = line_of(options_node, attack)
        if attack not in ATTACKS:
            raise Problem(line, f"attack_options: unknown attack {attack!r}; valid attacks: "
                                f"{', '.join(sorted(ATTACKS))}")
        if not isinstance(options, dict):
            raise Problem(line, f"attack_options.{attack} must be a mapping of options, e.g. "
                                f"{{budget: 100}}, got {plain(options)!r}")
        parsed = {}
        for key, value in options.items():
            key_line = line_of(options, key)
            if key in axes or key in settings:
                where = "grid" if key in axes else "settings"
                raise Problem(key_line, f"attack_options.{attack}.{key} is also set in "
                                        f"{where}; keep one")
            if key in COMMON_ATTACK_OPTIONS:
                try:
                    value = field_value(key, value)
                except Problem as problem:
                    raise Problem(key_line, f"attack_options.{attack}: {problem}") from None
            try:                    # the attack's own check of this one option
                ATTACKS[attack](**{key: plain(value)})
            except GGLError as err:
                raise Problem(key_line, f"attack_options.{attack}: {err}") from None
            except TypeError as err:
                raise Problem(key_line, f"attack_options.{attack}.{key}: bad value "
                                        f"{value!r} ({err})") from None
            parsed[key] = plain(value)
        attack_options[attack] = parsed
    return name.strip(), settings, axes, attack_options, line_of(data, "grid") or 1


def _build(data: Any, default_name: str, text: str | None, path: Path | None,
           where: Callable[[int | None], str]) -> Sweep:
    """The Sweep of a config's data (parsed YAML or a plain mapping); ``where(line)`` is the
    prefix of an error at that line. ``text`` None: the mapping's YAML (for sweep.json)."""
    try:
        name, settings, axes, attack_options, grid_line = _parse(data, default_name)
        excludes = _parse_exclude(data, axes)
    except Problem as problem:
        raise GGLError(f"{where(problem.line)}{problem}") from None
    cells, merged, excluded = expand(settings, axes, attack_options, excludes,
                                     where(grid_line))
    if text is None:
        text = yaml.safe_dump(data, sort_keys=False)
    return Sweep(name, path, text, plain(axes), cells, merged, excluded)


def parse_sweep(text: str, path: str | Path | None = None) -> Sweep:
    """Parse and validate a sweep config given as YAML text (see the module docstring).

    Raises:
        GGLError: naming the file and line of the first mistake and what is accepted.
    """
    where = str(path) if path is not None else "<sweep config>"
    try:
        data = load_yaml(text)
        if data is None:
            raise Problem(1, "the sweep config is empty; it needs at least a grid")
    except Problem as problem:
        raise GGLError(f"{where}:{problem.line or 1}: {problem}") from None
    return _build(data, Path(path).stem if path is not None else "sweep", text,
                  Path(path) if path is not None else None,
                  lambda line: f"{where}:{line or 1}: ")


def sweep_from_mapping(data: dict, name: str = "sweep",
                       source: str = "<sweep config>") -> Sweep:
    """Validate a sweep config given as a plain mapping (what YAML would give: dicts,
    lists, strings, numbers, booleans, None), with the checks of :func:`parse_sweep`.

    Args:
        data: the config (its ``name`` key, where set, wins over ``name``).
        name: the sweep's name when ``data`` has none.
        source: what an error names instead of a file and line (``SOURCE: ...``).

    Raises:
        GGLError: ``SOURCE: `` and the first mistake, with what is accepted.
    """
    return _build(data, name, None, None, lambda line: f"{source}: ")


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate the sweep config at ``path`` (see :func:`parse_sweep`)."""
    path = Path(path)
    if not path.is_file():
        raise GGLError(f"sweep config {str(path)!r} not found (a YAML file with a grid; "
                       f"example: experiments/configs/tiny_sweep.yaml)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise GGLError(f"sweep config {str(path)!r} is not UTF-8 text (byte {err.start}): "
                       f"save it as UTF-8 YAML") from None
    except OSError as err:
        raise GGLError(f"sweep config {str(path)!r} cannot be read ({err.strerror})") from None
    return parse_sweep(text, path)
