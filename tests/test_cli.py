"""The console script, run as a user would: exit codes, one-line errors, outputs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from actlab.cli import SUBCOMMANDS

EXE = shutil.which("actlab", path=str(Path(sys.executable).parent)) or "actlab"


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([EXE, *args], capture_output=True, text=True, env=env, timeout=600)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def test_help_everywhere() -> None:
    assert "COMMAND" in cli("--help").stdout
    for name in SUBCOMMANDS:
        assert "usage: actlab " + name in cli(name, "--help").stdout


def test_ls_lists_the_zoo() -> None:
    out = cli("ls", "--plain").stdout.splitlines()
    names = [line.split("\t")[0] for line in out]
    assert {"crrelu", "eafo", "gelu", "wafbc", "polyrelu"} <= set(names)
    assert len(names) >= 20
    assert cli("ls", "gelu*", "--plain").stdout.count("\n") == 2


def test_show_details() -> None:
    out = cli("show", "crrelu(eps=0.02)").stdout
    assert "max(0, x) + eps" in out and "2405.12954" in out and "0.02" in out


@pytest.mark.parametrize(
    "args, needle",
    [
        (("show", "crelu_"), "Did you mean"),
        (("show", "crrelu(eps=__import__('os'))"), "literal"),
        (("ls", "zzz*"), "no activation matches"),
        (("plot", "gelu", "-o", "/nonexistent/dir/x.png"), "does not exist"),
        (("plot", "gelu", "-o", "x.txt"), ".png"),
    ],
)
def test_errors_are_one_line_without_traceback(args: tuple[str, ...], needle: str) -> None:
    out = cli(*args, check=False)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and needle in out.stderr


def test_plot_writes_png(tmp_path: Path) -> None:
    target = tmp_path / "acts.png"
    cli("plot", "gelu", "crrelu(eps=0.1)", "eafo(base='silu')", "-o", str(target))
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.realmodel
def test_demo_runs_on_real_minilm() -> None:
    out = cli("demo").stdout
    assert "gelu x6" in out
    assert "max |embedding change| = 0.00e+00" in out


def test_database_errors_are_one_line_from_the_console_script(tmp_path: Path) -> None:
    notes = tmp_path / "notes.db"
    notes.write_text("not a database\n")
    out = cli("search", "--task", "curve:gelu", "--no-final", "--storage", str(notes), check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip() == (
        f"actlab search: error: study storage {notes} is not a SQLite database (the file is a "
        "text file); pass a new path with --storage"
    )
    assert notes.read_text() == "not a database\n"


def test_database_errors_reaching_the_boundary_are_one_line_without_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The safety net: a driver error raised after the checks (a disk that fails, a server
    that goes away) is one line, and a password in any URL of the message is masked."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    import actlab._cli.zoo as zoo
    from actlab.cli import main

    errors = [
        OperationalError("INSERT ...", {}, sqlite3.OperationalError("disk I/O error")),
        OperationalError("connect", {}, Exception("postgresql://bob:hunter2@db/x: refused\nmore")),
        sqlite3.DatabaseError("database disk image is malformed"),
        ValueError("cannot reach mysql://root:hunter2@host/db"),
    ]
    for e in errors:

        def boom(args: object, e: Exception = e) -> int:
            raise e

        monkeypatch.setattr(zoo, "run", boom)
        monkeypatch.delenv("ACTLAB_DEBUG", raising=False)
        assert main(["ls"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("actlab ls: error: ") and len(err.strip().splitlines()) == 1
        assert "hunter2" not in err and "Traceback" not in err
    # any other exception is a bug: it keeps its traceback
    monkeypatch.setattr(zoo, "run", lambda args: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(["ls"])
