"""Fast paths vs their plain twins: compiled and lean-eager kernels against the autograd
reference path (values and gradients), saved-for-backward memory, fallback and mode control."""

from __future__ import annotations

import warnings

import pytest
import torch
from kernel_helpers import run_fwd_bwd

import actlab
from actlab.activations import _fused, kernel_mode, set_kernel_mode
from actlab.activations._fused import ElementwiseKernel, compile_unavailable, get_kernel_mode

FUSED = [n for n in actlab.list_activations() if actlab.get_activation_info(n).fused]
EAFO_BASES = ["gelu", "silu", "softplus", "sigmoid", "tanh", "relu"]
# Inductor cannot build these kernels without a vector ISA (ATEN_CPU_CAPABILITY=default)
NO_COMPILE = compile_unavailable("cpu")
needs_compile = pytest.mark.skipif(
    NO_COMPILE is not None, reason=f"compiled mode unavailable: {NO_COMPILE}"
)


_run = run_fwd_bwd


def _perturb(m: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1)
    return m


@needs_compile
@pytest.mark.parametrize("spec", FUSED)
def test_compiled_matches_reference(spec: str) -> None:
    m = _perturb(actlab.create_activation(spec))
    x0 = torch.randn(70_001) * 3  # odd size: exercises the vector tail
    g = torch.randn_like(x0)
    ref = _run(m, x0, g, "reference")
    got = _run(m, x0, g, "compiled")
    for a, b in zip(ref, got):
        torch.testing.assert_close(b, a, rtol=2e-5, atol=2e-5)


@needs_compile
@pytest.mark.parametrize("spec", ["relu2", "crrelu"])
def test_compiled_serves_many_sizes_without_falling_back(spec: str) -> None:
    """The first size gets a static graph, later ones one dynamic graph (Dynamo's automatic
    dynamic shapes): more distinct sizes than Dynamo's recompile limit (8) all stay on the
    compiled path, with no warning, and match the reference."""
    m = _perturb(actlab.create_activation(spec))
    kernel = {"relu2": actlab.activations.polycom.RELU2, "crrelu": actlab.activations.eafo.CRRELU}[
        spec
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # actlab's fallback warning
        for n in (3001, 5, 1, 70_001, 17, 4096, 999, 2, 12_345, 8, 65_537, 31):
            x0 = torch.randn(n) * 3
            g = torch.randn_like(x0)
            for a, b in zip(_run(m, x0, g, "reference"), _run(m, x0, g, "compiled")):
                torch.testing.assert_close(b, a, rtol=2e-5, atol=2e-5)
    assert "cpu" not in kernel._broken


@pytest.mark.slow
@needs_compile
@pytest.mark.parametrize("base", EAFO_BASES)
def test_compiled_eafo_bases(base: str) -> None:
    m = _perturb(actlab.create_activation(f"eafo(base={base!r})"))
    x0 = torch.randn(10_000) * 3
    g = torch.randn_like(x0)
    for a, b in zip(_run(m, x0, g, "reference"), _run(m, x0, g, "compiled")):
        torch.testing.assert_close(b, a, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("base", EAFO_BASES)
def test_eafo_bases_gradcheck(base: str) -> None:
    m = _perturb(actlab.create_activation(f"eafo(base={base!r}, eps=0.2)")).double()
    x = (torch.randn(200, dtype=torch.float64) * 2).requires_grad_(True)
    x = torch.where((x.detach()).abs() < 1e-3, x + 0.01, x)
    e = m.eps.detach().clone().requires_grad_(True)
    with kernel_mode("eager"):
        assert torch.autograd.gradcheck(
            lambda x, e: torch.func.functional_call(m, {"eps": e}, (x,)), (x, e), atol=1e-5
        )


@pytest.mark.parametrize("spec", FUSED)
def test_lean_paths_save_only_the_input(spec: str) -> None:
    m = actlab.create_activation(spec)
    x = torch.randn(100_000, requires_grad=True)
    sizes: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        sizes[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    for mode in ("eager",) if NO_COMPILE else ("eager", "compiled"):
        sizes.clear()
        with kernel_mode(mode), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = m(x)
        assert sum(sizes.values()) <= x.numel() * 4 + 64, (mode, sizes)
        del y
    sizes.clear()
    with kernel_mode("reference"), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        m(x)
    # the plain formula keeps intermediates: the lean path is a real saving for composites
    if spec in ("crrelu", "eafo"):
        assert sum(sizes.values()) > 2 * x.numel() * 4


def test_eafo_relu_base_is_crrelu_positive_branch() -> None:
    """eafo.md: on ReLU's positive branch the correction is x·φ(x), CRReLU up to ε's sign/scale."""
    x = torch.linspace(0.01, 5, 500, dtype=torch.float64)
    m = actlab.create_activation("eafo(base='relu', eps=0.3)").double()
    phi = torch.exp(-x * x / 2) / (2 * torch.pi) ** 0.5
    torch.testing.assert_close(m(x), x - 0.3 * x * phi)
    torch.testing.assert_close(m(-x), torch.zeros_like(x))


def test_eafo_gelu_matches_first_order_formula_on_monotone_branch() -> None:
    """f_ε = f - ε φ (f''/f' + x) wherever f' >= τ (eafo.md), here with autograd derivatives."""
    x = torch.linspace(-0.5, 6, 800, dtype=torch.float64)
    m = actlab.create_activation("eafo(base='gelu', eps=0.05)").double()
    phi = torch.exp(-x * x / 2) / (2 * torch.pi) ** 0.5
    cdf = 0.5 * (1 + torch.erf(x / 2**0.5))
    f, f1, f2 = x * cdf, cdf + x * phi, phi * (2 - x * x)
    assert (f1 >= 0.1).all()
    torch.testing.assert_close(m(x), f - 0.05 * phi * (f2 / f1 + x))


@pytest.mark.parametrize("base", EAFO_BASES)
def test_eafo_correction_is_continuous_for_every_base(base: str) -> None:
    """eafo.md: c(x) is continuous. Steps across the joints (x = 0, the end of the monotone
    branch, where f' crosses tau) on a fine grid must shrink with the step: no jumps."""
    m = actlab.create_activation(f"eafo(base={base!r}, eps=1.0)").double()
    b = actlab.create_activation(base).double()
    joints = [0.0, -0.751791524693564, -1.278464542761074]  # relu/elu kink, gelu/silu f' = 0
    with torch.no_grad():
        grid = torch.linspace(-4, 4, 8001, dtype=torch.float64)
        f1 = torch.func.vmap(torch.func.grad(lambda t: b(t)))(grid)
        near_tau = grid[:-1][((f1[:-1] - 0.1) * (f1[1:] - 0.1)) <= 0]  # where f' crosses tau
        for h in (1e-5, 1e-8):
            x = (
                torch.cat(
                    [
                        grid,
                        *(
                            j + torch.linspace(-100 * h, 100 * h, 201, dtype=torch.float64)
                            for j in [*joints, *near_tau.tolist()]
                        ),
                    ]
                )
                .sort()
                .values
            )
            corr = b(x) - m(x)  # ε·c(x)
            steps = corr.diff().abs() / x.diff().clamp_min(h)
            assert steps.max() < 50, (base, h, float(steps.max()))  # a bounded slope: no jump


def test_eafo_refuses_elu_whose_correction_jumps() -> None:
    """ELU's f'' jumps at 0 (1 -> 0), so its correction would jump by eps*phi(0) there."""
    with pytest.raises(ValueError, match="'elu' is refused.*second derivative jumps"):
        actlab.create_activation("eafo(base='elu')")


def test_eafo_correction_continuous_and_zero_off_branch() -> None:
    m = actlab.create_activation("eafo(base='gelu', eps=1.0)").double()
    base = actlab.create_activation("gelu").double()
    x = torch.linspace(-3, 1, 40001, dtype=torch.float64)
    corr = base(x) - m(x)
    assert corr[x < -0.7518].abs().max() < 1e-15  # outside the monotone branch (rounding only)
    assert corr.diff().abs().max() < 1e-2  # no jumps on a 1e-4 grid


def test_compile_unavailable_under_portable_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    """No vector ISA for Inductor (ATEN_CPU_CAPABILITY=default): auto uses the eager lean path
    with one warning per process; an explicit "compiled" is a one-line RuntimeError at once."""
    monkeypatch.setattr(_fused, "_UNAVAILABLE", {"cpu": "Inductor has no vector ISA (test)"})
    monkeypatch.setattr(_fused, "_warned_unavailable", set())
    m = actlab.create_activation("swish(beta=1.3)")
    x = torch.randn(100_000, requires_grad=True)
    with kernel_mode("auto"), warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        y = m(x)
        y.sum().backward()
        m(x)
    msgs = [str(i.message) for i in w if "actlab" in str(i.message)]
    assert len(msgs) == 1 and "eager lean path" in msgs[0], msgs
    with kernel_mode("reference"):
        torch.testing.assert_close(y, m(x))
    with kernel_mode("compiled"), pytest.raises(RuntimeError) as err:
        m(x)
    assert "\n" not in str(err.value) and "'compiled' is unavailable on cpu" in str(err.value)


@pytest.mark.skipif(NO_COMPILE is None, reason="only under the portable dispatch")
def test_this_process_detects_the_portable_dispatch() -> None:
    assert "vector instruction set" in str(NO_COMPILE)


def test_compile_failure_falls_back_to_eager_with_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*a, **k):  # type: ignore[no-untyped-def]
        raise RuntimeError("no compiler here")

    k = ElementwiseKernel("test_crrelu", lambda x, e: x * e, lambda x, g, e: (g * e, (g * x).sum()))
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: broken)
    monkeypatch.setattr(_fused, "_UNAVAILABLE", {"cpu": None})
    x = torch.randn(100_000, requires_grad=True)
    e = torch.tensor(2.0, requires_grad=True)
    with kernel_mode("auto"), warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        y = k(x, e)
        y.sum().backward()
    assert any("failed to compile" in str(i.message) for i in w)
    torch.testing.assert_close(y, x.detach() * 2)
    torch.testing.assert_close(e.grad, x.detach().sum())
    with kernel_mode("compiled"), pytest.raises(RuntimeError, match="no compiler"):
        k(x, e)


def test_mode_control(monkeypatch: pytest.MonkeyPatch) -> None:
    assert get_kernel_mode() == "auto"
    with kernel_mode("eager"):
        assert get_kernel_mode() == "eager"
    set_kernel_mode("reference")
    try:
        assert get_kernel_mode() == "reference"
        with kernel_mode("eager"):  # a context wins over the process-wide setting
            assert get_kernel_mode() == "eager"
        assert get_kernel_mode() == "reference"
    finally:
        set_kernel_mode(None)
    # the environment is read once: a change is seen after set_kernel_mode(None), not before
    monkeypatch.setenv("ACTLAB_KERNEL", "eager")
    assert get_kernel_mode() == "auto"
    try:
        set_kernel_mode(None)
        assert get_kernel_mode() == "eager"
        monkeypatch.setenv("ACTLAB_KERNEL", "bogus")
        with pytest.raises(ValueError, match="ACTLAB_KERNEL='bogus' is not one of"):
            set_kernel_mode(None)
        with pytest.raises(ValueError, match="ACTLAB_KERNEL"):
            get_kernel_mode()  # an invalid value is never kept: every lookup says so
    finally:
        monkeypatch.delenv("ACTLAB_KERNEL")
        set_kernel_mode(None)
    assert get_kernel_mode() == "auto"
    for bad in ("fast", "", None, 3):
        with pytest.raises(ValueError, match="is not one of auto, compiled, eager, native"):
            with kernel_mode(bad):  # type: ignore[arg-type]
                pass
    with pytest.raises(ValueError, match="is not one of"):
        set_kernel_mode("fast")


def test_mode_is_per_thread_and_setting_per_process() -> None:
    import threading

    seen: dict[str, str] = {}
    set_kernel_mode("eager")
    try:
        with kernel_mode("reference"):
            t = threading.Thread(target=lambda: seen.update(other=get_kernel_mode()))
            t.start()
            t.join()
            seen["this"] = get_kernel_mode()
    finally:
        set_kernel_mode(None)
    assert seen == {"other": "eager", "this": "reference"}


def test_min_numel_from_context_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _fused.fuse_min_numel() == 65536
    with kernel_mode("auto", min_numel=1):
        assert _fused.fuse_min_numel() == 1
    assert _fused.fuse_min_numel() == 65536
    monkeypatch.setenv("ACTLAB_FUSE_MIN_NUMEL", "128")
    try:
        set_kernel_mode(None)
        assert _fused.fuse_min_numel() == 128
        monkeypatch.setenv("ACTLAB_FUSE_MIN_NUMEL", "many")
        with pytest.raises(ValueError, match="ACTLAB_FUSE_MIN_NUMEL='many' is not a whole"):
            set_kernel_mode(None)
    finally:
        monkeypatch.delenv("ACTLAB_FUSE_MIN_NUMEL")
        set_kernel_mode(None)
    with pytest.raises(ValueError, match="min_numel"):
        with kernel_mode("auto", min_numel=-1):
            pass


def test_small_tensors_stay_eager_in_auto_mode() -> None:
    k = ElementwiseKernel("probe", lambda x: x * 2, lambda x, g: (g * 2,))
    assert not k._want_compiled("auto", torch.randn(10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the portable dispatch warns (once) and says no
        assert k._want_compiled("auto", torch.randn(1 << 17)) is (NO_COMPILE is None)


def test_bf16_input_with_float32_parameter() -> None:
    m = actlab.create_activation("crrelu")
    x = torch.randn(1000, dtype=torch.bfloat16, requires_grad=True)
    y = m(x)
    y.float().sum().backward()
    assert (
        y.dtype == torch.bfloat16 and m.eps.grad is not None and m.eps.grad.dtype == torch.float32
    )


@needs_compile
@pytest.mark.parametrize("spec", ["crrelu", "eafo"])
def test_compiled_float64_against_oracle_and_gradcheck(spec: str) -> None:
    """The fused path in float64: values vs the registry's float64 oracle; gradcheck gradients."""
    m = _perturb(actlab.create_activation(spec)).double()
    x = torch.linspace(-6, 6, 3001, dtype=torch.float64)
    with kernel_mode("compiled"), torch.no_grad():
        y = m(x)
    torch.testing.assert_close(
        y, actlab.get_activation_info(spec).reference(x, m), rtol=1e-12, atol=1e-13
    )
    xs = (torch.randn(40, dtype=torch.float64) * 2).requires_grad_(True)
    xs = torch.where(xs.detach().abs() < 1e-3, xs + 0.01, xs)
    e = m.eps.detach().clone().requires_grad_(True)
    with kernel_mode("compiled"):
        assert torch.autograd.gradcheck(
            lambda x, e: torch.func.functional_call(m, {"eps": e}, (x,)), (xs, e)
        )


def test_forced_capability_gets_its_own_inductor_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inductor's graph cache is not keyed by vector width: a forced ATEN_CPU_CAPABILITY must
    not share it with the default dispatch (half-wrong results or a crash, seen with torch 2.13)."""
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    _fused._separate_inductor_cache()
    import os

    assert os.environ["TORCHINDUCTOR_CACHE_DIR"].endswith("-avx2")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/somewhere/else")
    _fused._separate_inductor_cache()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/somewhere/else"  # an explicit choice wins
