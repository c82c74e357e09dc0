"""Basic layers: ``identity`` (y = x), the empty slot (e.g. no norm in an MLP).

``nn.Identity`` accepts and ignores any arguments, so it fits every slot that may be empty.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from actlab.layers._registry import register_layer

__all__ = ["identity"]


@register_layer("identity", kind="basic", aliases=("none",), formula="y = x")
def identity(**slot_args: Any) -> nn.Module:
    """``nn.Identity()``; slot arguments are ignored."""
    return nn.Identity()
