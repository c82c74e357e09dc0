"""A page as an HTML parser sees it: tags, attributes, images, text; tags must balance."""

from __future__ import annotations

import base64
from html.parser import HTMLParser

VOID = {"meta", "img", "br", "hr", "link", "input"}
PNG = b"\x89PNG\r\n\x1a\n"


class Parsed(HTMLParser):
    """Collects tags, attributes, image sources, external references and text."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.images: list[str] = []
        self.external: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        self.attrs += attrs
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


def parse(html: str) -> Parsed:
    """Parse a whole page: a doctype, balanced tags, nothing loaded from outside."""
    assert html.startswith("<!DOCTYPE html>")
    p = Parsed()
    p.feed(html)
    p.close()
    assert p.stack == [], f"unclosed tags: {p.stack}"
    assert p.external == [], "the page must not load anything"
    return p


def check_png_page(html: str) -> Parsed:
    """:func:`parse`, and every image is an embedded PNG."""
    p = parse(html)
    for src in p.images:
        head, _, data = src.partition(",")
        assert head == "data:image/png;base64"
        assert base64.b64decode(data, validate=True).startswith(PNG)
    return p
