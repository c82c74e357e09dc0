"""The HTML report: valid HTML, self-contained, every figure embedded as a PNG."""

from __future__ import annotations

import base64
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from bench_helpers import compare_main, fake_train  # noqa: E402

from actlab.bench import compare  # noqa: E402
from actlab.report import render_report, write_report  # noqa: E402

VOID = {"meta", "img", "br", "hr", "link", "input"}
PNG = b"\x89PNG\r\n\x1a\n"


class _Checker(HTMLParser):
    """Collects images, external references and checks that tags are balanced."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.images: list[str] = []
        self.external: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src") or "")
        for key in ("src", "href"):
            if a.get(key) and not str(a[key]).startswith("data:"):
                self.external.append(str(a[key]))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}> after {self.stack}"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _check(html: str) -> _Checker:
    assert html.startswith("<!DOCTYPE html>")
    p = _Checker()
    p.feed(html)
    p.close()
    assert p.stack == [], f"unclosed tags: {p.stack}"
    assert p.external == [], "the report must not load anything"
    for src in p.images:
        head, _, data = src.partition(",")
        assert head == "data:image/png;base64"
        assert base64.b64decode(data, validate=True).startswith(PNG)
    return p


def test_report_has_all_sections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTLAB_FAKE_FAIL", "tanh")
    res = compare(["relu", "crrelu", "polyrelu", "tanh"], task="digits-mlp", seeds=3, epochs=3,
                  db=tmp_path / "r.sqlite", train_fn=fake_train)  # fmt: skip
    path = write_report(res, tmp_path / "report.html", title="A <b>test</b> & more")
    p = _check(path.read_text(encoding="utf-8"))
    text = " ".join(p.text)
    # distributions, learning curves, activation curves, trajectories (crrelu)
    assert len(p.images) == 4
    for needle in ("A <b>test</b> & more", "Summary", "Learning curves", "Activation functions",
                   "Learnable-parameter trajectories", "fake failure for tanh", "p (t)"):  # fmt: skip
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
