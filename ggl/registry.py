"""One registry shape for every family of named things a user picks: attacks, defenses,
models, datasets, controls, distances, layer weights, label rules, inits, generators and
latent optimizers.

A :class:`Registry` maps a user-facing name to a factory (a class or a function) with a
one-line summary and optional aliases. ``ggl list``, the command line's choices and every
"unknown NAME" message iterate the registry, so a new entry shows up everywhere at once
(``ggl list`` prints a copy rendered from the registries: regenerate it with
``python -m ggl.listing --write``)::

    DISTANCES = Registry("distance")
    DISTANCES.add("l2", squared_l2, "squared L2 per layer (DLG, GGL)")
    DISTANCES["l2"]                # -> squared_l2
    DISTANCES.choose("l3")         # GGLError: unknown distance 'l3'; valid distances: l2, ...

A registry may also have a lazily loaded family of entries beside its own (``more``), e.g.
the latent optimizers take every optimizer of nevergrad's registry, imported only when a
name is not one of ggl's own.
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Callable, Generic, Iterator, Mapping, TypeVar

from ggl.errors import GGLError

T = TypeVar("T")

#: above this many names, an error message shows a few and points at ``ggl list``
LISTED_IN_MESSAGES = 20


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered name: ``factory`` builds the thing, ``summary`` is its line in
    ``ggl list``, ``aliases`` are other names accepted for it."""

    name: str
    factory: T
    summary: str
    aliases: tuple[str, ...] = ()


class Registry(Mapping[str, T]):
    """``name -> factory`` with summaries and aliases; see the module docstring.

    Args:
        what: the singular noun used in messages, e.g. ``"defense"``.
        plural: its plural (default ``what + "s"``).
        more: returns entries loaded on first need (e.g. nevergrad's optimizers); they come
            after the registry's own.
        featured: names an error message shows first when the registry is too long to list.
        fold_case: names are matched case-insensitively (defenses: ``Noise`` = ``noise``).
    """

    def __init__(self, what: str, plural: str | None = None, *,
                 more: Callable[[], Mapping[str, Entry[T]]] | None = None,
                 featured: tuple[str, ...] = (), fold_case: bool = False):
        self.what, self.plural = what, plural or what + "s"
        self._entries: dict[str, Entry[T]] = {}
        self._aliases: dict[str, str] = {}
        self._more, self._loaded_more = more, None
        self.featured, self.fold_case = featured, fold_case

    # ------------------------------------------------------------------ building
    @classmethod
    def of(cls, what: str, factories: Mapping[str, T], **options) -> "Registry[T]":
        """A registry of ``name -> factory``, each summarised by its docstring's first
        line (``options`` as for the constructor)."""
        registry = cls(what, **options)
        for name, factory in factories.items():
            registry.add(name, factory)
        return registry

    def add(self, name: str, factory: T, summary: str | None = None,
            aliases: tuple[str, ...] = ()) -> T:
        """Register ``factory`` under ``name`` (and ``aliases``), summarised by ``summary``
        (default: the first line of its docstring); returns ``factory``."""
        if summary is None:
            summary = getattr(factory, "summary", None) or \
                ((factory.__doc__ or "").strip().splitlines() or [""])[0]
        for key in (name, *aliases):
            if self._key(key) in self._entries or self._key(key) in self._aliases:
                raise ValueError(f"{self.what} {key!r} is registered twice")
        self._entries[self._key(name)] = Entry(name, factory, summary, tuple(aliases))
        for alias in aliases:
            self._aliases[self._key(alias)] = self._key(name)
        return factory

    # ------------------------------------------------------------------ looking up
    def _key(self, name: str) -> str:
        return name.lower() if self.fold_case else name

    def _extra(self) -> Mapping[str, Entry[T]]:
        if self._more is None:
            return {}
        if self._loaded_more is None:
            self._loaded_more = {self._key(k): v for k, v in self._more().items()
                                 if self._key(k) not in self._entries}
        return self._loaded_more

    def find(self, name: str) -> Entry[T] | None:
        """The entry of ``name`` or of the alias ``name``; ``None`` when unknown."""
        if not isinstance(name, str):
            return None
        key = self._key(name.strip())
        key = self._aliases.get(key, key)
        return self._entries.get(key) or self._extra().get(key)

    def entry(self, name: str, context: str = "") -> Entry[T]:
        """The entry of ``name`` (aliases accepted), else a GGLError listing the valid names;
        ``context`` is put after the name, e.g. ``" in --defense 'x:1'"``."""
        found = self.find(name)
        if found is None:
            raise GGLError(self.unknown_message(name, context))
        return found

    def choose(self, name: str, context: str = "") -> T:
        """The factory of ``name`` (aliases accepted), else a GGLError listing the valid
        names."""
        return self.entry(name, context).factory

    def canonical(self, name: str, context: str = "") -> str:
        """The registered name of ``name`` (an alias resolved), else a GGLError."""
        return self.entry(name, context).name

    def unknown_message(self, name, context: str = "") -> str:
        """``unknown distance 'l3'; valid distances: cosine, l1, l2 (did you mean l2?)``."""
        names = self.names()
        close = difflib.get_close_matches(str(name), names, n=3) if isinstance(name, str) \
            else []
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        if len(names) > LISTED_IN_MESSAGES:
            shown = [n for n in self.featured if n in names] or names[:6]
            valid = (f"any of {len(names)} {self.plural}, e.g. {', '.join(shown)} (all "
                     f"listed by `ggl list`)")
        else:
            valid = ", ".join(sorted(self._entries_by_name()))
            aliases = [f"{alias} = {entry.name}" for entry in self.entries()
                       for alias in entry.aliases]
            if aliases:
                valid += f"; aliases {', '.join(aliases)}"
        return f"unknown {self.what} {name!r}{context}; valid {self.plural}: {valid}{hint}"

    # ------------------------------------------------------------------ listing
    def _entries_by_name(self) -> dict[str, Entry[T]]:
        return {entry.name: entry for entry in (*self._entries.values(),
                                                *self._extra().values())}

    def entries(self, include_more: bool = True) -> list[Entry[T]]:
        """Every entry: the registry's own in the order added, then the lazily loaded ones
        (``include_more=False`` leaves those out and loads nothing)."""
        own = list(self._entries.values())
        return own + list(self._extra().values()) if include_more else own

    def names(self, include_more: bool = True) -> list[str]:
        return [entry.name for entry in self.entries(include_more)]

    def summary(self, name: str) -> str:
        return self.entry(name).summary

    # ------------------------------------------------------------------ Mapping
    def __getitem__(self, name: str) -> T:
        found = self.find(name)
        if found is None:
            raise KeyError(name)
        return found.factory

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.find(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.entries())

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {', '.join(self.names(include_more=False))})"


def registry_at(location: str) -> Registry:
    """The registry at ``"module:NAME"`` (e.g. ``"ggl.attacks:ATTACKS"``), imported only
    now: for callers that must start without torch (the command line, sweep parsing)."""
    module, name = location.split(":")
    return getattr(importlib.import_module(module), name)
