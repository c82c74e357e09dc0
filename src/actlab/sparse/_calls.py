"""Calls into a Hugging Face causal LM that differ between model classes and versions.

``forward_logits(model, ids, keep)`` runs one forward that computes the LM head on the last
``keep`` positions only (``logits_to_keep`` where the model takes it: the head is ~21% of
SmolLM2-135M's per-token work, 63% of Gemma-3-270M's, so scoring half a window this way
saves a tenth to a third of a forward), optionally with a KV cache; ``cache_of(out)`` is the
cache a forward returned, under either of its names.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

__all__ = ["cache_of", "forward_logits"]

_ACCEPTS: dict[tuple[type, str], bool] = {}


def _takes(model: nn.Module, name: str) -> bool:
    """Whether ``model.forward`` has a parameter ``name`` (cached per class)."""
    key = (type(model), name)
    if key not in _ACCEPTS:
        try:
            _ACCEPTS[key] = name in inspect.signature(model.forward).parameters
        except (TypeError, ValueError):
            _ACCEPTS[key] = False
    return _ACCEPTS[key]


def forward_logits(model: nn.Module, ids: torch.Tensor, keep: int, cache: Any = None) -> Any:
    """One forward returning the logits of the last ``keep`` positions (and the cache)."""
    kwargs: dict[str, Any] = {"input_ids": ids, "use_cache": cache is not None}
    if _takes(model, "logits_to_keep"):
        kwargs["logits_to_keep"] = keep
    if cache is not None and cache is not True:
        kwargs["cache" if _takes(model, "cache") else "past_key_values"] = cache
    return model(**kwargs)


def cache_of(out: Any) -> Any:
    """The KV cache a forward returned (``cache`` or ``past_key_values``), or None."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)
