"""Candidates of an activation search and the outcome of evaluating one.

A :class:`Candidate` is an expression of :mod:`actlab.expr` in canonical form, its hash
(sha256 of the canonical formula: the duplicate key, as in Lion's program hashing, Chen et
al. 2023, arXiv 2302.06675), where it came from (``origin``: ``random``, ``warm:gelu``,
``mutate:op``, ``eafo:gaussian``, ``bo``, ``funnel``...), the hashes of its parents and its
funnel ``level`` (0 = the cheapest budget).

An :class:`EvalResult` says how far a candidate got: ``status`` is ``ok`` (it has a
``quality``), ``rejected`` (a stage refused it, ``reason`` says why) or ``failed`` (an
error); ``stage`` names the last stage reached (``checks``, ``cost``, ``quality``,
``train``, ``done``). ``units`` is the evaluation budget it consumed (0 for the cheap stages).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from actlab.expr import Expr, canonical, expr_hash, parse, to_string

if TYPE_CHECKING:
    from torch import nn

__all__ = ["WARM_START", "Candidate", "EvalResult", "STAGES", "as_candidate"]

# known activations written in the expression language (warm start of evolution)
WARM_START: dict[str, str] = {
    "relu": "relu(x)",
    "gelu": "gelu(x)",
    "swish": "x*sigmoid(beta*x)",
    "crrelu": "relu(x) + eps*x*exp(-x**2/2)",
}

# the stages of the evaluation pipeline, cheapest first
STAGES: tuple[str, ...] = ("checks", "shape", "cost", "quality", "train", "done")


@dataclass(frozen=True)
class Candidate:
    """One expression to evaluate; ``key`` = (hash, level) is what is never evaluated twice."""

    expr: Expr
    origin: str = "random"
    parents: tuple[str, ...] = ()
    level: int = 0
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    _hash: str = field(init=False, repr=False, compare=False, hash=False, default="")
    # the compiled program (an ExprActivation built from ``expr``), built once on first use
    _module: Any = field(init=False, repr=False, compare=False, hash=False, default=None)

    def __post_init__(self) -> None:
        e = canonical(self.expr)
        object.__setattr__(self, "expr", e)
        object.__setattr__(self, "parents", tuple(self.parents))
        object.__setattr__(self, "_hash", expr_hash(e))
        if self.level < 0:
            raise ValueError(f"funnel level must be >= 0, got {self.level}")

    @property
    def formula(self) -> str:
        """The canonical formula (re-parses to ``expr``)."""
        return to_string(self.expr)

    @property
    def hash(self) -> str:
        """sha256 of the canonical formula."""
        return self._hash

    @property
    def key(self) -> tuple[str, int]:
        return (self.hash, self.level)

    @property
    def spec(self) -> str:
        """The activation spec of the candidate as text, for storage and reports
        (:func:`actlab.create_activation` accepts it); evaluations use :meth:`module`."""
        return f'expr(formula="{self.formula}")'

    def module(self) -> nn.Module:
        """A fresh activation module computing ``expr`` (its scalars at their defaults).

        The expression is compiled once per candidate (no text, no parser) and each call
        returns a deep copy of that program: the cheap stages check one copy and the
        trainer hands another to the model, which copies it for each of its sites.
        """
        if self._module is None:
            from actlab.expr import compile_expr

            object.__setattr__(self, "_module", compile_expr(self.expr))
        return copy.deepcopy(self._module)

    def __getstate__(self) -> dict[str, Any]:  # the compiled program stays in its process
        state = dict(self.__dict__)
        state.pop("_module", None)
        return state

    def promoted(self, level: int) -> Candidate:
        """The same expression at funnel ``level`` (origin ``funnel``, parent = itself)."""
        return Candidate(self.expr, "funnel", (self.hash,), level, dict(self.meta))

    def to_attrs(self) -> dict[str, Any]:
        """JSON-serialisable description (stored as Optuna trial user attributes)."""
        return {
            "formula": self.formula,
            "hash": self.hash,
            "origin": self.origin,
            "parents": list(self.parents),
            "level": self.level,
            "meta": dict(self.meta),
        }

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> Candidate:
        """Inverse of :meth:`to_attrs`; the formula is re-parsed (safely) and re-hashed."""
        return cls(
            parse(str(attrs["formula"])),
            str(attrs.get("origin", "random")),
            tuple(attrs.get("parents", ())),
            int(attrs.get("level", 0)),
            dict(attrs.get("meta") or {}),
        )


def as_candidate(x: Candidate | Expr | str, origin: str = "user") -> Candidate:
    """A candidate from a candidate, an IR tree or a formula string."""
    if isinstance(x, Candidate):
        return x
    return Candidate(parse(x) if isinstance(x, str) else x, origin)


@dataclass
class EvalResult:
    """What evaluating a candidate produced (see the module docstring)."""

    status: str
    stage: str
    reason: str = ""
    quality: float = math.nan
    cost: float = math.nan  # seconds per forward+backward step relative to GELU
    units: float = 0.0
    seconds: float = 0.0
    proxies: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in ("ok", "rejected", "failed"):
            raise ValueError(f"status must be ok, rejected or failed, got {self.status!r}")

    @property
    def ok(self) -> bool:
        return self.status == "ok" and math.isfinite(self.quality)

    @classmethod
    def rejected(cls, stage: str, reason: str, **kw: Any) -> EvalResult:
        return cls("rejected", stage, reason, **kw)

    @classmethod
    def failed(cls, stage: str, reason: str, **kw: Any) -> EvalResult:
        return cls("failed", stage, reason, **kw)

    def to_attrs(self) -> dict[str, Any]:
        """JSON-serialisable form (NaN becomes None)."""
        return {
            "status": self.status,
            "stage": self.stage,
            "reason": self.reason,
            "quality": _num(self.quality),
            "cost": _num(self.cost),
            "units": self.units,
            "seconds": self.seconds,
            "proxies": {k: _num(v) for k, v in self.proxies.items()},
            "extra": self.extra,
        }

    @classmethod
    def from_attrs(cls, a: Mapping[str, Any]) -> EvalResult:
        return cls(
            str(a["status"]),
            str(a["stage"]),
            str(a.get("reason", "")),
            _float(a.get("quality")),
            _float(a.get("cost")),
            float(a.get("units") or 0.0),
            float(a.get("seconds") or 0.0),
            {k: _float(v) for k, v in (a.get("proxies") or {}).items()},
            dict(a.get("extra") or {}),
        )


def _num(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def _float(v: Any) -> float:
    return math.nan if v is None else float(v)
