"""``actlab search`` end to end on the toy curve objective (no training)."""

from __future__ import annotations

from pathlib import Path

import pytest

from actlab.cli import main


def test_search_cli_runs_resumes_and_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, html = tmp_path / "s.db", tmp_path / "r.html"
    args = [
        "search",
        "--task",
        "curve:gelu",
        "--budget",
        "8",
        "--strategy",
        "evolution",
        "--storage",
        str(db),
        "--report",
        str(html),
        "--study",
        "cli",
        "--verbose",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "warm:gelu" in out and "re-evaluating the top 3" in out and html.exists()
    assert "\x1b" not in out and "\r" not in out  # not a TTY: plain lines
    assert "100% 8/8 units" in out  # the closing status line
    assert main(args) == 0  # resume: nothing left to do
    out = capsys.readouterr().out
    assert "warm:" not in out and "stopped: budget" in out


def test_search_cli_bo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "search",
        "--task",
        "curve:x*sigmoid(1.702*x)",
        "--budget",
        "12",
        "--strategy",
        "bo",
        "--form",
        "x*sigmoid(2*x)",
        "--storage",
        str(tmp_path / "b.db"),
        "--no-report",
        "--no-final",
        "--quiet",
    ]
    assert main(args) == 0
    assert "bo:tpe" not in capsys.readouterr().out  # --quiet


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--budget", "ten"], "budget"),
        (["--strategy", "bo"], "--form"),
        (["--floor", "high"], "--floor"),
        (["--top-seeds", "3"], "--funnel"),
    ],
)
def test_search_cli_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], needle: str
) -> None:
    rc = main(["search", "--task", "curve:gelu", "--storage", str(tmp_path / "e.db"), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1
