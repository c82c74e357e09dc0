"""``actlab probe``: argument errors, and a short real run on MiniLM writing the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from actlab.cli import main


def test_probe_cli_argument_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["probe", "--out", str(tmp_path / "x")]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["probe", "minilm", "--probes", "sparsity,nope", "--out", str(tmp_path / "y")]) == 2
    assert "unknown probe 'nope'" in capsys.readouterr().err
    assert main(["probe", "minilm", "--text", str(tmp_path / "missing.txt")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.realmodel
def test_probe_cli_minilm_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "t.txt"
    text.write_text(
        "To be, or not to be: that is the question.\nThe rest is silence.\n"
        "Brevity is the soul of wit.\n",
        encoding="utf-8",
    )
    out = tmp_path / "rep"
    assert main(["probe", "minilm", "--text", str(text), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "attention-entropy bands" in printed and "massive activations" in printed
    rows = [json.loads(line) for line in (out / "summary.jsonl").read_text().splitlines()]
    assert {r["probe"] for r in rows} == {"sparsity", "distribution", "massive", "attention"}
    assert sum(1 for r in rows if r["probe"] == "attention") == 6 * 12
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64") >= 4 and (out / "fig00.png").exists()
