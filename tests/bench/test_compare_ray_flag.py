"""``actlab compare --ray``: checked with the other flags (one line, exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_helpers import compare_main


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--ray", " "], "--ray needs an address"),
        (["--ray", "auto", "--workers", "2"], "drop --workers"),
    ],
)
def test_bad_ray_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    argv = ["relu", "gelu", "--task", "digits-mlp", "--db", str(tmp_path / "r.db"), *extra]
    assert compare_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "r.db").exists()  # checked before anything is written
