"""The safe formula parser: accepted language, canonical results, hostile input rejected."""

from __future__ import annotations

import ast
import builtins
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actlab.expr import Binary, Const, ExprError, Param, Unary, Var, parse, to_string
from actlab.expr.ir import MAX_DEPTH


@contextlib.contextmanager
def no_code_execution() -> Iterator[list[int]]:
    """Fail on eval/exec and on any compile() that is not AST-only, while active."""
    calls: list[int] = []
    real = (builtins.compile, builtins.eval, builtins.exec)

    def guarded_compile(
        source: Any, filename: Any, mode: str, flags: int = 0, *a: Any, **k: Any
    ) -> Any:
        calls.append(flags)
        assert flags & ast.PyCF_ONLY_AST, "compile() to a code object during parsing"
        return real[0](source, filename, mode, flags, *a, **k)

    def forbidden(*a: Any, **k: Any) -> Any:
        raise AssertionError("code was executed during parsing")

    builtins.compile, builtins.eval, builtins.exec = guarded_compile, forbidden, forbidden  # type: ignore[assignment]
    try:
        yield calls
    finally:
        builtins.compile, builtins.eval, builtins.exec = real


def guarded_parse(text: str, **kw: Any) -> list[int]:
    """parse(text) that must raise ExprError; returns the compile() flags it used."""
    with no_code_execution() as calls:
        try:
            parse(text, **kw)
        except ExprError as e:
            _last_error[0] = str(e)
            return calls
    raise AssertionError(f"{text[:60]!r} was accepted")


_last_error = [""]


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("x*sigmoid(1.702*x)", "x * sigmoid(1.702 * x)"),
        ("sigmoid(x*1.702)*x", "x * sigmoid(1.702 * x)"),
        ("max(x, sigmoid(x))", "max(x, sigmoid(x))"),
        ("x*sigmoid(beta*x)", "x * sigmoid(beta * x)"),
        ("relu(x) + eps*x*exp(-x**2/2)", "relu(x) + eps * x * exp(-0.5 * square(x))"),
        ("x - x", "0"),
        ("x + 2*x - 3*x + sin(x)", "sin(x)"),
        ("2*(x + 1) - x", "x + 2"),
        ("-(x - 1)", "1 - x"),
        ("max(0, x)", "relu(x)"),
        ("min(x, 0)", "min(x, 0)"),
        ("max(x, max(x, 1))", "max(x, 1)"),
        ("exp(-x**2)", "gauss(x)"),
        ("x**1 + x**0", "x + 1"),
        ("x**(1/2)", "sqrt(x)"),
        ("x**3", "cube(x)"),
        ("x**-1", "1 / x"),
        ("cos(-x) + sin(-x)", "cos(x) - sin(x)"),
        ("(-x)/(-sigmoid(x))", "x / sigmoid(x)"),
        ("abs(abs(x))", "abs(x)"),
        ("β*x + ε", "eps + beta * x"),
        ("beta2*x", "beta2 * x"),
        ("+x", "x"),
        ("1e-300*x", "0"),
    ],
)
def test_canonical_results(text: str, canonical: str) -> None:
    e = parse(text)
    assert to_string(e) == canonical
    assert parse(canonical) == e


def test_raw_tree_structure() -> None:
    e = parse("x*sigmoid(beta*x) - 2", canonical=False)
    assert e == Binary(
        "sub",
        Binary("mul", Var(), Unary("sigmoid", Binary("mul", Param("beta"), Var()))),
        Const(2.0),
    )
    assert parse("-3", canonical=False) == Const(-3.0)  # negative literals fold directly
    assert parse("pi", canonical=False) == Const(3.141592653589793)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("__import__('os')", "call to '__import__' is not allowed"),
        ("__import__('os').system('touch hacked')", "attribute access"),
        ("().__class__", "attribute access"),
        ("x.__class__", "attribute access"),
        ("().__class__.__bases__[0].__subclasses__()", "attribute access"),
        ("lambda: 1", "lambda"),
        ("(lambda x: x)(x)", "lambda"),
        ("(x)(x)", "call to 'x' is not allowed"),
        ("(x + 1)(x)", "calls of whitelisted functions"),
        ("[x for x in ()]", "comprehensions"),
        ("sum(i for i in range(9**9))", "call to 'sum'"),
        ("open('f')", "call to 'open' is not allowed"),
        ("open('f', 'w').write('x')", "attribute access"),
        ("eval('x')", "call to 'eval'"),
        ("globals()", "call to 'globals'"),
        ("getattr(x, 'real')", "call to 'getattr'"),
        ("__builtins__", "unknown name '__builtins__'"),
        ("y * x", "unknown name 'y'"),
        ("sigmoid", "'sigmoid' is a function"),
        ("sigmoid(x=1)", "keyword arguments"),
        ("max(x)", "takes 2 arguments"),
        ("exp(x, x)", "takes 1 argument"),
        ("max(*[x, x])", "starred"),
        ("'abc'", "strings"),
        ("f'{x}'", "strings"),
        ("b'x' * x", "strings"),
        ("x[0]", "subscripts"),
        ("x if x else 1", "conditional"),
        ("x < 1", "comparisons"),
        ("x and 1", "and/or"),
        ("(y := 1)", "assignment"),
        ("(x, x)", "tuples"),
        ("x // 2", "'//'"),
        ("x % 2", "'%'"),
        ("x @ x", "'@'"),
        ("~x", "'~'"),
        ("not x", "'not'"),
        ("import os", "cannot parse"),
        ("x; x", "cannot parse"),
        ("x\x00", "cannot parse"),
        ("", "empty formula"),
        ("   ", "empty formula"),
        ("10**10**10", "too large"),
        ("2**2**2**2", "too large"),
        ("x**5", "too large"),
        ("x**beta", "exponent must be a constant"),
        ("x**x", "exponent must be a constant"),
        ("1e400 * x", "out of range"),
        ("1e7 * x", "out of range"),
        ("10**100 * x", "too large"),
        ("100000000000000000000000 * x", "out of range"),
        ("1000**4 * x", "outside the allowed range"),
        ("exp(100) * x", "outside the allowed range"),
        ("True * x", "bool constants"),
        ("1j * x", "complex constants"),
        ("None", "NoneType constants"),
        ("...", "ellipsis constants"),
    ],
)
def test_hostile_and_invalid_rejected(
    text: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    guarded_parse(text)
    assert message in _last_error[0]
    assert not list(tmp_path.iterdir()), "parsing created a file"


@pytest.mark.parametrize(
    "text",
    [
        "(" * 10000 + "x" + ")" * 10000,
        "-" * 10000 + "x",
        "x" + "+x" * 5000,
        "sigmoid(" * 10000 + "x" + ")" * 10000,
        "x" * 100_000,
    ],
)
def test_huge_inputs_rejected_before_parsing(text: str) -> None:
    assert not guarded_parse(text), "Python's parser was reached"
    assert "too long" in _last_error[0] or "nested too deeply" in _last_error[0]


@pytest.mark.parametrize(
    "text",
    [
        "(" * (MAX_DEPTH + 1) + "x" + ")" * (MAX_DEPTH + 1),
        "-" * (MAX_DEPTH + 1) + "x",
        "- " * (MAX_DEPTH + 1) + "x",
    ],
)
def test_nesting_limit_prescan(text: str) -> None:
    assert not guarded_parse(text), "Python's parser was reached"
    assert "nested too deeply" in _last_error[0]


@pytest.mark.parametrize(
    "text",
    [
        "(" * 10000 + "x" + ")" * 10000,  # SyntaxError: too many nested parentheses
        "-" * 10000 + "x",  # MemoryError inside Python's parser
        "x" + "+x" * 5000,  # RecursionError during AST construction
        "x" + "+x" * 900,  # parses, then RecursionError in the converter
    ],
)
def test_python_parser_failures_are_reported(text: str) -> None:
    """With the pre-scan and length bound disabled, the parser's own failures become ExprError.

    Whether the converter hits RecursionError depends on the interpreter's recursion limit,
    which torch.compile raises when it has run earlier in the process; the size bound then
    rejects the formula instead. Either way the failure is a clear ExprError.
    """
    guarded_parse(text, max_len=10**6, max_depth=10**6)
    msg = _last_error[0]
    assert "nested too deeply" in msg or "cannot parse" in msg or "formula is too large" in msg


def test_depth_bound_is_reported_clearly() -> None:
    ok = "sigmoid(" * 20 + "x" + ")" * 20
    assert parse(ok)
    with pytest.raises(ExprError, match="nested too deeply"):
        parse("x" + "+x" * (MAX_DEPTH + 5))


def test_non_string_rejected() -> None:
    with pytest.raises(ExprError, match="must be a str"):
        parse(42)  # type: ignore[arg-type]
