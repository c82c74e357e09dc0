"""Surgery results and errors: :class:`ReplacementReport` (:func:`replace_modules`) and
:class:`SwapReport` (:func:`swap_activations`), one record per replaced site, plus notes."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

__all__ = [
    "Replacement",
    "ReplacementReport",
    "SurgeryError",
    "SurgeryInputError",
    "SurgeryWarning",
    "SwapReport",
    "SwapSite",
]


class SurgeryError(RuntimeError, ValueError):
    """Surgery could not replace every requested module (or found none to replace).

    A ``RuntimeError`` (as always) and a ``ValueError`` (a problem the caller can fix).
    """


class SurgeryInputError(TypeError, ValueError):
    """A bad argument to surgery (not a module, a bad ``match``/``build``/``where``)."""


class SurgeryWarning(UserWarning):
    """A verification problem that ``strict=False`` turned from an error into a warning."""


@dataclass(frozen=True)
class SwapSite:
    """One replaced module: where it was, what it was, and what replaced it."""

    path: str
    old_class: str
    old_kind: str
    new_spec: str
    new_repr: str


@dataclass
class SwapReport:
    """Every site :func:`actlab.swap_activations` changed, and what it noticed.

    ``found`` counts the activation kinds present in the scope before the swap;
    ``unmatched`` lists mapping keys that matched no site; ``config`` records the
    ``config.hidden_act``-style attributes that were rewritten (``{attr: [old, new]}``);
    ``warnings`` holds verification problems reported instead of raised (``strict=False``)
    and ``notes`` anything else worth knowing (for example a config left unchanged).
    """

    sites: list[SwapSite] = field(default_factory=list)
    found: dict[str, int] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)
    config: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sites)

    def counts(self) -> dict[str, int]:
        """Number of replaced sites per old kind, e.g. ``{"gelu": 6}``."""
        return dict(Counter(s.old_kind for s in self.sites))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable form."""
        return {
            "sites": [asdict(s) for s in self.sites],
            "counts": self.counts(),
            "found": dict(self.found),
            "unmatched": list(self.unmatched),
            "config": {k: list(v) for k, v in self.config.items()},
            "warnings": list(self.warnings),
            "notes": list(self.notes),
        }

    def table(self, *, width: int = 120) -> str:
        """A readable table of the sites followed by the summary lines."""
        rows = [(s.path or "<root>", s.old_class, s.old_kind, s.new_spec) for s in self.sites]
        title = f"swap_activations: {len(self.sites)} site(s) replaced"
        columns = ("path", "old class", "old kind", "new")
        return _rich_table(title, columns, rows, self._summary_lines(), width)

    def _summary_lines(self) -> list[str]:
        lines = []
        if self.counts():
            lines.append("replaced: " + ", ".join(f"{k} x{n}" for k, n in self.counts().items()))
        for kind in self.unmatched:
            found = ", ".join(sorted(self.found)) or "none"
            lines.append(f"no {kind} activation found (found kinds: {found})")
        for attr, (old, new) in self.config.items():
            lines.append(f"config.{attr}: {old!r} -> {new!r}")
        lines += [f"warning: {w}" for w in self.warnings]
        lines += [f"note: {n}" for n in self.notes]
        return lines

    def __str__(self) -> str:
        return self.table()


def _one_line(module: nn.Module, limit: int = 60) -> str:
    """``Class(extra)`` on one line, shortened to ``limit`` characters."""
    extra = " ".join(module.extra_repr().split())
    text = f"{type(module).__name__}({extra})"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _rich_table(
    title: str,
    columns: tuple[str, ...],
    rows: Sequence[tuple[str, ...]],
    lines: list[str],
    width: int,
) -> str:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for col in columns:
        t.add_column(col, overflow="fold")
    for row in rows:
        t.add_row(*row)
    buf = io.StringIO()
    console = Console(file=buf, width=width, color_system=None, highlight=False)
    console.print(t)
    for line in lines:
        console.print(line, markup=False)
    return "\n".join(line.rstrip() for line in buf.getvalue().rstrip().splitlines())


@dataclass(frozen=True)
class Replacement:
    """One replaced slot: its dotted ``path``, the ``old`` module and the ``new`` one."""

    path: str
    old: nn.Module
    new: nn.Module

    def to_dict(self) -> dict[str, str]:
        """Plain JSON-serialisable form (class names and one-line descriptions)."""
        return {
            "path": self.path,
            "old_class": type(self.old).__qualname__,
            "new_class": type(self.new).__qualname__,
            "old": _one_line(self.old),
            "new": _one_line(self.new),
        }


@dataclass
class ReplacementReport:
    """Every slot :func:`actlab.surgery.replace_modules` replaced, and what it noticed.

    ``sites`` lists :class:`Replacement` records in walk order; ``config`` records attributes
    of ``model.config`` that hooks rewrote (``{attr: [old, new]}``); ``warnings`` holds
    problems reported instead of raised (``strict=False``) and ``notes`` anything else worth
    knowing (a shared module split, hooks left on a replaced module, a config left alone).

    Hooks (``on_replaced``) change state through :meth:`setattr`, so that a later failure
    rolls their changes back together with the modules.
    """

    sites: list[Replacement] = field(default_factory=list)
    config: dict[str, list[Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _undo: list[Callable[[], None]] = field(default_factory=list, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.sites)

    @property
    def paths(self) -> list[str]:
        """The replaced paths in walk order."""
        return [s.path for s in self.sites]

    def setattr(self, obj: object, name: str, value: Any) -> None:
        """``setattr(obj, name, value)``, undone if the replacement is rolled back."""
        missing = not hasattr(obj, name)
        old = getattr(obj, name, None)
        setattr(obj, name, value)

        def undo() -> None:
            if missing:
                delattr(obj, name)
            else:
                setattr(obj, name, old)

        self._undo.append(undo)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable form."""
        return {
            "sites": [s.to_dict() for s in self.sites],
            "config": {k: list(v) for k, v in self.config.items()},
            "warnings": list(self.warnings),
            "notes": list(self.notes),
        }

    def table(self, *, width: int = 120) -> str:
        """A readable table of the sites (path, old, new) followed by the summary lines."""
        rows = [(s.path or "<root>", _one_line(s.old), _one_line(s.new)) for s in self.sites]
        lines = [f"config.{a}: {old!r} -> {new!r}" for a, (old, new) in self.config.items()]
        lines += [f"warning: {w}" for w in self.warnings]
        lines += [f"note: {n}" for n in self.notes]
        title = f"replace_modules: {len(self.sites)} site(s) replaced"
        return _rich_table(title, ("path", "old", "new"), rows, lines, width)

    def __str__(self) -> str:
        return self.table()
