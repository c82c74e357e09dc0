"""One activation instance per site: the shared helper of every reference model."""

from __future__ import annotations

import copy

from torch import nn

from actlab.registry import ActivationSpec, create_activation

__all__ = ["make_act"]


def make_act(spec: ActivationSpec) -> nn.Module:
    """A fresh activation module for one site of a model.

    Names, call strings and classes go through :func:`actlab.create_activation`; an instance
    is deep-copied, so that every site (e.g. each MLP block) owns its learnable parameters.
    """
    if isinstance(spec, nn.Module):
        return copy.deepcopy(spec)
    return create_activation(spec)
