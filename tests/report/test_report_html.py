"""The HTML report: valid HTML, self-contained, every figure embedded as a PNG."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from report_helpers import check_png_page

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from bench_helpers import compare_main, fake_train  # noqa: E402

from actlab.bench import compare  # noqa: E402
from actlab.report import render_report, write_report  # noqa: E402

_check = check_png_page


def test_report_has_all_sections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTLAB_FAKE_FAIL", "tanh")
    res = compare(["relu", "crrelu", "polyrelu", "tanh"], task="digits-mlp", seeds=3, epochs=3,
                  db=tmp_path / "r.sqlite", train_fn=fake_train)  # fmt: skip
    path = write_report(res, tmp_path / "report.html", title="A <b>test</b> & more")
    p = _check(path.read_text(encoding="utf-8"))
    text = " ".join(p.text)
    # distributions, learning curves, activation curves, trajectories (crrelu)
    assert len(p.images) == 4
    needles = (
        "A <b>test</b> & more",
        "Summary",
        "Learning curves",
        "Activation functions",
        "Learnable-parameter trajectories",
        "fake failure for tanh",
        "p (t)",
    )
    for needle in needles:
        assert needle in text
    assert not (tmp_path / "report.html.tmp").exists()


def test_report_without_history_or_trajectories(tmp_path: Path) -> None:
    res = compare(["relu", "gelu"], task="digits-mlp", seeds=1, db=tmp_path / "r.sqlite",
                  train_fn=fake_train)  # fmt: skip
    for r in res.records:
        r.history, r.trajectories = [], {}
    p = _check(render_report(res))
    assert len(p.images) == 2  # distribution + activation curves
    assert "nothing recorded" in " ".join(p.text)


def test_cli_writes_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp.html"
    argv = ["relu", "gelu", "--task", "digits-mlp", "--seeds", "3", "--db",
            str(tmp_path / "r.sqlite"), "--report", str(out), "--train-fn",
            "bench_helpers:fake_train", "--no-progress"]  # fmt: skip
    assert compare_main(argv) == 0
    stdout = capsys.readouterr().out
    assert "mean ± 95% CI" in stdout and "relu" in stdout and "gelu" in stdout
    assert len(_check(out.read_text(encoding="utf-8")).images) == 3


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["relu", "gleu", "--task", "digits-mlp", "--db", str(tmp_path / "r.sqlite")]
    assert compare_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown activation 'gleu'" in err and "gelu" in err
    assert not (tmp_path / "r.sqlite").exists()  # nothing started
    assert compare_main(["relu", "--task", "digits-mlp", "--seeds", "0,0"]) == 2
    assert "duplicate seeds" in capsys.readouterr().err
