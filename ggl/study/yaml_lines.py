"""YAML that remembers its line numbers, for error messages that point at a line.

:func:`load_yaml` parses YAML text with yaml's safe loader into mappings and sequences that
remember the line of each key and item (:func:`line_of` reads them back; a plain dict or
list has none, and gives None). A mistake found while reading or checking the data is a
:class:`Problem`: a message and the line it is at, turned into a ``GGLError`` by the caller,
which knows the file's name.
"""
from __future__ import annotations

from typing import Any

import yaml


class Problem(Exception):
    """A mistake at a line of the config (``line`` None where unknown, e.g. in a mapping
    that did not come from YAML); turned into a GGLError naming the file."""

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


class LineLoader(yaml.SafeLoader):
    """yaml's safe loader, building mappings and sequences that keep their line numbers."""


def _construct_map(loader: LineLoader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    result = _Map()
    result.line, result.lines = node.start_mark.line + 1, {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise Problem(line, f"a key must be a plain name, got {key!r}")
        if key in result:
            raise Problem(line, f"duplicate key {key!r} (first at line {result.lines[key]})")
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = line
    return result


def _construct_seq(loader: LineLoader, node: yaml.SequenceNode) -> _Seq:
    result = _Seq(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.lines = [child.start_mark.line + 1 for child in node.value]
    return result


LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def line_of(container: Any, key: Any = None) -> int | None:
    """The line of ``container[key]`` (or of the container itself)."""
    if key is not None:
        lines = getattr(container, "lines", None)
        if isinstance(lines, dict):
            return lines.get(key, getattr(container, "line", None))
        if isinstance(lines, list) and isinstance(key, int) and key < len(lines):
            return lines[key]
    return getattr(container, "line", None)


def plain(value: Any) -> Any:
    """``_Map``/``_Seq`` -> dict/list, recursively (for configs and JSON)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def load_yaml(text: str) -> Any:
    """The YAML document in ``text``, its mappings and sequences keeping their lines.

    Raises:
        Problem: invalid YAML, a key that is not a plain name, or a duplicate key.
    """
    try:
        return yaml.load(text, Loader=LineLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(err, "problem", None) or str(err)
        raise Problem(line, f"invalid YAML: {problem}") from None
