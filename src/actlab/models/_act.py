"""One module per site: the shared helpers of every reference model's slots."""

from __future__ import annotations

from typing import Any

from torch import nn

from actlab.layers import (
    LayerSpec,
    LayerSpecError,
    act_module,
    create_layer,
    get_layer_info,
    list_layers,
)
from actlab.registry import parse_spec

__all__ = ["ActLayer", "check_slot_spec", "make_act", "make_layer"]

ActLayer = Any  # an activation spec (name, call string, class), an instance or a factory


def make_act(spec: ActLayer) -> nn.Module:
    """A fresh activation module for one site of a model.

    Names, call strings and classes go through :func:`actlab.create_activation`; an instance
    is deep-copied, so that every site (e.g. each MLP block) owns its learnable parameters; a
    factory is called with no arguments.
    """
    return act_module(spec)


def make_layer(
    spec: LayerSpec, slot: str, kinds: tuple[str, ...], layout: str = "last", **slot_args: Any
) -> nn.Module:
    """The layer of ``slot`` (e.g. ``norm_layer``) at one site; a registered spec must fit it.

    ``kinds`` are the registry kinds the slot takes (``("norm", "basic")``); a norm must have
    the slot's ``layout`` (feature axis last, or first for BatchNorm-style conv nets).
    """
    if isinstance(spec, str):
        check_slot_spec(spec, slot, kinds, layout)
    return create_layer(spec, **slot_args)


def check_slot_spec(spec: str, slot: str, kinds: tuple[str, ...], layout: str = "last") -> None:
    """Raise :class:`LayerSpecError` (one line) if the registered layer of ``spec`` does not fit."""
    try:
        name, _ = parse_spec(spec)
    except ValueError:
        create_layer(spec)  # raises the parser's message, worded for layers
        return
    info = get_layer_info(name)
    fits = [
        n
        for k in kinds
        for n in list_layers(kind=k)
        if k != "norm" or get_layer_info(n).layout == layout
    ]
    if info.name not in fits:
        raise LayerSpecError(
            f"{slot}: {info.name!r} is a layer of kind {info.kind}"
            + (f" (feature axis {info.layout})" if info.kind == "norm" else "")
            + f" and does not fit this slot; choose one of {', '.join(sorted(fits))}"
        )
