"""Progress of a running search: budget spent, trials/s, rejections by reason, best so far.

    progress = SearchProgress(budget, stream=sys.stderr)      # TTY detected from the stream
    run_search(..., on_result=progress)
    progress.close()

On a terminal one status line is redrawn in place (carriage return + erase line) at most
``redraw`` times a second:

    [########------------]  41% 3.3m/8m | 212 trials 1.07/s | rejected shape 31 | best 0.9722

Elsewhere (a log file, CI, a pipe) the same status, without bar or control codes, is a plain
line every ``interval`` seconds and once at the end. With ``verbose=True`` every evaluation
also gets its own line (formula, level, quality or the stage and reason of its rejection).
The fraction spent is that of the units budget, or of the time budget for a time budget
(whichever is further along when both are given); search time includes the resumed study's
earlier sessions when the event carries it.
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter
from typing import Any, TextIO

__all__ = ["SearchProgress"]

BAR = 20
_CLEAR = "\r\x1b[2K"


def _minutes(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.2f}h"


class SearchProgress:
    """``on_result`` callback of :func:`~actlab.search.run_search` that shows progress."""

    def __init__(
        self,
        budget: Any,
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
        verbose: bool = False,
        interval: float = 10.0,
        redraw: float = 4.0,
        clock: Any = time.monotonic,
    ) -> None:
        self.budget, self.stream = budget, stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty()) if tty is None and callable(isatty) else bool(tty)
        self.verbose, self.interval, self.redraw, self.clock = verbose, interval, redraw, clock
        self.t0 = clock()
        self.trials = 0
        self.units = 0.0
        self.best = math.nan
        self.elapsed = 0.0
        self.rejections: Counter[str] = Counter()
        self._last = -math.inf  # when the status was last shown
        self._drawn = False

    # ------------------------------------------------------------------ state
    def fraction(self) -> float:
        """Share of the budget spent (0..1)."""
        parts = [0.0]
        if getattr(self.budget, "units", None):
            parts.append(self.units / self.budget.units)
        if getattr(self.budget, "seconds", None):
            parts.append(self.elapsed / self.budget.seconds)
        return min(1.0, max(parts))

    def status(self) -> str:
        """The one-line status (no control codes)."""
        now = self.clock() - self.t0
        rate = self.trials / now if now > 0 else 0.0
        spent = []
        if getattr(self.budget, "units", None):
            spent.append(f"{self.units:.0f}/{self.budget.units:g} units")
        if getattr(self.budget, "seconds", None):
            spent.append(f"{_minutes(self.elapsed)}/{_minutes(self.budget.seconds)}")
        rej = ", ".join(f"{k} {n}" for k, n in self.rejections.most_common(4))
        best = "-" if math.isnan(self.best) else f"{self.best:.4f}"
        return (
            f"{100 * self.fraction():3.0f}% {' '.join(spent)} | {self.trials} trials "
            f"{rate:.2f}/s | rejected {rej or 'none'} | best {best}"
        )

    # ------------------------------------------------------------------ events
    def __call__(self, ev: Any) -> None:
        res = ev.result
        self.trials += 1
        self.units = float(ev.units)
        self.best = float(ev.best)
        el = getattr(ev, "elapsed", math.nan)
        self.elapsed = float(el) if math.isfinite(el) else self.clock() - self.t0
        if not res.ok:
            self.rejections[res.stage] += 1
        if self.verbose:
            self._line(self._evaluation(ev))
        now = self.clock()
        if self.tty and now - self._last >= 1.0 / self.redraw:
            self._draw()
            self._last = now
        elif not self.tty and now - self._last >= self.interval:
            self._line(self.status())
            self._last = now

    def close(self) -> None:
        """Show the final status (a plain line; the bar line is finished with a newline);
        nothing when no evaluation ran (a finished study only re-read)."""
        if self.trials == 0:
            return
        if self.tty:
            self._draw()
            self.stream.write("\n")
            self._drawn = False
        else:
            self._line(self.status())
        self.stream.flush()

    # ------------------------------------------------------------------ output
    def _evaluation(self, ev: Any) -> str:
        r, c = ev.result, ev.candidate
        f = c.formula if len(c.formula) <= 70 else c.formula[:67] + "..."
        if r.ok:
            cost = f" {r.cost:.1f}x" if r.cost == r.cost else ""
            return f"#{ev.number} L{c.level} {r.quality:.4f}{cost}  {f}  ({c.origin})"
        why = r.reason if len(r.reason) <= 80 else r.reason[:77] + "..."
        return f"#{ev.number} L{c.level} rejected at {r.stage}: {why}  {f}"

    def _line(self, text: str) -> None:
        if self.tty and self._drawn:
            self.stream.write(_CLEAR)
            self._drawn = False
        self.stream.write(text + "\n")
        self.stream.flush()
        if self.tty:
            self._draw()

    def _draw(self) -> None:
        done = int(round(BAR * self.fraction()))
        self.stream.write(f"{_CLEAR}[{'#' * done}{'-' * (BAR - done)}] {self.status()}")
        self.stream.flush()
        self._drawn = True
