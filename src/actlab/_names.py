"""Named things: the one generic :class:`Registry` and the "Did you mean ...?" hint.

Every kind of plug-in (activations, layers, tasks, model presets, probes, search strategies,
sparsity methods) is one ``Registry`` instance, filled by a decorator in the module that
defines the thing:

    TASKS: Registry[Task] = Registry("task", loader="actlab.train.tasks.*")

    @TASKS.register("digits-mlp", kind="image")
    def _digits() -> Task: ...

    TASKS.get("digts-mlp")   # RegistryError: unknown task 'digts-mlp'. Did you mean: digits-mlp?
    TASKS.names()            # sorted names; TASKS.names(kind="image") filters on metadata
    TASKS.meta("digits-mlp") # {"kind": "image"}

``loader`` names modules imported (by name, with :mod:`importlib`) before the first lookup, so
a registry low in the import graph can be filled by modules above it without an import cycle;
``"pkg.*"`` imports every module of the package ``pkg``, so adding a plug-in is adding one file
to that folder.
Registering something opts it into that registry's parametrised test matrix.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import pkgutil
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["Registry", "RegistryError", "did_you_mean"]

T = TypeVar("T")


def did_you_mean(name: str, choices: Iterable[str], *, cutoff: float = 0.5) -> str:
    """``" Did you mean: a, b?"`` for up to three close matches of ``name``, else ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=cutoff)
    return f" Did you mean: {', '.join(close)}?" if close else ""


class RegistryError(KeyError, ValueError):
    """An unknown or duplicate name. A KeyError (lookups) and a ValueError (bad input)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Names -> objects of one kind, with aliases, metadata and close-match errors.

    ``kind`` is used in messages ("unknown task 'x'"); ``error`` is the exception class
    raised for unknown names (a subclass of :class:`RegistryError`, or any exception class
    taking one message); ``hint`` is appended to that message (e.g. "Run `actlab ls`.").
    Names are case-insensitive and stored lower-case.
    """

    def __init__(
        self,
        kind: str,
        *,
        loader: str | tuple[str, ...] = (),
        error: type[Exception] = RegistryError,
        hint: str = "",
        cutoff: float = 0.5,
    ) -> None:
        self.kind = kind
        self._loader = (loader,) if isinstance(loader, str) else tuple(loader)
        self._loaded = not self._loader
        self._error = error
        self._hint = hint
        self._cutoff = cutoff
        self._items: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        self._aliases: dict[str, str] = {}

    # ------------------------------------------------------------------ filling
    def add(self, name: str, obj: T, *, aliases: Iterable[str] = (), **meta: Any) -> T:
        """Register ``obj`` under ``name`` (and ``aliases``) with metadata ``meta``."""
        key = name.strip().lower()
        keys = [key, *(a.strip().lower() for a in aliases)]
        for k in keys:
            if not k:
                raise RegistryError(f"{self.kind} names must be non-empty")
            if k in self._items or k in self._aliases:
                raise RegistryError(f"{self.kind} {k!r} is already registered")
        self._items[key] = obj
        self._meta[key] = dict(meta)
        for a in keys[1:]:
            self._aliases[a] = key
        return obj

    def register(self, name: str, *, aliases: Iterable[str] = (), **meta: Any) -> Callable[[T], T]:
        """Decorator form of :meth:`add`; returns the object unchanged."""

        def deco(obj: T) -> T:
            return self.add(name, obj, aliases=aliases, **meta)

        return deco

    def remove(self, name: str) -> None:
        """Forget ``name`` and its aliases (tests and interactive sessions)."""
        key = self.resolve(name)
        del self._items[key], self._meta[key]
        for a in [a for a, k in self._aliases.items() if k == key]:
            del self._aliases[a]

    # ------------------------------------------------------------------ lookups
    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for mod in self._loader:
                if mod.endswith(".*"):
                    pkg = importlib.import_module(mod[:-2])
                    for info in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + "."):
                        importlib.import_module(info.name)
                else:
                    importlib.import_module(mod)

    def resolve(self, name: str) -> str:
        """The registered key of ``name`` or one of its aliases; the close-match error else."""
        self._load()
        if not isinstance(name, str):
            raise self._error(f"{self.kind} name must be a string, got {type(name).__name__}")
        key = name.strip().lower()
        key = self._aliases.get(key, key)
        if key not in self._items:
            raise self._error(self.unknown_message(name))
        return key

    def unknown_message(self, name: str) -> str:
        """The one-line message for an unknown ``name``: close matches, else every name."""
        known = sorted(self._items) + sorted(self._aliases)
        hint = did_you_mean(name.strip().lower(), known, cutoff=self._cutoff)
        if not hint:
            hint = f" Available: {', '.join(sorted(self._items))}."
        tail = f" {self._hint}" if self._hint else ""
        shown = repr(name) if len(name) <= 80 else repr(name[:77] + "...")
        return f"unknown {self.kind} {shown}.{hint}{tail}"

    def get(self, name: str) -> T:
        """The object registered under ``name`` (or an alias)."""
        return self._items[self.resolve(name)]

    def meta(self, name: str) -> dict[str, Any]:
        """The metadata given at registration (a copy)."""
        return dict(self._meta[self.resolve(name)])

    def names(self, pattern: str = "*", **where: Any) -> list[str]:
        """Sorted names matching the glob ``pattern`` whose metadata equal ``where``."""
        self._load()
        pat = pattern.lower()
        return sorted(
            k
            for k, m in self._meta.items()
            if fnmatch.fnmatch(k, pat) and all(m.get(f) == v for f, v in where.items())
        )

    def aliases(self) -> dict[str, str]:
        """alias -> registered name (a copy)."""
        self._load()
        return dict(self._aliases)

    def items(self) -> list[tuple[str, T]]:
        """(name, object) pairs in name order."""
        self._load()
        return sorted(self._items.items())

    def __contains__(self, name: object) -> bool:
        self._load()
        if not isinstance(name, str):
            return False
        key = name.strip().lower()
        return key in self._items or key in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load()
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._items)} registered)"
