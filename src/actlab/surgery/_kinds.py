"""Activation *kinds*: what function an activation module computes, whoever wrote the class.

A kind is a canonical registry name ("gelu", "gelu_tanh", "silu", ...) or, for functions
the registry does not hold, a fixed extra name ("relu6", "quick_gelu", ...). Modules are
recognised without importing their libraries:

- actlab activations by their registry name (``activation_name``);
- ``torch.nn`` activations by class (``nn.GELU`` by its ``approximate`` attribute);
- Hugging Face ``transformers.activations`` and timm ``timm.layers.activations`` (and
  ``activations_me``) classes by module and qualified class name, so models built with
  timm's ``act_layer=`` convention are covered without importing timm;
- a subclass of any of these that does not override ``forward`` as its base's kind.

Each kind also lists the functional ops that compute it (``F.gelu``, ``torch.relu``,
``Tensor.sigmoid``, ...), used to find activations that module surgery cannot reach.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from actlab.registry import activation_aliases, canonical_name, did_you_mean, list_activations
from actlab.surgery._report import SurgeryInputError

__all__ = [
    "EXTRA_KINDS",
    "NOT_WILDCARD",
    "WILDCARD",
    "functional_kind",
    "functional_ops",
    "gelu_kind_of_call",
    "identify_activation",
    "known_kinds",
    "resolve_kind",
]

WILDCARD = "*"
# "*" matches every activation except these (an identity is no nonlinearity to replace).
NOT_WILDCARD = frozenset({"linear"})

_TORCH_KINDS: dict[type[nn.Module], str] = {
    nn.ReLU: "relu",
    nn.ReLU6: "relu6",
    nn.LeakyReLU: "leaky_relu",
    nn.PReLU: "prelu",
    nn.RReLU: "rrelu",
    nn.ELU: "elu",
    nn.CELU: "celu",
    nn.SELU: "selu",
    nn.SiLU: "silu",
    nn.Mish: "mish",
    nn.Softplus: "softplus",
    nn.Hardswish: "hardswish",
    nn.Hardsigmoid: "hardsigmoid",
    nn.Hardtanh: "hardtanh",
    nn.Sigmoid: "sigmoid",
    nn.Tanh: "tanh",
    nn.LogSigmoid: "logsigmoid",
    nn.Softsign: "softsign",
    nn.Tanhshrink: "tanhshrink",
    nn.Softshrink: "softshrink",
    nn.Hardshrink: "hardshrink",
    nn.Threshold: "threshold",
}

# Library classes recognised by module and qualified name, never by importing the library.
# Same function => same canonical kind: transformers' FastGELU and AccurateGELU are the tanh
# approximation (FastGELU with a rounded constant); timm's HardSwish/HardSigmoid are the
# relu6 forms of hardswish/hardsigmoid and its *Me classes the memory-efficient twins.
_HF_KINDS: dict[str, str] = {
    "GELUActivation": "gelu",
    "GELUTanh": "gelu_tanh",
    "PytorchGELUTanh": "gelu_tanh",
    "NewGELUActivation": "gelu_tanh",
    "FastGELUActivation": "gelu_tanh",
    "AccurateGELUActivation": "gelu_tanh",
    "QuickGELUActivation": "quick_gelu",
    "ClippedGELUActivation": "clipped_gelu",
    "SiLUActivation": "silu",
    "MishActivation": "mish",
    "ReLUSquaredActivation": "relu2",
    "LaplaceActivation": "laplace",
    "LinearActivation": "linear",
    "SqrtSoftplusActivation": "sqrtsoftplus",
    "XIELUActivation": "xielu",
}
_TIMM_KINDS: dict[str, str] = {
    "Swish": "silu",
    "Mish": "mish",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "HardSwish": "hardswish",
    "HardSigmoid": "hardsigmoid",
    "HardMish": "hard_mish",
    "PReLU": "prelu",
    "GELU": "gelu",
    "GELUTanh": "gelu_tanh",
    "QuickGELU": "quick_gelu",
}
_TIMM_ME_KINDS: dict[str, str] = {
    "SwishMe": "silu",
    "MishMe": "mish",
    "HardSwishMe": "hardswish",
    "HardSigmoidMe": "hardsigmoid",
    "HardMishMe": "hard_mish",
}
_NAMED_KINDS: dict[str, dict[str, str]] = {
    "transformers.activations": _HF_KINDS,
    "timm.layers.activations": _TIMM_KINDS,
    "timm.models.layers.activations": _TIMM_KINDS,  # timm < 0.9
    "timm.layers.activations_me": _TIMM_ME_KINDS,
    "timm.models.layers.activations_me": _TIMM_ME_KINDS,
}

# Kinds that identify_activation can return but the registry does not hold.
EXTRA_KINDS = frozenset(
    {k for table in _NAMED_KINDS.values() for k in table.values()}
    | set(_TORCH_KINDS.values())
    | {"gelu", "gelu_tanh"}
)


def _kind_of_class(cls: type) -> str | None:
    if cls in _TORCH_KINDS:
        return _TORCH_KINDS[cls]
    table = _NAMED_KINDS.get(cls.__module__)
    return table.get(cls.__qualname__) if table else None


def identify_activation(module: nn.Module) -> str | None:
    """The kind of activation ``module`` computes ("gelu", "silu", ...), or None.

    Recognises actlab, ``torch.nn``, Hugging Face transformers and timm activation classes
    (the latter two by name, without importing them), and subclasses of them that keep their
    base's ``forward``.
    """
    name = canonical_name(module)
    if name:
        return name
    if isinstance(module, nn.GELU):
        kind: str | None = "gelu_tanh" if module.approximate == "tanh" else "gelu"
        base: type = nn.GELU
    else:
        kind, base = None, object
        for cls in type(module).__mro__:
            kind = _kind_of_class(cls)
            if kind is not None:
                base = cls
                break
    if kind is None:
        return None
    if type(module) is not base and type(module).forward is not base.forward:  # type: ignore[attr-defined]
        return None  # a subclass that computes something else
    return kind


def known_kinds() -> list[str]:
    """Every kind a mapping key may name: registry names plus :data:`EXTRA_KINDS`."""
    return sorted(set(list_activations()) | EXTRA_KINDS)


def resolve_kind(key: str, *, where: str = "in the mapping") -> str:
    """Canonical kind of a mapping key (aliases resolved); raises ValueError with close matches.

    ``where`` names the argument in the message ("in the mapping", "for match=").
    """
    if not isinstance(key, str):
        raise SurgeryInputError(
            f"mapping keys must be activation kinds (str), got {type(key).__name__}"
        )
    k = key.strip().lower()
    if k == WILDCARD:
        return k
    aliases = activation_aliases()
    k = aliases.get(k, k)
    kinds = known_kinds()
    if k in kinds:
        return k
    hint = did_you_mean(k, kinds + sorted(aliases))
    raise ValueError(
        f"unknown activation kind {key!r} {where}.{hint} Keys are kinds such as "
        f"'gelu', 'silu', 'relu' or '*' for any activation; all kinds: {', '.join(kinds)}"
    )


@cache
def _functional_table() -> dict[Any, str]:
    """Functional op -> kind. ``F.gelu`` maps to "gelu"; see :func:`gelu_kind_of_call`."""
    T = torch.Tensor
    table: dict[str, tuple[Callable[..., Any], ...]] = {
        "relu": (F.relu, F.relu_, torch.relu, torch.relu_, T.relu, T.relu_),
        "relu6": (F.relu6,),
        "leaky_relu": (F.leaky_relu, F.leaky_relu_),
        "prelu": (F.prelu, torch.prelu),
        "rrelu": (F.rrelu, F.rrelu_, torch.rrelu),
        "elu": (F.elu, F.elu_),
        "celu": (F.celu, F.celu_, torch.celu),
        "selu": (F.selu, F.selu_, torch.selu),
        "gelu": (F.gelu,),
        "silu": (F.silu,),
        "mish": (F.mish,),
        "softplus": (F.softplus,),
        "hardswish": (F.hardswish,),
        "hardsigmoid": (F.hardsigmoid,),
        "hardtanh": (F.hardtanh, F.hardtanh_),
        "sigmoid": (torch.sigmoid, F.sigmoid, T.sigmoid, T.sigmoid_, torch.special.expit),
        "tanh": (torch.tanh, F.tanh, T.tanh, T.tanh_),
        "logsigmoid": (F.logsigmoid,),
        "softsign": (F.softsign,),
        "tanhshrink": (F.tanhshrink,),
        "softshrink": (F.softshrink,),
        "hardshrink": (F.hardshrink,),
        "threshold": (F.threshold, torch.threshold, torch.threshold_),
    }
    return {fn: kind for kind, fns in table.items() for fn in fns}


def functional_ops() -> dict[Any, str]:
    """A copy of the functional-op -> kind table."""
    return dict(_functional_table())


def functional_kind(fn: Any) -> str | None:
    """The kind of a functional op (``F.gelu`` -> "gelu"), or None."""
    try:
        return _functional_table().get(fn)
    except TypeError:  # unhashable callable
        return None


def gelu_kind_of_call(approximate: object) -> set[str]:
    """Kinds an ``F.gelu`` call computes given its ``approximate`` argument (unknown: both)."""
    if approximate == "tanh":
        return {"gelu_tanh"}
    if approximate in ("none", None):
        return {"gelu"}
    return {"gelu", "gelu_tanh"}
