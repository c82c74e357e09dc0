"""Models: loaders for the real pretrained models installed offline (see :mod:`.pretrained`)."""

from __future__ import annotations

from actlab.models.pretrained import (
    ModelUnavailableError,
    embed_sentences,
    load_minilm,
    load_smollm2,
)

__all__ = ["ModelUnavailableError", "embed_sentences", "load_minilm", "load_smollm2"]
