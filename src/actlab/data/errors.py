"""Errors raised by the dataset readers; each message says how to fix the problem."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DatasetNotFoundError", "DatasetFormatError", "data_root"]


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are not where the reader looked for them."""


class DatasetFormatError(ValueError):
    """A dataset file exists but is corrupt, truncated or not in the expected format."""


def data_root(name: str, default: str | Path | None = None) -> Path | None:
    """Where to look for dataset ``name`` when the caller gives no directory.

    ``$ACTLAB_DATA_DIR/<name>`` wins when the variable is set; otherwise ``default``.
    """
    env = os.environ.get("ACTLAB_DATA_DIR")
    if env:
        return Path(env).expanduser() / name
    return Path(default) if default is not None else None
