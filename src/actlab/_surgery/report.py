"""The result of :func:`actlab.swap_activations`: one record per replaced site, plus notes."""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["SurgeryError", "SurgeryWarning", "SwapReport", "SwapSite"]


class SurgeryError(RuntimeError):
    """Surgery could not replace every requested activation (or found none to replace)."""


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
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"swap_activations: {len(self.sites)} site(s) replaced", title_justify="left")
        for col in ("path", "old class", "old kind", "new"):
            t.add_column(col, overflow="fold")
        for s in self.sites:
            t.add_row(s.path or "<root>", s.old_class, s.old_kind, s.new_spec)
        buf = io.StringIO()
        console = Console(file=buf, width=width, color_system=None, highlight=False)
        console.print(t)
        for line in self._summary_lines():
            console.print(line, markup=False)
        return "\n".join(line.rstrip() for line in buf.getvalue().rstrip().splitlines())

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
