"""The report kit: escaping in one place, tables, embedded figures, atomic writes."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from report_helpers import PNG, parse

from actlab.report import Page, escape, write_atomic
from actlab.report.page import CSS, figure_png

HOSTILE = [
    "<script>alert('x')</script>",
    '" onmouseover="alert(1)',
    "' onerror='alert(2)",
    "a & b &amp; c &lt;",
    "</pre></table></section><img src=x>",
    "σ(x)·β — ü 中文 🙂",
    "",
]


def _png() -> bytes:
    from actlab.report.curves import new_figure

    fig = new_figure(2, 2)
    fig.add_subplot().plot([0, 1], [0, 1])
    return figure_png(fig)


def test_escape_is_the_one_text_path() -> None:
    assert (
        escape("<a href=\"x\">'&'</a>") == "&lt;a href=&quot;x&quot;&gt;&#x27;&amp;&#x27;&lt;/a&gt;"
    )
    assert escape(3.5) == "3.5" and escape(None) == "None"


@pytest.mark.parametrize("s", HOSTILE)
def test_hostile_text_stays_text_everywhere(s: str) -> None:
    page = Page(s)
    page.paragraph(s, cls=s).note(s).pre(s).pre(s, code=True)
    page.facts([(s, s)])
    sec = page.section(s)
    sec.table([[s, s]], [s, s], row_classes=[s])
    sec.table([{s: s, "n": 1}])
    sec.figure(_png(), alt=s, note=s)
    html = page.render()
    p = parse(html)
    assert "script" not in p.tags and "x" not in [v for k, v in p.attrs if k == "src"]
    assert set(p.tags) <= {
        "html",
        "head",
        "meta",
        "title",
        "style",
        "body",
        "h1",
        "h2",
        "p",
        "pre",
        "code",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
        "section",
        "img",
    }
    assert {k for k, _ in p.attrs} <= {"lang", "charset", "name", "content", "class", "alt", "src"}
    if s:  # the text round-trips through a parser unchanged
        assert p.text.count(s) >= 9
        assert ("alt", s) in p.attrs and ("class", s) in p.attrs


def test_tables_format_numbers_and_take_dicts() -> None:
    page = Page("t")
    page.table(
        [{"act": "relu", "acc": 0.951234, "n": 3}, {"act": "gelu", "acc": float("nan")}],
        digits=3,
    )
    html = page.render()
    assert "<th>act</th><th>acc</th><th>n</th>" in html
    assert '<td class="num">0.951</td>' in html and '<td class="num">3</td>' in html
    assert '<td class="num">–</td><td></td>' in html  # nan, then the missing key
    page.table([[float("inf"), None, True]], ["a", "b", "c"])
    assert '<td class="num">∞</td><td></td><td>True</td>' in page.render()


def test_figures_embed_png_and_svg_and_nothing_external() -> None:
    png = _png()
    svg = '<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"><rect width="4"/></svg>'
    page = Page("f")
    page.figure(png, "png").figure(svg, "svg")
    srcs = [v for k, v in parse(page.render()).attrs if k == "src"]
    assert len(srcs) == 2 and all(str(s).startswith("data:image/") for s in srcs)
    assert base64.b64decode(str(srcs[0]).split(",", 1)[1]) == png
    assert base64.b64decode(str(srcs[1]).split(",", 1)[1]).decode() == svg
    assert "http" not in CSS and "url(" not in CSS
    with pytest.raises(ValueError, match="neither PNG nor SVG"):
        page.figure(b"GIF89a", "gif")
    with pytest.raises(TypeError, match="matplotlib Figure, PNG bytes or SVG"):
        page.figure(42, "int")


def test_plot_says_why_a_figure_is_missing() -> None:
    def broken() -> None:
        raise RuntimeError("no <data>\nsecond line")

    page = Page("p")
    page.plot(lambda: None, "a", empty="nothing recorded.").plot(broken, "b")
    page.plot(_png, "c", note="a note")
    text = " ".join(parse(page.render()).text)
    assert "nothing recorded." in text and "not drawn: RuntimeError: no <data>" in text
    assert "second line" not in text and "a note" in text


def test_write_is_atomic_and_checks_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = Page("one").write(tmp_path / "r.html")
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")

    # a crash while writing keeps the old page and leaves no temporary file
    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        Page("two").write(out)
    monkeypatch.undo()
    assert "<title>one</title>" in out.read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]
    with pytest.raises(FileNotFoundError, match="does not exist; create it first"):
        Page("x").write(tmp_path / "missing" / "r.html")
    with pytest.raises(ValueError, match="is a folder"):
        write_atomic(tmp_path, "x")
    assert write_atomic(tmp_path / "b.png", PNG).read_bytes() == PNG
    (tmp_path / "plain.txt").write_bytes(PNG)  # the usual permissions, not mkstemp's 0600
    assert (tmp_path / "b.png").stat().st_mode == (tmp_path / "plain.txt").stat().st_mode
