"""The layer registry: shaped layers filled by a decorator, one factory, canonical specs.

    @register_layer("rmsnorm", kind="norm", formula="x / sqrt(mean(x^2) + eps) * w", paper=...)
    def rmsnorm(num_features: int | None = None, eps: float = 1e-6, affine: bool = True): ...

    create_layer("rmsnorm", num_features=64)             # registered name (or alias)
    create_layer("rmsnorm(eps=1e-5)", num_features=64)   # call string: keyword literals only
    create_layer(MyNorm, num_features=64)                # a class or any callable factory
    create_layer("rmsnorm")                              # lazily sized from the first input

A layer's keyword arguments are of two sorts. *Slot arguments* are what a model passes at a
site; they depend on the layer's ``kind``:

    norm        num_features                     feature axis: last, or 1 (layout="first")
    mlp         in_features, hidden_features, out_features, act_layer, drop, bias
    attn_score  (none)   forward(scores (B, h, Nq, Nk), mask (Nq, Nk) bool or None)
    act         (none)   an activation that is not elementwise, (..., D) -> (..., D) over the
                         last axis (PolyNorm); activation slots and ``act=`` accept its spec
    basic       anything (ignored by identity)

*Parameters* are everything else (``eps``, ``act``, ...); a call string may set parameters but
not slot arguments (the model decides those). Call strings are parsed by
:func:`actlab.registry.parse_spec` (literals only, nothing evaluated). Registering a layer opts
it into the test matrix (tests/layers/test_layer_matrix.py).

Lazy sizing (where a slot argument is left out): norms use :class:`torch.nn.modules.lazy.
LazyModuleMixin` with ``UninitializedParameter`` and ``cls_to_become`` set to the eager torch
class, the way ``nn.LazyLinear`` becomes ``nn.Linear``; MLP blocks use ``nn.LazyLinear`` for
their input projection. So parameter names are those of the eager layer, ``.to()`` works before
the first input, and a ``state_dict`` loads into an unsized instance.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from actlab.registry import (
    ActivationSpecError,
    ParamRule,
    Registry,
    RegistryError,
    canonical_spec,
    create_activation,
    parse_spec,
)

__all__ = [
    "KINDS",
    "LAYERS",
    "LayerInfo",
    "LayerSpec",
    "LayerSpecError",
    "act_module",
    "canonical_layer_spec",
    "check_flag",
    "create_layer",
    "example_slot_args",
    "get_layer_info",
    "list_layers",
    "register_layer",
]

# the slot arguments a model passes, per kind (see the module docstring)
KINDS: dict[str, tuple[str, ...]] = {
    "norm": ("num_features",),
    "mlp": ("in_features", "hidden_features", "out_features", "act_layer", "drop", "bias"),
    "attn_score": (),
    "act": (),
    "basic": (),
}

LayerSpec = str | type | Callable[..., nn.Module]


class LayerSpecError(RegistryError):
    """A layer spec that names no registered layer, cannot be parsed, or has a bad value."""


@dataclass(frozen=True)
class LayerInfo:
    """What the registry knows about one layer: its factory, kind, parameters and paper."""

    name: str
    factory: Callable[..., nn.Module]
    kind: str
    params: dict[str, Any] = field(default_factory=dict)  # parameter -> default
    lazy: tuple[str, ...] = ()  # slot arguments that may be left out (sized from the input)
    layout: str = "last"  # where a norm's feature axis is: "last" or "first" (dim 1)
    formula: str = ""
    paper: str = ""
    # reference(module, x, mask) -> float64 output: an independent plain formula that the
    # layer test matrix checks the layer against (the built-in layers' live in the test file)
    reference: Callable[..., Tensor] | None = None


LAYERS: Registry[LayerInfo] = Registry(
    "layer", loader="actlab.layers.*", error=LayerSpecError, hint="See actlab.layers.list_layers()."
)


def register_layer(
    name: str,
    *,
    kind: str,
    formula: str = "",
    paper: str = "",
    lazy: tuple[str, ...] = (),
    layout: str = "last",
    aliases: tuple[str, ...] = (),
    reference: Callable[..., Tensor] | None = None,
) -> Callable[[Any], Any]:
    """Decorator registering a layer class or factory function under ``name``.

    Its keyword parameters other than the slot arguments of ``kind`` (with defaults) become
    the layer's parameters, settable from a call string.
    """
    if kind not in KINDS:
        raise ValueError(f"layer kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if layout not in ("last", "first"):
        raise ValueError(f"layout must be 'last' or 'first', got {layout!r}")

    def deco(obj: Any) -> Any:
        sig = inspect.signature(obj)
        params = {
            p.name: p.default
            for p in sig.parameters.values()
            if p.name not in KINDS[kind]
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and p.default is not p.empty
        }
        info = LayerInfo(
            name.lower(), obj, kind, params, tuple(lazy), layout, formula, paper, reference
        )
        LAYERS.add(name, info, aliases=aliases, kind=kind, layout=layout)
        return obj

    return deco


def get_layer_info(name: str) -> LayerInfo:
    """The :class:`LayerInfo` of a registered name or alias (case-insensitive)."""
    return LAYERS.get(name)


def list_layers(pattern: str = "*", *, kind: str | None = None) -> list[str]:
    """Sorted registered layer names matching a glob ``pattern`` (and ``kind`` if given)."""
    return LAYERS.names(pattern, **({} if kind is None else {"kind": kind}))


def example_slot_args(kind: str) -> dict[str, Any]:
    """Small slot arguments for a layer of ``kind`` (spec checks and the test matrix)."""
    return {
        "norm": {"num_features": 4},
        "mlp": {"in_features": 4, "hidden_features": 8, "out_features": 4},
    }.get(kind, {})


def act_module(spec: Any) -> nn.Module:
    """A fresh activation module for one site: a spec, a class, an instance or a factory.

    Names, call strings and classes go through :func:`actlab.create_activation`; an instance
    is deep-copied (each site owns its learnable parameters); any other callable is called
    with no arguments and must return an ``nn.Module``.
    """
    if isinstance(spec, nn.Module):
        return copy.deepcopy(spec)
    if isinstance(spec, str) and _act_layer_name(spec) is not None:
        return create_layer(spec)  # a shaped activation of the layer registry (kind "act")
    if isinstance(spec, (str, type)):
        return create_activation(spec)
    if callable(spec):
        out = spec()
        if not isinstance(out, nn.Module):
            raise ActivationSpecError(
                f"activation factory {spec!r} returned {type(out).__name__}, not an nn.Module"
            )
        return out
    raise ActivationSpecError(
        f"activation must be a spec string, class, module or factory, got {type(spec).__name__}"
    )


def check_flag(layer: str, key: str, value: Any) -> bool:
    """``value`` if it is True or False, else a one-line error naming the layer and the
    argument: a switch such as ``fused`` or ``series`` given as "no" or 0 would otherwise be
    taken by its truth value (a layer spec string already checks its switches)."""
    if not isinstance(value, bool):
        raise ValueError(f"{layer}: {key} must be True or False, got {value!r}")
    return value


def _act_layer_name(spec: str) -> str | None:
    """The registered name of ``spec`` if it names a layer of kind ``act``, else None."""
    try:
        name, _ = parse_spec(spec)
    except ValueError:
        return None
    if name not in LAYERS:
        return None
    info = LAYERS.get(name)
    return info.name if info.kind == "act" else None


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return (lines[0] if lines else type(e).__name__)[:300]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _parse(spec: str) -> tuple[LayerInfo, dict[str, Any]]:
    try:
        name, kwargs = parse_spec(spec)
    except ActivationSpecError as e:
        msg = str(e).replace("activation spec", "layer spec").replace("crrelu(", "rmsnorm(")
        raise LayerSpecError(msg.replace("eps=0.02", "eps=1e-05")) from None
    info = get_layer_info(name)
    slot = [k for k in kwargs if k in KINDS[info.kind]]
    if slot:
        raise LayerSpecError(
            f"layer spec {_short(spec)}: {', '.join(slot)} is set by the model, not the spec"
        )
    unknown = sorted(set(kwargs) - set(info.params))
    if unknown:
        raise LayerSpecError(
            f"layer {info.name} has no parameter {', '.join(map(repr, unknown))}; "
            f"its parameters are: {', '.join(info.params) or '(none)'}"
        )
    return info, {k: _check_param(info, k, v) for k, v in kwargs.items()}


def _check_param(info: LayerInfo, key: str, value: Any) -> Any:
    default = info.params[key]
    kind = (
        "bool"
        if isinstance(default, bool)
        else "int"
        if isinstance(default, int)
        else "float"
        if isinstance(default, float)
        else "str"
        if isinstance(default, str)
        else "any"
    )
    try:
        return ParamRule(kind, optional=default is None).apply(info.name, key, value)
    except (TypeError, ValueError) as e:
        raise LayerSpecError(_first_line(e)) from None


def create_layer(spec: LayerSpec, **slot_args: Any) -> nn.Module:
    """Build a layer from a registered name, a call string, a class or a callable factory.

    ``slot_args`` are the model's arguments for this site (``num_features=64``; see the module
    docstring); a registered layer may be given fewer when it sizes itself lazily. A class or
    factory that takes a norm's size positionally only (``nn.LayerNorm``, as timm calls its
    ``norm_layer``) is called with the size.
    """
    if isinstance(spec, nn.Module):
        raise LayerSpecError(
            f"a layer slot needs a name, call string, class or factory, not the instance "
            f"{type(spec).__name__}: each site builds its own (use functools.partial)"
        )
    if isinstance(spec, str):
        info, kwargs = _parse(spec)
        factory: Callable[..., nn.Module] = info.factory
        label = _short(spec)
    elif callable(spec):
        factory, kwargs, label = spec, {}, getattr(spec, "__name__", repr(spec))
    else:
        raise LayerSpecError(
            f"layer spec must be a str, class or factory, got {type(spec).__name__}"
        )
    try:
        try:
            out = factory(**slot_args, **kwargs)
        except TypeError:
            if isinstance(spec, str) or list(slot_args) != ["num_features"]:
                raise
            out = factory(slot_args["num_features"])  # timm-style: nn.LayerNorm(dim)
    except LayerSpecError:
        raise
    except Exception as e:  # noqa: BLE001 -- any construction error is the spec's fault
        raise LayerSpecError(f"cannot build layer {label}: {_first_line(e)}") from None
    if not isinstance(out, nn.Module):
        raise LayerSpecError(f"layer factory {label} returned {type(out).__name__}, not a module")
    return out


def _format(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        raise LayerSpecError(f"non-finite value {value!r} cannot be written in a layer spec")
    if isinstance(value, (list, tuple)):
        inner = ", ".join(_format(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    raise LayerSpecError(f"value {_short(value)} cannot be written in a layer spec")


def _canonical_act(spec: str) -> str:
    return canonical_layer_spec(spec) if _act_layer_name(spec) else canonical_spec(spec)


def canonical_layer_spec(spec: str) -> str:
    """The one text of every layer spec equivalent to ``spec``.

    The registry name (aliases resolved), then the parameters that differ from their defaults
    (numbers normalised to the default's type), sorted. The spec is built once on small slot
    arguments (:func:`example_slot_args`), so bad values fail here with one line.
    """
    if not isinstance(spec, str):
        raise LayerSpecError(f"a layer spec must be a str, got {type(spec).__name__}")
    info, kwargs = _parse(spec)
    create_layer(spec, **example_slot_args(info.kind))
    kwargs = {
        k: _canonical_act(v) if k == "act" and isinstance(v, str) else v for k, v in kwargs.items()
    }
    keep = {
        k: v
        for k, v in kwargs.items()
        if not (type(v) is type(info.params[k]) and v == info.params[k])
    }
    if not keep:
        return info.name
    return f"{info.name}({', '.join(f'{k}={_format(keep[k])}' for k in sorted(keep))})"
