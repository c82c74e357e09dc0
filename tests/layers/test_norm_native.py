"""Native PolyNorm / EvoNorm kernels against their torch twins and float64 references.

The library is built on first use (~30 s once per machine, cached under $ACTLAB_CACHE); these
tests fail, with the build error, if it cannot be built on a machine that should. The torch
path of each layer is reached by patching the module's ``ops_for`` (what a machine without a
compiler runs); ``fused=False`` is the plain-autograd twin.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import Tensor, nn

from actlab.layers import _norm_native, evonorm, polynorm
from actlab.layers.evonorm import (
    EvoNorm2dB0,
    EvoNorm2dS0,
    evonorm_b0_reference,
    evonorm_s0_reference,
)
from actlab.layers.polynorm import PolyNorm, polynorm_reference

pytestmark = pytest.mark.skipif(
    os.environ.get("ACTLAB_NATIVE", "1") == "0", reason="native kernels disabled by ACTLAB_NATIVE=0"
)

TOL = {torch.float64: {"rtol": 1e-11, "atol": 1e-12}, torch.float32: {"rtol": 2e-5, "atol": 2e-5}}


def _randomise(m: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m


@pytest.fixture
def torch_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[bool], None]]:
    """Switch the layers to their torch (non-native) paths and back."""

    def use(on: bool) -> None:
        for mod in (polynorm, evonorm):
            if on:
                monkeypatch.setattr(mod, "ops_for", lambda x: None)
            else:
                monkeypatch.setattr(mod, "ops_for", _norm_native.ops_for)

    yield use


def _run(m: nn.Module, x: Tensor, up: Tensor) -> list[Tensor]:
    """Output, input gradient and parameter gradients of one forward/backward."""
    m.zero_grad()
    xs = x.clone().requires_grad_(True)
    y = m(xs)
    (y * up).sum().backward()
    return [y.detach(), xs.grad] + [p.grad.clone() for p in m.parameters()]


def _layers(dtype: torch.dtype) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    return [
        ("polynorm", _randomise(PolyNorm(), 1).to(dtype), (3, 5, 37)),
        ("b0 train", _randomise(EvoNorm2dB0(6), 2).to(dtype).train(), (4, 6, 5, 7)),
        ("b0 eval", _randomise(EvoNorm2dB0(6), 3).to(dtype).eval(), (4, 6, 5, 7)),
        ("s0 g=3", _randomise(EvoNorm2dS0(6, groups=3), 4).to(dtype), (3, 6, 3, 11)),
        ("s0 g=6", _randomise(EvoNorm2dS0(6, groups=6), 5).to(dtype), (2, 6, 4, 4)),
    ]


def test_library_builds_and_registers_every_op() -> None:
    from actlab import _ext

    assert _norm_native.available(), _norm_native.unavailable_reason()
    ops = _norm_native.ops_for(torch.zeros(2))
    for name in _norm_native.KERNELS.ops:
        assert callable(getattr(ops, name))
    assert _norm_native.kernel_isa() == _ext.capability()
    assert _norm_native.ops_for(torch.zeros(2, dtype=torch.bfloat16)) is None
    assert _norm_native.ops_for(torch.zeros(2, device="meta")) is None
    assert _norm_native.ops_for(torch.zeros(0, 3)) is None


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_kernels_match_the_torch_path_and_float64_references(
    dtype: torch.dtype, torch_path: Callable[[bool], None]
) -> None:
    g = torch.Generator().manual_seed(0)
    for name, m, shape in _layers(dtype):
        x = (1.5 * torch.randn(shape, generator=g, dtype=torch.float64) + 0.2).to(dtype)
        up = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
        run0 = getattr(m, "running_var", torch.ones(1)).clone()
        native = _run(m, x, up)
        torch_path(True)
        if hasattr(m, "running_var"):
            m.running_var.copy_(run0)
        twin = _run(m, x, up)
        torch_path(False)
        for a, b in zip(native, twin, strict=True):
            torch.testing.assert_close(a, b, **TOL[dtype], msg=lambda s, n=name: f"{n}: {s}")
        # values and every gradient against the float64 formula of each layer
        x64 = x.double().requires_grad_(True)
        ps = {k: p.detach().double().requires_grad_(True) for k, p in m.named_parameters()}
        if name == "polynorm":
            ref = polynorm_reference(x64, ps["weight"], ps["bias"])
        else:
            vgb = (ps["v"], ps["weight"], ps["bias"])
            if name.startswith("b0"):
                ref = evonorm_b0_reference(x64, *vgb, None if m.training else run0)
            else:
                ref = evonorm_s0_reference(x64, *vgb, m.groups)
        (ref * up.double()).sum().backward()
        want = [ref.detach(), x64.grad] + [p.grad for p in ps.values()]  # parameters' order
        for a, b in zip(native, want, strict=True):
            scale = {"rtol": 0.0, "atol": TOL[dtype]["atol"] * max(1.0, float(b.abs().max()))}
            torch.testing.assert_close(a.double(), b, **scale, msg=lambda s, n=name: f"{n}: {s}")


def test_native_path_is_the_one_taken_and_saves_little() -> None:
    x = torch.randn(4, 8, 3, 3, requires_grad=True)
    for m, fn in (
        (PolyNorm(), "PolyNormFunction"),
        (EvoNorm2dB0(8), "B0Function"),
        (EvoNorm2dS0(8, groups=4), "S0Function"),
    ):
        y = m(x)
        names, node = [], y.grad_fn
        while node is not None:  # the layer's own node, under the final view / dtype cast
            names.append(node.name())
            node = node.next_functions[0][0] if node.next_functions else None
        assert any(fn in n for n in names), names


def test_b0_running_variance_update_matches_the_torch_path(
    torch_path: Callable[[bool], None],
) -> None:
    x = 2 * torch.randn(5, 3, 4, 4, dtype=torch.float64) + 1
    fast = EvoNorm2dB0(3, momentum=0.3).double().train()
    plain = EvoNorm2dB0(3, momentum=0.3, fused=False).double().train()
    for _ in range(2):
        fast(x)
        plain(x)
    torch.testing.assert_close(fast.running_var, plain.running_var, rtol=1e-13, atol=0)
    batch_var = x.transpose(0, 1).reshape(3, -1).var(dim=1, unbiased=False)
    torch.testing.assert_close(fast.running_var, 0.49 + (0.3 + 0.21) * batch_var)


@pytest.mark.parametrize(
    "build,shape",
    [
        (lambda: PolyNorm(), (2, 3)),
        (lambda: PolyNorm(), (1, 1)),
        (lambda: EvoNorm2dB0(3).train(), (2, 3, 2, 3)),
        (lambda: EvoNorm2dB0(3).eval(), (2, 3, 1, 3)),
        (lambda: EvoNorm2dS0(4, groups=2), (2, 4, 1, 3)),
    ],
)
def test_gradcheck_float64_tiny(build: Callable[[], nn.Module], shape: tuple[int, ...]) -> None:
    m = _randomise(build(), 7).double()
    if isinstance(m, EvoNorm2dB0):
        m.running_var.fill_(0.7)
    names = [n for n, _ in m.named_parameters()]

    def fn(inp: Tensor, *ps: Tensor) -> Tensor:
        return torch.func.functional_call(m, dict(zip(names, ps, strict=True)), (inp,))

    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    args = [x.requires_grad_(True)] + [
        p.detach().clone().requires_grad_(True) for p in m.parameters()
    ]
    assert torch.autograd.gradcheck(fn, tuple(args))


@pytest.mark.parametrize("d", [1, 7, 16, 33, 130])
def test_polynorm_odd_sizes_and_layouts(d: int) -> None:
    g = torch.Generator().manual_seed(d)
    m = _randomise(PolyNorm(), d).double()
    x = torch.randn(d, 3, generator=g, dtype=torch.float64).t()  # non-contiguous rows
    up = torch.randn(3, d, generator=g, dtype=torch.float64)
    got = _run(m, x, up)
    plain = PolyNorm(fused=False).double()
    plain.load_state_dict(m.state_dict())
    for a, b in zip(got, _run(plain, x, up), strict=True):
        torch.testing.assert_close(a, b, **TOL[torch.float64])


@pytest.mark.parametrize("hw", [(1, 1), (3, 5), (4, 4), (5, 7)])
def test_evonorm_odd_sizes(hw: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(sum(hw))
    for fast, plain in (
        (EvoNorm2dB0(6), EvoNorm2dB0(6, fused=False)),
        (EvoNorm2dS0(6, groups=2), EvoNorm2dS0(6, groups=2, fused=False)),
    ):
        fast = _randomise(fast, 9).double()
        plain = plain.double()
        plain.load_state_dict(fast.state_dict())
        x = torch.randn(3, 6, *hw, generator=g, dtype=torch.float64)
        up = torch.randn(3, 6, *hw, generator=g, dtype=torch.float64)
        for a, b in zip(_run(fast, x, up), _run(plain, x, up), strict=True):
            torch.testing.assert_close(a, b, **TOL[torch.float64])


def test_zero_rows_use_eps_and_give_finite_gradients() -> None:
    for dtype in (torch.float32, torch.float64):
        m = _randomise(PolyNorm(), 11).to(dtype)
        x = torch.zeros(2, 8, dtype=dtype)
        x[1] = torch.linspace(-1, 1, 8, dtype=dtype)
        got = _run(m, x, torch.ones_like(x))
        assert all(bool(torch.isfinite(t).all()) for t in got)
        torch.testing.assert_close(got[0][0], m.bias.detach().expand(8))  # N(0) = 0: y = a0
        # d/dx of a1 x / sqrt(mean x^2 + eps) at x = 0 is a1 / sqrt(eps)
        torch.testing.assert_close(got[1][0], (m.weight[2] / 1e-3).detach().expand(8))
        for m2 in (_randomise(EvoNorm2dB0(2), 12), _randomise(EvoNorm2dS0(2, groups=2), 13)):
            m2 = m2.to(dtype)
            z = torch.zeros(2, 2, 3, 3, dtype=dtype)
            out = _run(m2, z, torch.ones_like(z))
            assert all(bool(torch.isfinite(t).all()) for t in out)
            torch.testing.assert_close(out[0], m2.bias.detach().view(1, 2, 1, 1).expand_as(z))


@pytest.mark.parametrize("scale", [1e-12, 1e-4, 1e3, 1e5])
def test_huge_and_tiny_values_follow_the_float64_formula(scale: float) -> None:
    g = torch.Generator().manual_seed(14)
    x64 = scale * torch.randn(4, 8, 3, 3, generator=g, dtype=torch.float64)
    m = _randomise(PolyNorm(), 15)
    ref = polynorm_reference(x64, m.weight, m.bias)
    got = m(x64.float()).double()
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4 * float(ref.detach().abs().max()))
    for layer, fref in (
        (EvoNorm2dB0(8), lambda m, x: evonorm_b0_reference(x, m.v, m.weight, m.bias, None)),
        (EvoNorm2dS0(8, groups=4), lambda m, x: evonorm_s0_reference(x, m.v, m.weight, m.bias, 4)),
    ):
        mm = _randomise(layer, 16)
        got = mm(x64.float()).double()
        torch.testing.assert_close(got, fref(mm, x64).detach(), rtol=1e-4, atol=1e-5)


def test_nan_and_inf_propagate_like_the_torch_path(torch_path: Callable[[bool], None]) -> None:
    x = torch.randn(3, 4, 3, 3)
    x[0, 1, 0, 0] = float("nan")
    x[1, 2, 1, 1] = float("inf")
    x[2, 0, 2, 2] = -float("inf")
    up = torch.randn_like(x)
    for m in (PolyNorm(), EvoNorm2dB0(4).train(), EvoNorm2dB0(4).eval(), EvoNorm2dS0(4, groups=2)):
        native = _run(m, x, up)
        torch_path(True)
        twin = _run(m, x, up)
        torch_path(False)
        for a, b in zip(native, twin, strict=True):
            assert torch.equal(torch.isnan(a), torch.isnan(b)), type(m).__name__
            assert torch.equal(torch.isinf(a), torch.isinf(b)), type(m).__name__
            fin = torch.isfinite(a) & torch.isfinite(b)
            torch.testing.assert_close(a[fin], b[fin], rtol=2e-5, atol=2e-5)


def test_thread_count_does_not_change_results() -> None:
    g = torch.Generator().manual_seed(17)
    cases = [
        (PolyNorm(), torch.randn(300, 17, 64, generator=g)),
        (EvoNorm2dB0(16), torch.randn(16, 16, 12, 12, generator=g)),
        (EvoNorm2dS0(16, groups=4), torch.randn(16, 16, 12, 12, generator=g)),
    ]
    old = torch.get_num_threads()
    try:
        for m, x in cases:
            up = torch.randn(x.shape, generator=g)
            outs = []
            for n in (1, 2):
                torch.set_num_threads(n)
                outs.append(_run(m, x, up))
            for a, b in zip(*outs, strict=True):
                assert torch.equal(a, b), type(m).__name__  # fixed reduction order: bitwise
    finally:
        torch.set_num_threads(old)


def test_second_derivative_is_refused_in_one_line() -> None:
    for m, x in (
        (PolyNorm(), torch.randn(2, 5)),
        (EvoNorm2dS0(4, groups=2), torch.randn(2, 4, 2, 2)),
    ):
        x.requires_grad_(True)
        (gx,) = torch.autograd.grad(m(x).square().sum(), x, create_graph=False)
        assert gx.shape == x.shape
        with pytest.raises(RuntimeError, match="fused=False") as e:
            torch.autograd.grad(m(x).square().sum(), x, create_graph=True)
        assert "no second derivative" in str(e.value).splitlines()[0]
    m = EvoNorm2dB0(4, fused=False)  # the plain twin has one
    x = torch.randn(2, 4, 2, 2, requires_grad=True)
    (gx,) = torch.autograd.grad(m(x).square().sum(), x, create_graph=True)
    gx.sum().backward()


def test_half_inputs_run_the_float32_kernel() -> None:
    x = torch.randn(2, 4, 3, 3)
    for m in (PolyNorm(), EvoNorm2dB0(4).eval(), EvoNorm2dS0(4, groups=2)):
        y = m(x.to(torch.bfloat16))
        assert y.dtype == torch.bfloat16
        torch.testing.assert_close(y.float(), m(x.to(torch.bfloat16).float()), rtol=1e-2, atol=1e-2)


def test_without_a_compiler_warns_once_and_falls_back(tmp_path: object) -> None:
    code = """
        import warnings, torch
        from actlab.layers import _norm_native
        from actlab.layers.evonorm import EvoNorm2dB0, EvoNorm2dS0
        from actlab.layers.polynorm import PolyNorm
        torch.manual_seed(0)
        x = torch.randn(2, 4, 3, 3, requires_grad=True)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            for m in (PolyNorm(), EvoNorm2dB0(4), EvoNorm2dS0(4, groups=2), PolyNorm()):
                m(x).sum().backward()
                y = m(x)
        failed = "PolyNorm / EvoNorm kernels could not"
        msgs = [str(i.message) for i in w if failed in str(i.message)]
        print("warnings", len(msgs), "available", _norm_native.available())
        print("fn", type(y.grad_fn).__name__)
    """
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, "ACTLAB_CACHE": str(tmp_path), "CXX": "/nonexistent/c++"},
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "warnings 1 available False" in r.stdout, r.stdout + r.stderr[-2000:]
    assert "fn _PolyNormFnBackward" in r.stdout  # the torch Function twin ran
