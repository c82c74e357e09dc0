"""Native C++ kernels (CRReLU, eafo(gelu)) against their plain twins and a float64 oracle.

The library is built on first use (~15-30 s once per machine, cached under $ACTLAB_CACHE);
these tests fail, with the build error, if it cannot be built on a machine that should.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from kernel_helpers import run_fwd_bwd

import actlab
from actlab.activations import _native, kernel_mode

NATIVE = ["crrelu(eps=0.3)", "eafo(base='gelu', eps=0.2)"]

pytestmark = pytest.mark.skipif(
    os.environ.get("ACTLAB_NATIVE", "1") == "0", reason="native kernels disabled by ACTLAB_NATIVE=0"
)


def test_library_builds_and_registers_every_op() -> None:
    assert _native.available(), _native.unavailable_reason()
    for name in ("crrelu", "eafo_gelu"):
        ops = _native.native_ops(name)
        assert ops is not None and callable(ops.fwd) and callable(ops.bwd) and callable(ops.op)
    with pytest.raises(KeyError, match="no native kernel"):
        _native.native_ops("mish")


_run = run_fwd_bwd


@pytest.mark.parametrize("spec", NATIVE)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_native_matches_float64_reference(spec: str, dtype: torch.dtype) -> None:
    m = actlab.create_activation(spec)
    x0 = torch.randn(70_001, dtype=torch.float64) * 3  # odd size: exercises the vector tail
    g = torch.randn_like(x0)
    ref = _run(m.double(), x0, g, "reference")  # the plain formula through autograd, float64
    got = _run(m.to(dtype), x0.to(dtype), g.to(dtype), "native")
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    for a, b in zip(ref[:2], got[:2]):  # values, input gradients
        torch.testing.assert_close(b.double(), a, **tol)  # type: ignore[arg-type]
    # the ε gradient is a sum of 70k terms: compare relative to the sum of magnitudes
    scale = float((g.abs() * x0.abs()).sum())
    assert abs(float(got[2]) - float(ref[2])) <= (1e-6 if dtype == torch.float32 else 1e-13) * scale


@pytest.mark.parametrize("spec", NATIVE)
def test_native_matches_registered_reference_oracle(spec: str) -> None:
    m = actlab.create_activation(spec).double()
    info = actlab.get_activation_info(spec.split("(")[0])
    x = torch.linspace(-12, 12, 4001, dtype=torch.float64)
    with kernel_mode("native"), torch.no_grad():
        torch.testing.assert_close(m(x), info.reference(x, m), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spec", NATIVE)
def test_native_gradcheck_including_eps(spec: str) -> None:
    m = actlab.create_activation(spec).double()
    x = (torch.randn(300, dtype=torch.float64) * 2).requires_grad_(True)
    eps = m.eps
    with kernel_mode("native"):
        assert torch.autograd.gradcheck(m, (x,), eps=1e-6, atol=1e-7)
        y = m(x)
    (gx_eps,) = torch.autograd.grad(y.sum(), eps)
    h = 1e-6
    with torch.no_grad(), kernel_mode("native"):
        e0 = float(eps)
        eps.fill_(e0 + h)
        up = m(x).sum()
        eps.fill_(e0 - h)
        down = m(x).sum()
        eps.fill_(e0)
    assert abs(float(gx_eps) - float((up - down) / (2 * h))) < 1e-6 * max(1.0, abs(float(gx_eps)))


@pytest.mark.parametrize("spec", NATIVE)
def test_native_autograd_runs_in_cpp(spec: str) -> None:
    """Forward and backward are one C++ autograd node, not a Python autograd.Function."""
    m = actlab.create_activation(spec)
    with kernel_mode("native"):
        y = m(torch.randn(100, requires_grad=True))
    assert (
        y.grad_fn is not None and "Function>" in y.grad_fn.name() and "CppNode" in y.grad_fn.name()
    )
    with kernel_mode("native"), torch.no_grad():
        assert m(torch.randn(100)).grad_fn is None


@pytest.mark.parametrize("spec", NATIVE)
def test_native_saves_only_the_input(spec: str) -> None:
    m = actlab.create_activation(spec)
    x = torch.randn(10_000, requires_grad=True)
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.numel() > 1:
            saved.append(t.numel() * t.element_size())
        return t

    with kernel_mode("native"), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        m(x).sum().backward()
    assert sum(saved) <= x.numel() * x.element_size()


@pytest.mark.parametrize("spec", NATIVE)
def test_native_handles_layouts_empty_and_non_finite(spec: str) -> None:
    m = actlab.create_activation(spec)
    x0 = torch.randn(33, 65) * 3
    t = x0.t()  # non-contiguous
    with torch.no_grad():
        with kernel_mode("native"):
            a = m(t)
        with kernel_mode("reference"):
            b = m(t)
    assert a.shape == t.shape
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with kernel_mode("native"):
        e = torch.empty(0, 4, requires_grad=True)
        m(e).sum().backward()
        assert e.grad is not None and e.grad.shape == e.shape
        special = torch.tensor(
            [float("inf"), float("-inf"), float("nan"), 60.0, -60.0], requires_grad=True
        )
        y = m(special)
        y.backward(torch.ones_like(y))
    with kernel_mode("reference"), torch.no_grad():
        yr = m(special.detach())
    torch.testing.assert_close(y.detach(), yr, equal_nan=True)  # same limits as the formula
    gx = special.grad
    assert gx is not None and torch.isnan(gx[2])
    # derivatives at +-inf are the limits (1 and 0), never nan; +-60 is far in the tails
    torch.testing.assert_close(gx[[0, 1, 3, 4]], torch.tensor([1.0, 0.0, 1.0, 0.0]))


@pytest.mark.parametrize("spec", NATIVE)
def test_eps_gradient_does_not_depend_on_thread_count(spec: str) -> None:
    m = actlab.create_activation(spec)
    x0 = torch.randn(300_001)
    g = torch.randn_like(x0)
    old = torch.get_num_threads()
    grads = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            grads.append(_run(m, x0, g, "native"))
    finally:
        torch.set_num_threads(old)
    for a, b in zip(*grads):
        assert torch.equal(a, b)  # bitwise: fixed reduction blocks


def test_other_dtypes_and_kernels_fall_back() -> None:
    m = actlab.create_activation("crrelu(eps=0.3)").to(torch.bfloat16)
    x = torch.randn(1000, dtype=torch.bfloat16)
    with kernel_mode("native"), torch.no_grad():
        y = m(x)
    assert y.dtype == torch.bfloat16
    with kernel_mode("native"), torch.no_grad():  # silu base: no native kernel, behaves as auto
        s = actlab.create_activation("eafo(base='silu')")(torch.randn(100))
    assert torch.isfinite(s).all()


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )


def test_disabled_by_environment_uses_the_other_paths() -> None:
    r = _python(
        """
        import torch, actlab
        from actlab.activations import _native, kernel_mode
        m = actlab.create_activation("crrelu")
        x = torch.randn(1000, requires_grad=True)
        m(x).sum().backward()
        print("available", _native.available(), _native.unavailable_reason())
        try:
            with kernel_mode("native"):
                m(x)
        except RuntimeError as e:
            print("raised", e)
    """,
        ACTLAB_NATIVE="0",
    )
    assert r.returncode == 0, r.stderr
    assert "available False disabled by ACTLAB_NATIVE=0" in r.stdout
    assert "raised native kernel for crrelu is unavailable: disabled" in r.stdout


def test_failed_build_warns_once_and_falls_back(tmp_path: object) -> None:
    r = _python(
        """
        import warnings, torch, actlab
        from actlab.activations import _native
        m = actlab.create_activation("crrelu")
        x = torch.randn(100_000, requires_grad=True)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            with actlab.activations.kernel_mode("eager"):
                ref = m(x.detach())
            y = m(x)
            y.sum().backward()
            m(x)
        failed = "native CPU kernels could not be built"
        msgs = [str(i.message) for i in w if failed in str(i.message)]
        print("warnings", len(msgs), "available", _native.available())
        print("same", torch.allclose(y.detach(), ref, atol=1e-6))
    """,
        ACTLAB_CACHE=str(tmp_path),
        CXX="/nonexistent/c++",
    )
    assert r.returncode == 0, r.stderr
    assert "warnings 1 available False" in r.stdout and "same True" in r.stdout


def test_the_kernels_are_one_extension_of_the_shared_builder() -> None:
    """Build, cache, lock and fallback are actlab._ext's (tested in tests/ext); this module
    declares the sources and ops, and reads its state from the builder."""
    from actlab import _ext

    assert _native.KERNELS.namespace == "actlab_native"
    assert _native.build_dir() == _ext.build_dir(_native.KERNELS)
    lib = _ext.load(_native.KERNELS)  # the library test_library_builds... loaded
    assert lib.isa == _ext.capability() and lib.path.parent == _native.build_dir()


@pytest.mark.slow
@pytest.mark.parametrize("isa", ["AVX2", "DEFAULT"])
def test_lesser_instruction_sets_match_the_float64_formula(isa: str, tmp_path: object) -> None:
    """The AVX2 and portable builds (ACTLAB_NATIVE_ISA) have their own code paths; ~30 s each."""
    r = _python(
        """
        import torch, actlab
        from actlab.activations import _native, kernel_mode
        assert _native.available(), _native.unavailable_reason()
        torch.manual_seed(0)
        x0 = torch.cat([torch.linspace(-14, 14, 20_001, dtype=torch.float64),
                        torch.randn(30_001, dtype=torch.float64) * 3])
        g = torch.randn_like(x0)
        for spec in ("crrelu(eps=0.3)", "eafo(base='gelu', eps=0.2)"):
            m = actlab.create_activation(spec).double()
            outs = {}
            modes = (
                ("reference", torch.float64),
                ("native", torch.float32),
                ("native", torch.float64),
            )
            for mode, dt in modes:
                mm = m.to(dt)
                mm.zero_grad()
                x = x0.to(dt).clone().requires_grad_(True)
                with kernel_mode(mode):
                    y = mm(x)
                    y.backward(g.to(dt))
                outs[dt if mode == "native" else "ref"] = (y.detach().double(), x.grad.double())
            for dt, tol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
                for a, b in zip(outs[dt], outs["ref"]):
                    err = float(((a - b).abs() / (1 + b.abs())).max())
                    assert err <= tol, (spec, dt, err)
        from actlab import _ext
        print("ok", _ext.capability())
    """,
        ACTLAB_CACHE=str(tmp_path),
        ACTLAB_NATIVE_ISA=isa,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"ok {isa}" in r.stdout


def test_isa_override_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    from actlab import _ext

    monkeypatch.setenv("ACTLAB_NATIVE_ISA", "avx2")
    assert _ext.capability() == "AVX2" and _native.build_dir() == _ext.build_dir(
        _native.KERNELS, "AVX2"
    )
    monkeypatch.setenv("ACTLAB_NATIVE_ISA", "sse9")
    with pytest.raises(ValueError, match="expected one of AVX512, AVX2, DEFAULT"):
        _ext.capability()
