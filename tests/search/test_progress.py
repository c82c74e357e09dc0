"""The progress display: plain lines off a TTY, an in-place bar on one, --verbose lines."""

from __future__ import annotations

import io
import math

from actlab.search import Budget, SearchProgress
from actlab.search._candidate import EvalResult, as_candidate
from actlab.search._loop import SearchEvent


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _events() -> list[SearchEvent]:
    c = as_candidate("gelu(x)")
    ok = EvalResult("ok", "done", "ok", quality=0.9, units=1.0)
    shape = EvalResult.rejected("shape", "growth: |f| grows like x^3.00")
    checks = EvalResult.rejected("checks", "numerics: non-finite")
    out, units = [], 0.0
    for i, r in enumerate([ok, shape, shape, checks, ok]):
        units += r.units
        out.append(SearchEvent(i, c, r, units, 0.9, i + 1, elapsed=10.0 * (i + 1)))
    return out


def test_not_a_tty_gives_plain_lines_at_an_interval_and_at_the_end() -> None:
    out, clock = io.StringIO(), Clock()
    p = SearchProgress(Budget(units=10), stream=out, interval=15.0, clock=clock)
    assert not p.tty  # StringIO is not a terminal
    for ev in _events():
        clock.t += 5.0
        p(ev)
    p.close()
    text = out.getvalue()
    assert "\x1b" not in text and "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 3  # at 5 s, at 20 s (interval 15 s), and the closing line
    assert lines[-1].startswith(" 20% 2/10 units | 5 trials 0.20/s")
    assert "rejected shape 2, checks 1" in lines[-1] and lines[-1].endswith("best 0.9000")


def test_verbose_adds_one_line_per_evaluation() -> None:
    out = io.StringIO()
    p = SearchProgress(Budget(seconds=100), stream=out, verbose=True, interval=math.inf)
    for ev in _events():
        p(ev)
    p.close()
    lines = out.getvalue().splitlines()
    evals = [ln for ln in lines if ln.startswith("#")]
    assert len(evals) == 5 and "rejected at shape: growth" in evals[1]
    assert evals[0].startswith("#0 L0 0.9000")
    assert lines[-1].startswith(" 50% 50s/1.7m")  # time budget: the event's search time


def test_tty_redraws_one_line_in_place() -> None:
    out, clock = io.StringIO(), Clock()
    p = SearchProgress(Budget(units=10), stream=out, tty=True, clock=clock)
    for ev in _events():
        clock.t += 1.0
        p(ev)
    p.close()
    text = out.getvalue()
    assert text.count("\r\x1b[2K[") == 6 and text.endswith("\n") and text.count("\n") == 1
    assert "[####----------------]  20% 2/10 units" in text


def test_nothing_is_shown_when_nothing_ran() -> None:
    out = io.StringIO()
    SearchProgress(Budget(units=10), stream=out).close()
    assert out.getvalue() == ""
