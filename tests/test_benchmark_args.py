"""The benchmark scripts this issue added or extended refuse bad arguments in one line (no
traceback) before any timing or compiling starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize(
    "script,args,says",
    [
        ("bench_layers.py", ["--groups", "spaces,nope"], "unknown group nope"),
        ("bench_layers.py", ["--widths", "64,0", "--groups", "width"], "--widths takes"),
        ("vml_first_call.py", ["--runs", "0"], "--runs must be >= 1"),
        ("vml_first_call.py", ["--op", "sin"], "--op takes tanh or erf"),
    ],
)
def test_bad_arguments_give_one_line(script: str, args: list[str], says: str) -> None:
    run = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    err = run.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert says in err
