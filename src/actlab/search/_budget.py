"""The budget of a search: evaluation units, wall-clock time, or both.

    parse_budget("200")   -> Budget(units=200)         200 evaluations at the cheapest level
    parse_budget("10m")   -> Budget(seconds=600)       also "90s", "1h", "1h30m", "2.5h"

One *unit* is one training run at the cheapest funnel level; a funnel promotion to a level
whose budget is k times larger costs k units, a candidate stopped by the quality floor costs
the fraction it trained, and the cheap stages (checks, cost filter) cost no units. They do
take time, so a units budget also caps the study at :data:`TRIALS_PER_UNIT` trials per unit
(:meth:`Budget.max_trials`): a search space whose candidates are all rejected before
training still ends. The time of a study is stored with it, so a resumed search continues
its remaining time. Budgets are bounded: at most :data:`MAX_UNITS` units and
:data:`MAX_SECONDS` seconds.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["MAX_SECONDS", "MAX_UNITS", "TRIALS_PER_UNIT", "Budget", "parse_budget"]

TRIALS_PER_UNIT = 20  # trials (rejected ones included) a units budget allows per unit
MAX_UNITS = 1e6
MAX_SECONDS = 30 * 24 * 3600.0  # 30 days

_TIME = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


@dataclass(frozen=True)
class Budget:
    """Stop after ``units`` evaluation units or ``seconds`` of search time (whichever first)."""

    units: float | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.units is None and self.seconds is None:
            raise ValueError("a budget needs evaluation units or a time, e.g. 200 or 10m")
        for name, v, cap in (
            ("units", self.units, MAX_UNITS),
            ("seconds", self.seconds, MAX_SECONDS),
        ):
            if v is not None and not (math.isfinite(v) and v > 0):
                raise ValueError(f"budget {name} must be a finite number > 0, got {v!r}")
            if v is not None and v > cap:
                raise ValueError(
                    f"budget {name} {v:g} is more than the maximum {cap:g}; "
                    "split the search into sessions of the same --study"
                )

    def max_trials(self) -> int | None:
        """The most trials a units budget allows (:data:`TRIALS_PER_UNIT` per unit), or None."""
        if self.units is None:
            return None
        return max(1, math.ceil(self.units * TRIALS_PER_UNIT - 1e-9))

    def exhausted(self, units: float, seconds: float) -> bool:
        """Whether ``units`` used (or in flight) and ``seconds`` elapsed reach the budget."""
        return (self.units is not None and units >= self.units - 1e-9) or (
            self.seconds is not None and seconds >= self.seconds
        )

    def __str__(self) -> str:
        parts = []
        if self.units is not None:
            parts.append(f"{self.units:g} evaluations")
        if self.seconds is not None:
            parts.append(f"{self.seconds:g} s")
        return " or ".join(parts)


def parse_budget(text: str | int | float | Budget) -> Budget:
    """A :class:`Budget` from ``200`` (evaluations) or a time such as ``10m``, ``1h30m``."""
    if isinstance(text, Budget):
        return text
    if isinstance(text, bool):
        raise ValueError("a budget is a number of evaluations or a time, not a bool")
    if isinstance(text, (int, float)):
        try:
            return Budget(units=float(text))
        except OverflowError:
            raise ValueError(f"budget {text!r} is too large") from None
    s = str(text).strip().lower().replace(" ", "")
    try:
        units = float(s)
    except ValueError:
        pass
    else:  # a number: its own error (not positive, not finite, too large) if any
        return Budget(units=units)
    m = _TIME.fullmatch(s)
    if not s or m is None or not any(m.groups()):
        raise ValueError(
            f"budget {text!r} is neither a number of evaluations (e.g. 200) nor a time "
            "(e.g. 90s, 10m, 1h, 1h30m)"
        )
    h, mi, se = (float(g) if g else 0.0 for g in m.groups())
    return Budget(seconds=h * 3600 + mi * 60 + se)
