"""Find activations that module surgery cannot replace: functional calls in ``forward``.

Two complementary checks, both reporting :class:`FunctionalCall` records:

- static: parse each non-activation module class's ``forward`` with :mod:`ast` and resolve
  call targets such as ``F.gelu``, ``torch.nn.functional.silu`` or ``torch.tanh`` through the
  function's globals (nothing is evaluated; only module attributes are looked up). Sources
  that cannot be read are skipped. Helper methods called from ``forward`` and tensor
  methods (``x.relu()``) are not seen statically; the dynamic check catches them.
- dynamic: run one forward pass under a :class:`torch.overrides.TorchFunctionMode` that
  records every call of a watched functional op together with the innermost module running
  (tracked with forward pre/post hooks, all removed afterwards). Calls made while an
  activation module runs are that activation's own implementation and are ignored.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from actlab.surgery._kinds import functional_kind, gelu_kind_of_call, identify_activation

__all__ = ["FunctionalCall", "dynamic_functional_calls", "static_functional_calls"]

_ROOTS = frozenset({"F", "torch", "nn", "functional"})
_UNKNOWN = object()  # an ``approximate=`` argument that is not a literal


@dataclass(frozen=True)
class FunctionalCall:
    """One functional call of an activation ``kind`` made by the module at ``path``."""

    kind: str
    path: str
    cls: str
    line: int | None = None  # source line (static check); None for the dynamic check
    file: str | None = None

    @property
    def location(self) -> str:
        if self.line is None:
            return f"{self.cls}.forward, seen at run time"
        return f"{self.cls}.forward, line {self.line}"


# ---------------------------------------------------------------- static
def _dotted(node: ast.expr) -> list[str] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


def _resolve(parts: list[str], env: Mapping[str, Any]) -> Any:
    """Follow ``a.b.c`` through modules and classes only; None when it leaves them."""
    obj = env.get(parts[0])
    for name in parts[1:]:
        if not isinstance(obj, (types.ModuleType, type)):
            return None
        obj = getattr(obj, name, None)
    if obj is None and parts[0] in _ROOTS:  # e.g. a local `import torch.nn.functional as F`
        obj = getattr(F, parts[-1], None) or getattr(torch, parts[-1], None)
    return obj


def _approximate_arg(call: ast.Call) -> object:
    node: ast.expr | None = next((k.value for k in call.keywords if k.arg == "approximate"), None)
    if node is None and len(call.args) > 1:
        node = call.args[1]
    if node is None:
        return None
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError):
        return _UNKNOWN


@cache
def _scan_forward(cls: type) -> tuple[tuple[frozenset[str], int, str | None], ...]:
    """(kinds, line, file) of every functional activation call in ``cls.forward``."""
    fn = getattr(cls, "forward", None)
    if fn is None or getattr(fn, "__name__", "") == "_forward_unimplemented":
        return ()
    fn = inspect.unwrap(fn)
    try:
        lines, start = inspect.getsourcelines(fn)
        tree = ast.parse(textwrap.dedent("".join(lines)))
        file = inspect.getsourcefile(fn)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return ()
    env: Mapping[str, Any] = getattr(fn, "__globals__", {})
    found: list[tuple[frozenset[str], int, str | None]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        parts = _dotted(node.func)
        if parts is None or parts[0] == "self":
            continue
        kind = functional_kind(_resolve(parts, env))
        if kind is None:
            continue
        kinds = gelu_kind_of_call(_approximate_arg(node)) if kind == "gelu" else {kind}
        found.append((frozenset(kinds), node.lineno + start - 1, file))
    return tuple(found)


def static_functional_calls(
    modules: Iterable[tuple[str, nn.Module]], kinds: set[str]
) -> list[FunctionalCall]:
    """Functional calls of ``kinds`` in the ``forward`` source of each non-activation module."""
    out: list[FunctionalCall] = []
    for path, module in modules:
        if identify_activation(module) is not None:
            continue
        cls: type = type(module)
        for call_kinds, line, file in _scan_forward(cls):
            for kind in sorted(call_kinds & kinds):
                out.append(FunctionalCall(kind, path, cls.__qualname__, line, file))
    return out


# ---------------------------------------------------------------- dynamic
class _Recorder(TorchFunctionMode):
    def __init__(self, kinds: set[str], stack: list[tuple[str, nn.Module, bool]]) -> None:
        super().__init__()
        self.kinds = kinds
        self.stack = stack
        self.calls: dict[tuple[str, str], FunctionalCall] = {}

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        kind = functional_kind(func)
        if kind is not None and not any(is_act for _, _, is_act in self.stack):
            if kind == "gelu":
                approx = kwargs.get("approximate", args[1] if len(args) > 1 else None)
                found = gelu_kind_of_call(approx)
            else:
                found = {kind}
            path, module = (self.stack[-1][0], self.stack[-1][1]) if self.stack else ("", None)
            for k in sorted(found & self.kinds):
                cls = type(module).__qualname__ if module is not None else "<outside any module>"
                self.calls.setdefault((k, path), FunctionalCall(k, path, cls))
        return func(*args, **kwargs)


def _call(model: nn.Module, example_inputs: Any) -> None:
    if isinstance(example_inputs, Mapping):
        model(**example_inputs)
    elif isinstance(example_inputs, (tuple, list)):
        model(*example_inputs)
    else:
        model(example_inputs)


def dynamic_functional_calls(
    model: nn.Module, example_inputs: Any, kinds: set[str], activations: set[int] | None = None
) -> list[FunctionalCall]:
    """Run ``model`` once on ``example_inputs`` (a tensor, tuple of args or mapping of kwargs)
    and return the functional calls of ``kinds`` made outside activation modules.

    ``activations`` holds ids of extra modules to treat as activations (surgery passes the
    modules it inserted, whatever their class)."""
    from actlab.activations import kernel_mode

    stack: list[tuple[str, nn.Module, bool]] = []
    handles: list[Any] = []

    def pre(path: str, is_act: bool) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any) -> None:
            stack.append((path, module, is_act))

        return hook

    def post(module: nn.Module, args: Any, output: Any) -> None:
        if stack:
            stack.pop()

    recorder = _Recorder(kinds, stack)
    try:
        for path, module in model.named_modules():
            is_act = identify_activation(module) is not None or id(module) in (activations or ())
            handles.append(module.register_forward_pre_hook(pre(path, is_act)))
            handles.append(module.register_forward_hook(post, always_call=True))
        with torch.no_grad(), kernel_mode("eager"), recorder:
            _call(model, example_inputs)
    finally:
        for h in handles:
            h.remove()
    return list(recorder.calls.values())
