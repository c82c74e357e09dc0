"""The "Did you mean ...?" hint shared by every lookup that fails on an unknown name."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["did_you_mean"]


def did_you_mean(name: str, choices: Iterable[str], *, cutoff: float = 0.5) -> str:
    """``" Did you mean: a, b?"`` for up to three close matches of ``name``, else ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=cutoff)
    return f" Did you mean: {', '.join(close)}?" if close else ""
