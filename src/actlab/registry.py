"""The activation registry: one table filled by a decorator, one factory.

    @register_activation("crrelu", formula="max(0,x) + eps*x*exp(-x^2/2)", paper="...")
    class CRReLU(Activation): ...

    create_activation("crrelu")                 # registered name (or alias)
    create_activation("crrelu(eps=0.02)")       # call string: keyword literals only
    create_activation(CRReLU)                   # a class
    create_activation(CRReLU(eps=0.02))         # an instance (returned as is)

Call strings are parsed with :mod:`ast`; every argument must be a Python literal
(``ast.literal_eval``), nothing is ever evaluated as code. Registering an activation opts it
into the shared test matrix (tests/activations/test_matrix.py).
"""

from __future__ import annotations

import ast
import fnmatch
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from actlab._names import did_you_mean

__all__ = [
    "ActivationInfo",
    "ActivationSpecError",
    "register_activation",
    "create_activation",
    "list_activations",
    "get_activation_info",
    "parse_spec",
]

_MAX_SPEC_LEN = 1000


class ActivationSpecError(ValueError):
    """A spec that names no registered activation or cannot be parsed."""


@dataclass(frozen=True)
class ActivationInfo:
    """Everything the registry knows about one activation.

    ``reference(x, module)`` is an independent float64 oracle used by the test matrix: a
    plain closed-form implementation that reads the module's current parameter values.
    ``limits`` documents f(-inf) and f(+inf) (nan where the op yields nan there).
    """

    name: str
    cls: type[nn.Module]
    formula: str
    paper: str
    family: str
    reference: Callable[[Tensor, Any], Tensor] | None = None
    limits: tuple[float, float] = (math.nan, math.nan)
    elementwise: bool = True
    smooth: bool = True
    aliases: tuple[str, ...] = ()
    notes: str = ""
    fused: bool = False
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def learnable(self) -> tuple[str, ...]:
        """Names of the learnable parameters of a default instance."""
        return tuple(n for n, _ in self.cls().named_parameters())


_REGISTRY: dict[str, ActivationInfo] = {}
_ALIASES: dict[str, str] = {}


def _keyword_defaults(cls: type) -> dict[str, Any]:
    sig = inspect.signature(cls.__init__)  # type: ignore[misc]
    out: dict[str, Any] = {}
    for p in list(sig.parameters.values())[1:]:
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        if p.name == "inplace":
            continue
        out[p.name] = None if p.default is inspect.Parameter.empty else p.default
    return out


def register_activation(
    name: str,
    *,
    formula: str,
    paper: str,
    family: str = "classic",
    reference: Callable[[Tensor, Any], Tensor] | None = None,
    limits: tuple[float, float] = (math.nan, math.nan),
    elementwise: bool = True,
    smooth: bool = True,
    aliases: tuple[str, ...] = (),
    notes: str = "",
    fused: bool = False,
) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator that adds an activation to the registry under ``name``.

    The class must accept ``inplace=`` and keyword-only parameters, all with defaults.
    """
    key = name.lower()

    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        if key in _REGISTRY or key in _ALIASES:
            raise ValueError(f"activation {key!r} is already registered")
        sig = inspect.signature(cls.__init__)
        if "inplace" not in sig.parameters:
            raise TypeError(f"{cls.__name__}.__init__ must accept inplace= to be registered")
        for p in list(sig.parameters.values())[1:]:
            if p.kind is p.POSITIONAL_OR_KEYWORD or p.kind is p.POSITIONAL_ONLY:
                raise TypeError(f"{cls.__name__}: parameter {p.name!r} must be keyword-only")
        info = ActivationInfo(
            name=key,
            cls=cls,
            formula=formula,
            paper=paper,
            family=family,
            reference=reference,
            limits=limits,
            elementwise=elementwise,
            smooth=smooth,
            aliases=tuple(a.lower() for a in aliases),
            notes=notes,
            fused=fused,
            params=_keyword_defaults(cls),
        )
        _REGISTRY[key] = info
        for a in info.aliases:
            _ALIASES[a] = key
        cls.activation_name = key  # type: ignore[attr-defined]
        return cls

    return deco


def _ensure_loaded() -> None:
    # The zoo registers itself on import; importing here keeps `registry` free of cycles.
    from actlab import activations  # noqa: F401


def _unknown(name: str) -> ActivationSpecError:
    names = sorted(_REGISTRY) + sorted(_ALIASES)
    hint = did_you_mean(name, names)
    return ActivationSpecError(
        f"unknown activation {name!r}.{hint} Run `actlab ls` to list all {len(_REGISTRY)}."
    )


def get_activation_info(name: str) -> ActivationInfo:
    """The :class:`ActivationInfo` of a registered name or alias (case-insensitive)."""
    _ensure_loaded()
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise _unknown(name)
    return _REGISTRY[key]


def list_activations(pattern: str = "*", *, family: str | None = None) -> list[str]:
    """Sorted registered names matching a glob ``pattern`` (and ``family`` if given)."""
    _ensure_loaded()
    return sorted(
        n
        for n, info in _REGISTRY.items()
        if fnmatch.fnmatch(n, pattern.lower()) and (family is None or info.family == family)
    )


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``"name(k=v, ...)"`` into ``(name, kwargs)``; literals only, never evaluated."""
    text = spec.strip()
    if not text:
        raise ActivationSpecError("empty activation spec")
    if len(text) > _MAX_SPEC_LEN:
        raise ActivationSpecError(f"activation spec longer than {_MAX_SPEC_LEN} characters")
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError as e:
        raise ActivationSpecError(
            f"cannot parse activation spec {spec!r}: {e.msg}. "
            "Use a name or a call such as 'crrelu(eps=0.02)'."
        ) from None
    if isinstance(tree, ast.Name):
        return tree.id, {}
    if not (isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name)):
        raise ActivationSpecError(
            f"activation spec {spec!r} must be a name or a call 'name(key=value, ...)'"
        )
    if tree.args:
        raise ActivationSpecError(
            f"activation spec {spec!r}: pass parameters by keyword, e.g. 'crrelu(eps=0.02)'"
        )
    kwargs: dict[str, Any] = {}
    for kw in tree.keywords:
        if kw.arg is None:
            raise ActivationSpecError(f"activation spec {spec!r}: '**' is not allowed")
        try:
            kwargs[kw.arg] = ast.literal_eval(kw.value)
        except (ValueError, TypeError, SyntaxError, RecursionError):
            raise ActivationSpecError(
                f"activation spec {spec!r}: value of {kw.arg!r} must be a Python literal "
                "(number, string, bool, None, tuple or list of literals)"
            ) from None
    return tree.func.id, kwargs


ActivationSpec = str | type | nn.Module


def create_activation(spec: ActivationSpec, **overrides: Any) -> nn.Module:
    """Build an activation module from a name, call string, class or instance.

    ``overrides`` are extra keyword arguments (they win over the call string's). An instance
    is returned unchanged (no overrides allowed); a class is instantiated with ``overrides``.
    """
    if isinstance(spec, nn.Module):
        if overrides:
            raise ActivationSpecError("cannot apply keyword overrides to an existing instance")
        return spec
    if isinstance(spec, type):
        if not issubclass(spec, nn.Module):
            raise ActivationSpecError(f"{spec.__name__} is not an nn.Module subclass")
        return spec(**overrides)
    if not isinstance(spec, str):
        raise ActivationSpecError(
            f"activation spec must be a str, class or nn.Module, got {type(spec).__name__}"
        )
    name, kwargs = parse_spec(spec)
    info = get_activation_info(name)
    kwargs.update(overrides)
    unknown = sorted(set(kwargs) - set(info.params) - {"inplace"})
    if unknown:
        raise ActivationSpecError(
            f"{info.name} has no parameter {', '.join(map(repr, unknown))}; "
            f"its parameters are: {', '.join(info.params) or '(none)'} and inplace"
        )
    try:
        return info.cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ActivationSpecError(f"cannot build {spec!r}: {e}") from None


def canonical_name(module: nn.Module) -> str | None:
    """The registry name of an actlab activation instance, else None."""
    return getattr(type(module), "activation_name", None)
