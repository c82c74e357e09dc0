"""The report kit: one self-contained HTML page built from sections, tables, figures and text.

    from actlab.report import Page
    page = Page("actlab compare: relu, gelu on digits-mlp")
    page.facts([("task", "digits-mlp"), ("seeds", "0, 1")])
    s = page.section("Summary")
    s.table([{"activation": "relu", "accuracy": 0.9512}], row_classes=["better"])
    s.note("accuracy: higher is better.")
    page.section("Curves").plot(lambda: make_figure(), alt="curves")
    page.write("report.html")

Every piece of text, attribute and class name goes through :func:`escape`, the one place
that turns text into HTML; nothing here takes raw HTML. Figures (a matplotlib Figure, PNG
bytes or SVG text) are embedded as base64 ``data:`` images, so the page loads nothing from
the network and one CSS styles every page. :meth:`Page.write` is atomic: the page goes to a
temporary file in the target folder and is renamed over the target, so a crash leaves the
old page or none, never half of one.
"""

from __future__ import annotations

import base64
import html
import math
import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["CSS", "Page", "Section", "escape", "figure_png", "fmt_num", "write_atomic"]

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1200px;
padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.better{color:#1a7f37;font-weight:600}.worse{color:#c62828;font-weight:600}
.note{color:#555;font-size:.9em;max-width:60em}.failed{color:#c62828}
img{max-width:100%;height:auto;border:1px solid #eee;display:block;margin:.5em 0}
pre{font-size:12px;background:#f7f7f7;padding:.6em;overflow-x:auto}code{font-size:.92em}
"""

_PNG = b"\x89PNG\r\n\x1a\n"
Cell = Any
Row = Sequence[Cell] | Mapping[str, Cell]
_B = TypeVar("_B", bound="_Blocks")


def escape(x: Any) -> str:
    """``str(x)`` as HTML text, safe inside elements and quoted attributes (``<>&"'``)."""
    return html.escape(str(x), quote=True)


def fmt_num(v: float | None, digits: int = 4, *, signed: bool = False) -> str:
    """A number with ``digits`` decimals; ``–`` for missing or nan, ``∞`` for infinity."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def figure_png(fig: Any, dpi: int = 96) -> bytes:
    """PNG bytes of a matplotlib figure."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    The folder must exist. A crash while writing leaves the old file (or none) and no
    temporary file behind.
    """
    out = Path(path)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"report folder {out.parent} does not exist; create it first")
    if out.is_dir():
        raise ValueError(f"{out} is a folder; give a file name such as {out / 'report.html'}")
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    # a unique name in the same folder (so the rename is atomic), opened exclusively; unlike
    # mkstemp it gets the usual permissions (umask), as a page written in place would
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    f = open(tmp, "xb")  # before the try: a failed open created nothing to remove
    try:
        with f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def _cell(v: Cell, digits: int) -> tuple[str, bool]:
    """(text, numeric) of a table cell: floats get ``digits`` decimals, None is empty."""
    if v is None:
        return "", False
    if isinstance(v, bool):
        return str(v), False
    if isinstance(v, float):
        return fmt_num(v, digits), True
    if isinstance(v, int):
        return str(v), True
    return str(v), False


def _image_src(image: Any) -> str:
    """A ``data:`` URL for a matplotlib figure, PNG bytes or SVG text/bytes."""
    if hasattr(image, "savefig"):
        image = figure_png(image)
    if isinstance(image, str):
        image = image.encode("utf-8")
    if not isinstance(image, (bytes, bytearray)):
        raise TypeError(
            f"a figure must be a matplotlib Figure, PNG bytes or SVG, got {image!r:.60}"
        )
    data = bytes(image)
    if data.startswith(_PNG):
        kind = "png"
    elif b"<svg" in data[:1024]:
        kind = "svg+xml"
    else:
        raise ValueError("figure bytes are neither PNG nor SVG")
    return f"data:image/{kind};base64,{base64.b64encode(data).decode('ascii')}"


class _Blocks:
    """Something that holds blocks: paragraphs, tables, figures, preformatted text."""

    def __init__(self) -> None:
        self._parts: list[str | Section] = []

    def paragraph(self: _B, text: Any, *, cls: str = "") -> _B:
        """A paragraph of text (escaped); ``cls`` is its CSS class."""
        attr = f' class="{escape(cls)}"' if cls else ""
        self._parts.append(f"<p{attr}>{escape(text)}</p>")
        return self

    def note(self: _B, text: Any) -> _B:
        """A small grey explanatory paragraph."""
        return self.paragraph(text, cls="note")

    def pre(self: _B, text: Any, *, code: bool = False) -> _B:
        """Preformatted text (a log, a config), as ``<pre>`` or ``<pre><code>``."""
        body = f"<code>{escape(text)}</code>" if code else escape(text)
        self._parts.append(f"<pre>{body}</pre>")
        return self

    def table(
        self: _B,
        rows: Sequence[Row],
        headers: Sequence[Any] | None = None,
        *,
        digits: int = 4,
        row_classes: Sequence[str] | None = None,
    ) -> _B:
        """A table of lists or dicts. Dict rows take their headers from their keys (first
        seen first) unless ``headers`` names them; a missing key is an empty cell. Floats get
        ``digits`` decimals (``–`` for nan); numbers are right-aligned; None is empty."""
        if headers is None and rows and all(isinstance(r, Mapping) for r in rows):
            headers = list(dict.fromkeys(k for r in rows for k in r))  # type: ignore[union-attr]
        head = ""
        if headers is not None:
            head = "<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in headers)
            head += "</tr></thead>"
        body = []
        for i, row in enumerate(rows):
            if isinstance(row, Mapping):
                cells = [row.get(h) for h in headers or ()]
            else:
                cells = list(row)
            tds = []
            for c in cells:
                text, numeric = _cell(c, digits)
                tds.append(
                    f'<td class="num">{escape(text)}</td>'
                    if numeric
                    else f"<td>{escape(text)}</td>"
                )
            cls = row_classes[i] if row_classes and i < len(row_classes) else ""
            attr = f' class="{escape(cls)}"' if cls else ""
            body.append(f"<tr{attr}>{''.join(tds)}</tr>")
        self._parts.append(f"<table>{head}<tbody>{''.join(body)}</tbody></table>")
        return self

    def facts(self: _B, pairs: Sequence[tuple[Any, Any]] | Mapping[Any, Any]) -> _B:
        """A two-column table of (name, value) pairs, the names as row headers."""
        items = pairs.items() if isinstance(pairs, Mapping) else pairs
        rows = "".join(
            f"<tr><th>{escape(k)}</th><td>{escape(_cell(v, 4)[0])}</td></tr>" for k, v in items
        )
        self._parts.append(f'<table class="facts"><tbody>{rows}</tbody></table>')
        return self

    def figure(self: _B, image: Any, alt: str, *, note: str = "") -> _B:
        """An embedded image: a matplotlib Figure, PNG bytes, or SVG (text or bytes)."""
        self._parts.append(f'<img alt="{escape(alt)}" src="{_image_src(image)}">')
        return self.note(note) if note else self

    def plot(
        self: _B,
        make: Callable[[], Any],
        alt: str,
        *,
        note: str = "",
        empty: str = "nothing to plot.",
    ) -> _B:
        """Call ``make()`` and embed the figure it returns; None writes ``empty``. A figure
        that fails says why in the page instead of losing the whole page."""
        try:
            image = make()
            if image is None:
                return self.note(empty)
            src = _image_src(image)
        except Exception as e:  # noqa: BLE001 -- one failed figure must not lose the page
            first = (str(e).strip().splitlines() or [""])[0]
            return self.note(f"not drawn: {type(e).__name__}: {first}")
        self._parts.append(f'<img alt="{escape(alt)}" src="{src}">')
        return self.note(note) if note else self

    def _html(self) -> str:
        return "\n".join(p if isinstance(p, str) else p._render() for p in self._parts)


class Section(_Blocks):
    """A titled part of a page (``<section><h2>``); add blocks to it."""

    def __init__(self, title: str) -> None:
        super().__init__()
        self.title = title

    def _render(self) -> str:
        return f"<section><h2>{escape(self.title)}</h2>\n{self._html()}\n</section>"


class Page(_Blocks):
    """A self-contained HTML page: a title, blocks before the first section, sections."""

    def __init__(self, title: str) -> None:
        super().__init__()
        self.title = title

    def section(self, title: str) -> Section:
        """A new section at the end of the page (returned, to add blocks to)."""
        s = Section(title)
        self._parts.append(s)
        return s

    def render(self) -> str:
        """The page as one HTML string."""
        t = escape(self.title)
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{t}</title><style>{CSS}</style></head>\n<body>\n<h1>{t}</h1>\n"
            f"{self._html()}\n</body></html>\n"
        )

    def write(self, path: str | Path) -> Path:
        """Write the page atomically to ``path`` (its folder must exist); returns the path."""
        return write_atomic(path, self.render())
