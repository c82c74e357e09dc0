"""Compiled expressions: the zoo entry `expr`, float64 reference, gradients, serialisation."""

from __future__ import annotations

import copy
import io
import math
import pickle
import random

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck

from actlab.expr import ExprError, compile_expr, evaluate, parse, random_expr, size
from actlab.expr._activation import ExprActivation
from actlab.registry import create_activation, get_activation_info

# every primitive at least once; smooth at the test points below
SMOOTH = [
    "x*sigmoid(beta*x)",
    "relu(x) + eps*x*exp(-x**2/2)",
    "square(x) + cube(x)/3 - x**4/10",
    "sqrt(x) + log(x) * gauss(x)",
    "exp(-x**2/2) * sin(x) + cos(beta*x)",
    "sinh(x/4) - cosh(x/4) + tanh(alpha*x)",
    "asinh(x) * atan(x) + sinc(x)",
    "softplus(x) - sigmoid(x) + erf(x)",
    "gelu(x) + silu(gamma*x) + delta",
    "x / (1 + abs(x))",
    "max(x, sigmoid(x)) + min(x, 0)",
    "theta*x + (1 - theta)*tanh(x)",
    "x**1.5 + x**-2",
    "beta2 * x * sigmoid(beta * x)",
]


def _points() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, generator=g, dtype=torch.float64) * 2.5
    # keep finite differences away from kinks (0, x = sigmoid(x) at ~0.659) and the pole of x**-2
    near = (x.abs() < 0.05) | ((x - 0.659).abs() < 0.05)
    return torch.where(near, x + 0.2, x)


def _perturbed(formula: str) -> ExprActivation:
    m = compile_expr(formula).double()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.07)
    return m


def test_registered_and_created_from_spec() -> None:
    m = create_activation('expr(formula="x*sigmoid(1.702*x)")')
    assert isinstance(m, ExprActivation)
    assert m.formula == "x * sigmoid(1.702 * x)" and not list(m.parameters())
    x = torch.linspace(-4, 4, 101)
    torch.testing.assert_close(m(x), x * torch.sigmoid(1.702 * x))
    assert create_activation(m.spec()).formula == m.formula
    info = get_activation_info("expr")
    assert info.family == "search" and info.reference is not None
    default = create_activation("expr")
    assert isinstance(default, ExprActivation) and default.formula == "x * sigmoid(beta * x)"
    assert dict(default.named_parameters())["beta"].item() == 1.0


def test_params_init_learnable_and_errors() -> None:
    m = create_activation('expr(formula="relu(x) + eps*x*exp(-x**2/2)", params={"eps": 0.02})')
    assert isinstance(m, ExprActivation)
    assert dict(m.named_parameters())["eps"].item() == pytest.approx(0.02)
    assert m.spec().startswith("expr(formula='relu(x) + eps * x * exp(-0.5 * square(x))'")
    frozen = compile_expr("x*sigmoid(beta*x)", learnable=False)
    assert not list(frozen.parameters()) and "beta" in dict(frozen.named_buffers())
    with pytest.raises(ExprError, match="no learnable scalar 'gamma'"):
        compile_expr("x*sigmoid(beta*x)", params={"gamma": 1.0})
    with pytest.raises(ValueError, match="attribute access"):
        create_activation('expr(formula="x.__class__")')
    with pytest.raises(ValueError, match="must be finite"):
        compile_expr("beta*x", params={"beta": math.inf})


@pytest.mark.parametrize("formula", SMOOTH)
def test_forward_matches_float64_reference(formula: str) -> None:
    m = _perturbed(formula)
    x = torch.cat([torch.linspace(-6, 6, 241, dtype=torch.float64), _points()])
    with torch.no_grad():
        y = m(x)
    reference = get_activation_info("expr").reference
    assert reference is not None
    ref = reference(x, m)
    assert ref.dtype == torch.float64
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("formula", SMOOTH)
def test_gradient_matches_reference_derivative(formula: str) -> None:
    m = _perturbed(formula)
    x = _points().requires_grad_(True)
    (g,) = torch.autograd.grad(m(x).sum(), x)
    params = {n: float(p.detach()) for n, p in m.named_parameters()}
    xs, h = x.detach().numpy(), 1e-6
    fd = (evaluate(m.expr, xs + h, params) - evaluate(m.expr, xs - h, params)) / (2 * h)
    np.testing.assert_allclose(g.numpy(), fd, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("formula", SMOOTH)
def test_gradcheck_including_learnable_parameters(formula: str) -> None:
    m = _perturbed(formula)
    names = [n for n, _ in m.named_parameters()]
    x = _points()[:24].clone().requires_grad_(True)

    def f(x: torch.Tensor, *ps: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(m, dict(zip(names, ps, strict=True)), (x,))

    inputs = (x, *[p.detach().clone().requires_grad_(True) for p in m.parameters()])
    assert gradcheck(f, inputs, eps=1e-6, atol=1e-5)


def test_random_grammar_expressions_match_reference() -> None:
    rng = random.Random(11)
    x = torch.linspace(-5, 5, 201, dtype=torch.float64)
    for _ in range(40):
        e = random_expr(rng, 2)
        m = compile_expr(e).double()
        with torch.no_grad():
            y = m(x)
        ref = torch.from_numpy(evaluate(e, x.numpy()))
        ok = torch.isfinite(ref) & (ref.abs() < 1e8)
        torch.testing.assert_close(y[ok], ref[ok], rtol=1e-9, atol=1e-9)


def test_common_subexpressions_are_computed_once() -> None:
    e = parse("sigmoid(beta*x)*x + tanh(sigmoid(beta*x))")
    prog = compile_expr(e)._program
    assert len(prog.instrs) < size(e)


def test_dtype_shape_nan_empty_and_serialisation() -> None:
    m = compile_expr("x*sigmoid(beta*x) + 0.1*gauss(x)")
    for dtype in (torch.float32, torch.bfloat16):
        xl = torch.randn(2, 3, 4).to(dtype)
        y = copy.deepcopy(m).to(dtype)(xl)
        assert y.dtype == dtype and y.shape == xl.shape
    y = m(torch.tensor([math.nan, 1.0]))
    assert math.isnan(y[0].item()) and math.isfinite(y[1].item())
    e = torch.empty(3, 0, 2, requires_grad=True)
    m(e).sum().backward()
    const = compile_expr("beta + 1")  # no x: broadcast to the input's shape
    assert const(torch.zeros(5)).shape == (5,)
    buf = io.BytesIO()
    pickle.dump(m, buf)
    buf.seek(0)
    x = torch.randn(50)
    torch.testing.assert_close(pickle.load(buf)(x), m(x))
    fresh = compile_expr(m.formula)
    fresh.load_state_dict(m.state_dict())
    torch.testing.assert_close(fresh(x), m(x))
    assert m.inplace is False and compile_expr("x*sigmoid(x)").extra_repr()


@pytest.mark.parametrize(
    "formula", ["x*sigmoid(beta*x)", "relu(x) + eps*x*exp(-x**2/2)", "sin(x) + softplus(x) - eps"]
)
def test_lean_path_saves_only_the_input_and_matches_autograd(formula: str) -> None:
    from actlab.activations import kernel_mode

    m = create_activation(f"expr(formula={formula!r})").double()
    x0 = torch.randn(70_000, dtype=torch.float64)  # auto: lean from 65536 elements
    g = torch.randn_like(x0)
    results = {}
    for mode in ("reference", "auto"):
        m.zero_grad()
        x = x0.clone().requires_grad_(True)
        saved: list[int] = []

        def pack(t: torch.Tensor, saved: list[int] = saved) -> torch.Tensor:
            if t.numel() > 1:
                saved.append(t.numel() * t.element_size())
            return t

        with kernel_mode(mode), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = m(x)
        y.backward(g)
        results[mode] = ([y.detach(), x.grad] + [p.grad for p in m.parameters()], sum(saved))
    (ref, ref_bytes), (lean, lean_bytes) = results["reference"], results["auto"]
    for a, b in zip(ref, lean):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    assert lean_bytes <= x0.numel() * x0.element_size() < ref_bytes


def test_lean_path_supports_higher_derivatives() -> None:
    """f'' through the recomputing backward (create_graph) equals plain autograd's."""
    from actlab.activations import kernel_mode

    m = create_activation('expr(formula="x*sigmoid(beta*x)")').double()
    out = {}
    for mode in ("reference", "eager"):
        x = torch.linspace(-4, 4, 101, dtype=torch.float64, requires_grad=True)
        with kernel_mode(mode):
            (d1,) = torch.autograd.grad(m(x).sum(), x, create_graph=True)
            (d2,) = torch.autograd.grad(d1.sum(), x)
        out[mode] = (d1.detach(), d2)
    for a, b in zip(out["reference"], out["eager"]):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)
    assert gradcheck(lambda t: m(t), (torch.randn(20, dtype=torch.float64, requires_grad=True),))
