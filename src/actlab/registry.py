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

Parameters are validated in one place, :func:`validate_params`, for every registered
activation and every way of building one (call string, keyword overrides, or the class called
directly: registration wraps ``__init__``). Each parameter has a :class:`ParamRule`, derived
from its default (float -> a finite real number, int -> an integer, bool -> a real bool,
str -> a string) and narrowed by the registration's ``rules=`` (ranges, choices, sizes). Values
are normalised to the parameter's type (``eps=1`` -> ``1.0``), so :func:`canonical_spec`
gives equivalent specs one text: ``crrelu``, ``crrelu(eps=0.01)`` and ``CRReLU(eps=1e-2)``
are all ``"crrelu"``.
"""

from __future__ import annotations

import ast
import functools
import inspect
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from actlab._names import Registry, RegistryError, did_you_mean

__all__ = [
    "ACTIVATIONS",
    "ActivationInfo",
    "Registry",
    "RegistryError",
    "did_you_mean",
    "activation_aliases",
    "ActivationSpecError",
    "ParamRule",
    "canonical_spec",
    "validate_params",
    "register_activation",
    "create_activation",
    "list_activations",
    "get_activation_info",
    "parse_spec",
]

_MAX_SPEC_LEN = 1000


class ActivationSpecError(ValueError):
    """A spec that names no registered activation, cannot be parsed, or has a bad parameter."""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class ParamRule:
    """What one constructor parameter accepts; :meth:`apply` returns the normalised value.

    ``kind``: "float" (a finite real number, returned as float), "int" (an integer-valued
    number, returned as int), "bool" (True/False only: the string 'False' is not a bool),
    "str" (a string; with ``choices``, lower-cased and one of them), or "any" (only ``check``).
    Bounds ``gt``/``ge``/``le`` apply to float and int. ``check(value) -> value`` runs last and
    raises ValueError (or TypeError) with a message naming the problem.
    """

    kind: str = "any"
    gt: float | None = None
    ge: float | None = None
    le: float | None = None
    choices: tuple[str, ...] = ()
    refused: tuple[tuple[str, str], ...] = ()  # (choice, why) pairs: named, but refused
    optional: bool = False  # None is accepted (and kept)
    check: Callable[[Any], Any] | None = None

    def apply(self, owner: str, name: str, value: Any) -> Any:
        where = f"{owner}: {name}"
        if value is None and self.optional:
            return None
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise TypeError(f"{where} must be True or False, got {_short(value)}")
        elif self.kind in ("float", "int"):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{where} must be a number, got {_short(value)}")
            try:
                as_float = float(value)
            except (OverflowError, ValueError):
                as_float = math.inf
            if not math.isfinite(as_float):
                raise ValueError(f"{where} must be finite, got {_short(value)}")
            if self.kind == "int":
                if as_float != int(as_float) and not isinstance(value, numbers.Integral):
                    raise ValueError(f"{where} must be a whole number, got {_short(value)}")
                value = int(value) if isinstance(value, numbers.Integral) else int(as_float)
            else:
                value = as_float
            if self.gt is not None and not value > self.gt:
                raise ValueError(f"{where} must be > {self.gt:g}, got {_short(value)}")
            if self.ge is not None and not value >= self.ge:
                raise ValueError(f"{where} must be >= {self.ge:g}, got {_short(value)}")
            if self.le is not None and not value <= self.le:
                raise ValueError(f"{where} must be <= {self.le:g}, got {_short(value)}")
        elif self.kind == "str":
            if not isinstance(value, str):
                raise TypeError(f"{where} must be a string, got {_short(value)}")
            if self.choices or self.refused:
                value = value.strip().lower()
                why = dict(self.refused).get(value)
                if why:
                    raise ValueError(
                        f"{where} {value!r} is refused: {why}; "
                        f"choose one of {', '.join(self.choices)}"
                    )
                if value not in self.choices:
                    raise ValueError(
                        f"{where}: unsupported value {_short(value)}; "
                        f"choose one of {', '.join(self.choices)}"
                    )
        if self.check is not None:
            value = self.check(value)
        return value


def _rule_from_default(default: Any) -> ParamRule:
    if isinstance(default, bool):
        return ParamRule("bool")
    if isinstance(default, int):
        return ParamRule("int")
    if isinstance(default, float):
        return ParamRule("float")
    if isinstance(default, str):
        return ParamRule("str")
    return ParamRule("any", optional=default is None)


@dataclass(frozen=True)
class ActivationInfo:
    """Everything the registry knows about one activation.

    ``reference(x, module)`` is an independent float64 oracle used by the test matrix: a
    plain closed-form implementation that reads the module's current parameter values.
    ``limits`` documents f(-inf) and f(+inf) (nan where the op yields nan there).
    ``limits_vary`` lists, per end, other values that end may take: the thin wrappers of
    PyTorch ops (classic.py) return whatever the op returns, and a few ops give different
    non-finite results on different CPUs / dtypes (e.g. gelu(+inf) is inf or nan); actlab
    promises only "one of limits[i] or limits_vary[i]" there. Empty for every activation whose
    value at ±inf is promised exactly.
    ``rules`` holds one :class:`ParamRule` per constructor parameter (``inplace`` included).
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
    rules: dict[str, ParamRule] = field(default_factory=dict)
    limits_vary: tuple[tuple[float, ...], tuple[float, ...]] = ((), ())

    def limit_values(self, end: int) -> tuple[float, ...]:
        """Every value promised at -inf (``end`` 0) or +inf (``end`` 1)."""
        return (self.limits[end], *self.limits_vary[end])

    @property
    def learnable(self) -> tuple[str, ...]:
        """Names of the learnable parameters of a default instance."""
        return tuple(n for n, _ in self.cls().named_parameters())


# The zoo registers itself when `actlab.activations` is imported, the formula activation
# `expr` when `actlab.expr._activation` is; the registry imports both by name before the first
# lookup, so `registry` stays below `activations` and `expr` in the import graph.
ACTIVATIONS: Registry[ActivationInfo] = Registry(
    "activation",
    loader=("actlab.activations.*", "actlab.expr._activation"),
    error=ActivationSpecError,
    hint="Run `actlab ls` to list them all.",
)


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
    rules: dict[str, ParamRule] | None = None,
    limits_vary: tuple[tuple[float, ...], tuple[float, ...]] = ((), ()),
) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator that adds an activation to the registry under ``name``.

    The class must accept ``inplace=`` and keyword-only parameters, all with defaults.
    ``rules`` narrows the rule each parameter gets from its default (see :class:`ParamRule`);
    a parameter whose default is None needs one. The class's ``__init__`` is wrapped so that
    calling it directly validates its keywords too.
    """
    key = name.lower()

    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        sig = inspect.signature(cls.__init__)
        if "inplace" not in sig.parameters:
            raise TypeError(f"{cls.__name__}.__init__ must accept inplace= to be registered")
        for p in list(sig.parameters.values())[1:]:
            if p.kind is p.POSITIONAL_OR_KEYWORD or p.kind is p.POSITIONAL_ONLY:
                raise TypeError(f"{cls.__name__}: parameter {p.name!r} must be keyword-only")
        defaults = _keyword_defaults(cls)
        all_rules = {"inplace": ParamRule("bool")}
        for pname, default in defaults.items():
            all_rules[pname] = _rule_from_default(default)
        extra = dict(rules or {})
        unknown = sorted(set(extra) - set(all_rules))
        if unknown:
            raise TypeError(f"{cls.__name__}: rules for unknown parameters {unknown}")
        all_rules.update(extra)
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
            params=defaults,
            rules=all_rules,
            limits_vary=limits_vary,
        )
        ACTIVATIONS.add(key, info, aliases=info.aliases, family=family)
        cls.activation_name = key  # type: ignore[attr-defined]
        cls.__init__ = _validating_init(cls.__init__, info)  # type: ignore[method-assign]
        return cls

    return deco


def validate_params(info: ActivationInfo, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` checked and normalised by ``info``'s rules (unknown names passed through).

    Raises ValueError / TypeError with a one-line message naming the parameter and the problem.
    """
    out = dict(kwargs)
    for pname, value in kwargs.items():
        rule = info.rules.get(pname)
        if rule is not None:
            out[pname] = rule.apply(info.name, pname, value)
    return out


def _validating_init(init: Callable[..., None], info: ActivationInfo) -> Callable[..., None]:
    if getattr(init, "_actlab_validates", None) is info.name:
        return init

    @functools.wraps(init)
    def __init__(self: nn.Module, *args: Any, **kwargs: Any) -> None:
        if args:
            raise TypeError(
                f"{info.name}: pass parameters by keyword, e.g. {info.name}(name=value)"
            )
        init(self, **validate_params(info, kwargs))

    __init__._actlab_validates = info.name  # type: ignore[attr-defined]
    return __init__


def get_activation_info(name: str) -> ActivationInfo:
    """The :class:`ActivationInfo` of a registered name or alias (case-insensitive)."""
    return ACTIVATIONS.get(name)


def list_activations(pattern: str = "*", *, family: str | None = None) -> list[str]:
    """Sorted registered names matching a glob ``pattern`` (and ``family`` if given)."""
    return ACTIVATIONS.names(pattern, **({} if family is None else {"family": family}))


def activation_aliases() -> dict[str, str]:
    """alias -> registered activation name (``"swish"`` is its own activation, not an alias)."""
    return ACTIVATIONS.aliases()


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
            f"cannot parse activation spec {_short(spec)}: {e.msg}. "
            "Use a name or a call such as 'crrelu(eps=0.02)'."
        ) from None
    except (ValueError, RecursionError, MemoryError):  # NUL bytes, absurd nesting
        raise ActivationSpecError(
            f"cannot parse activation spec {_short(spec)}. "
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
        if kw.arg in kwargs:
            raise ActivationSpecError(
                f"activation spec {_short(spec)}: parameter {kw.arg!r} is given twice"
            )
        try:
            kwargs[kw.arg] = ast.literal_eval(kw.value)
        except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
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
        try:
            return spec(**overrides)
        except Exception as e:  # noqa: BLE001 -- any construction error is the spec's fault
            raise ActivationSpecError(f"cannot build {spec.__name__}: {_first_line(e)}") from None
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
    except Exception as e:  # noqa: BLE001 -- any construction error is the spec's fault
        raise ActivationSpecError(f"cannot build {_short(spec)}: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else type(e).__name__
    if isinstance(e, (MemoryError, OverflowError, RecursionError)):
        text = f"{type(e).__name__}: {text}"
    return text[:300]


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):  # never written into a spec (rules refuse them first)
            raise ActivationSpecError(f"non-finite value {value!r} cannot be written in a spec")
        return repr(value)
    if isinstance(value, (list, tuple)):
        inner = ", ".join(_format_value(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, dict):
        items = ", ".join(f"{k!r}: {_format_value(value[k])}" for k in sorted(value))
        return "{" + items + "}"
    if value is None or isinstance(value, (bool, int, str)):
        return repr(value)
    raise ActivationSpecError(f"value {_short(value)} cannot be written in a spec")


def canonical_spec(spec: str) -> str:
    """The one text of every spec equivalent to ``spec``.

    The registry name (aliases resolved), then the parameters that differ from their defaults,
    each normalised by its :class:`ParamRule` (``eps=1`` -> ``eps=1.0``, ``base='GELU'`` ->
    ``base='gelu'``), sorted by name. ``inplace`` is left out: it does not change what the
    module computes. The result builds an equivalent module with :func:`create_activation`
    and is its own canonical spec. Raises :class:`ActivationSpecError` for any bad spec; a
    non-finite number is never written.
    """
    if not isinstance(spec, str):
        raise ActivationSpecError(f"a spec must be a str, got {type(spec).__name__}")
    name, kwargs = parse_spec(spec)
    info = get_activation_info(name)
    create_activation(spec)  # every check of the constructor, with one-line errors
    try:
        given = validate_params(info, kwargs)
        defaults = validate_params(info, {k: v for k, v in info.params.items() if k in given})
    except (TypeError, ValueError) as e:  # pragma: no cover -- create_activation raised first
        raise ActivationSpecError(f"cannot build {_short(spec)}: {_first_line(e)}") from None
    keep = {
        k: v
        for k, v in given.items()
        if k != "inplace" and not (k in defaults and _same(defaults[k], v))
    }
    if not keep:
        return info.name
    args = ", ".join(f"{k}={_format_value(keep[k])}" for k in sorted(keep))
    return f"{info.name}({args})"


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def canonical_name(module: nn.Module) -> str | None:
    """The registry name of an actlab activation instance, else None."""
    return getattr(type(module), "activation_name", None)
