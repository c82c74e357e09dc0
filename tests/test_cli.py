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
