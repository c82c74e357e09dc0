"""Optimiser helpers that respect each activation's weight-decay option.

``param_groups(model, weight_decay)`` returns two AdamW/SGD parameter groups: parameters that
take weight decay and those that do not. A parameter is excluded when it belongs (directly)
to a module whose ``weight_decay`` attribute is False (e.g. ``crrelu(weight_decay=False)``);
optionally biases and normalisation weights (1-D parameters) are excluded too.
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["param_groups"]


def param_groups(
    model: nn.Module, weight_decay: float, *, exclude_1d: bool = False
) -> list[dict[str, Any]]:
    """Split ``model``'s trainable parameters into a decayed and a non-decayed group.

    Each group also carries ``names`` (list of parameter paths) for logging; optimisers
    ignore unknown keys. Empty groups are dropped.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    decay_names: list[str] = []
    no_decay_names: list[str] = []
    seen: set[int] = set()
    for mod_name, mod in model.named_modules():
        for p_name, p in mod.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            skip = getattr(mod, "weight_decay", True) is False or (exclude_1d and p.ndim <= 1)
            (no_decay if skip else decay).append(p)
            (no_decay_names if skip else decay_names).append(full)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "names": decay_names},
        {"params": no_decay, "weight_decay": 0.0, "names": no_decay_names},
    ]
    return [g for g in groups if g["params"]]
