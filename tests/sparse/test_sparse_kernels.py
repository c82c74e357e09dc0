"""The fused sparse decode kernels (actlab.sparse.use_kernels) against float64 references.

Tolerance (float32 accumulation in another order than the reference): every output within
``1e-5 * sum_k |x_k w_k| (+ |b|)`` of the float64 result computed with the same weights (for
bf16 packing: the bf16-rounded weights, the intended change). Run under
``ACTLAB_NATIVE_ISA=AVX2`` and ``DEFAULT`` too (Makefile, test-portable).
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from decode_helpers import tiny_gemma3
from sparse_helpers import tiny_llama
from torch import nn

from actlab._ext import NativeUnavailable, capability
from actlab._ext import _builder as ext_builder
from actlab.sparse import (
    SparseError,
    SparseGatedMLP,
    SparseLinear,
    SparseTopKLinear,
    drop_kernels,
    kernels_available,
    make_method,
    use_kernels,
)
from actlab.sparse._kernels import KERNELS, kernel_isa

pytestmark = pytest.mark.skipif(not kernels_available(), reason="sparse kernels not built here")

DTYPES = (torch.float32, torch.bfloat16)


def _op(name: str):  # noqa: ANN202
    return getattr(torch.ops.actlab_sparse, name)


def _check(y: torch.Tensor, ref: torch.Tensor, scale: torch.Tensor) -> None:
    err = (y.double() - ref).abs()
    bound = 1e-5 * scale + 1e-30
    assert bool((err <= bound).all()), f"max err/scale {float((err / (scale + 1e-30)).max()):.3g}"


def _linear_ref(x, w, b, keep):  # noqa: ANN001, ANN202
    xk = (x * keep).double()
    ref = xk @ w.double().T + (0 if b is None else b.double())
    scale = xk.abs() @ w.double().abs().T + (0 if b is None else b.double().abs())
    return ref, scale


SHAPES = [(1, 1, 1), (1, 37, 53), (3, 100, 77), (1, 576, 960), (8, 65, 129), (2, 33, 1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows,k,n", SHAPES)
@pytest.mark.parametrize("per_channel", [False, True])
def test_sparse_linear_matches_reference(rows, k, n, dtype, per_channel) -> None:  # noqa: ANN001
    g = torch.Generator().manual_seed(rows * 1000 + k + n)
    x = torch.randn(rows, k, generator=g)
    w = torch.randn(n, k, generator=g)
    b = torch.randn(n, generator=g)
    t = torch.rand(k, generator=g) if per_channel else torch.tensor(0.6)
    keep = x.abs() > t
    counts = torch.zeros(2, dtype=torch.long)
    wt = w.t().contiguous().to(dtype)
    y = _op("sparse_linear")(x, wt, b, float(t.max()), t if per_channel else None, counts)
    _check(y, *_linear_ref(x, w.to(dtype).float(), b, keep))
    assert counts.tolist() == [rows * k, int((~keep).sum())]


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_zero_and_all_survive(dtype) -> None:  # noqa: ANN001
    g = torch.Generator().manual_seed(3)
    w, b = torch.randn(70, 45, generator=g), torch.randn(70, generator=g)
    wt = w.t().contiguous().to(dtype)
    op = _op("sparse_linear")
    assert torch.equal(op(torch.zeros(2, 45), wt, b, 0.0, None, None), b.expand(2, 70))
    assert torch.equal(op(torch.zeros(1, 45), wt, None, 0.0, None, None), torch.zeros(1, 70))
    x = torch.randn(3, 45, generator=g)
    y = op(x, wt, b, -math.inf, None, None)  # every input survives: the dense product
    _check(y, *_linear_ref(x, w.to(dtype).float(), b, torch.ones_like(x, dtype=torch.bool)))
    _check(
        y, F.linear(x, w.to(dtype).float(), b).double(), (x.abs() @ w.abs().T + b.abs()).double()
    )


def _gated_ref(x, gw, uw, dw, t, act):  # noqa: ANN001, ANN202
    xd = x.double()
    fn = F.silu if act == 0 else (lambda v: F.gelu(v, approximate="tanh"))
    a = fn(xd @ gw.double().T)
    keep = a.abs() > t.double()
    h = a * keep * (xd @ uw.double().T)
    ref = h @ dw.double().T
    scale = (
        h.abs() @ dw.double().abs().T
        + ((a * keep).abs() * (xd.abs() @ uw.double().abs().T)) @ dw.double().abs().T
    )
    return ref, scale, keep


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", [0, 1])
@pytest.mark.parametrize("rows,d,f,per_channel", [(1, 64, 150, False), (3, 37, 91, True)])
def test_gated_mlp_matches_reference(rows, d, f, per_channel, act, dtype) -> None:  # noqa: ANN001
    g = torch.Generator().manual_seed(d + f + act)
    x = torch.randn(rows, d, generator=g)
    gw, uw = torch.randn(f, d, generator=g) / d**0.5, torch.randn(f, d, generator=g) / d**0.5
    dw = torch.randn(d, f, generator=g) / f**0.5
    t = torch.rand(f, generator=g) * 0.4 if per_channel else torch.tensor(0.15)
    gq, uq, dq = (m.to(dtype).float() for m in (gw, uw, dw))
    ref, scale, keep = _gated_ref(x, gq, uq, dq, t, act)
    counts = torch.zeros(2, dtype=torch.long)
    gt = gw.t().contiguous().to(dtype)
    ud = torch.cat([uw, dw.t()], 1).contiguous().to(dtype)
    y = _op("gated_mlp")(
        x, gt, ud, None, None, None, float(t.max()), t if per_channel else None, act, counts
    )
    # a channel right at its threshold may flip with float32 rounding: compare away from it
    assert 0.2 < 1 - keep.double().mean() < 0.9
    _check(y, ref, scale + 1e-6)
    assert counts.tolist()[0] == rows * f
    assert abs(counts.tolist()[1] - int((~keep).sum())) <= 1


def test_gated_mlp_biases() -> None:
    g = torch.Generator().manual_seed(11)
    d, f = 20, 30
    x = torch.randn(2, d, generator=g)
    gw, uw, dw = torch.randn(f, d, generator=g), torch.randn(f, d, generator=g), torch.randn(d, f)
    gb, ub, db = torch.randn(f, generator=g), torch.randn(f, generator=g), torch.randn(d)
    a = F.silu(x.double() @ gw.double().T + gb.double())
    h = a * (a.abs() > 0.3) * (x.double() @ uw.double().T + ub.double())
    ref = h @ dw.double().T + db.double()
    gt, ud = gw.t().contiguous(), torch.cat([uw, dw.t()], 1).contiguous()
    y = _op("gated_mlp")(x, gt, ud, gb, ub, db, 0.3, None, 0, None)
    assert torch.allclose(y.double(), ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_thread_count_does_not_change_results(dtype) -> None:  # noqa: ANN001
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 300, generator=g)
    wt = torch.randn(300, 1000, generator=g).to(dtype)
    gt = (torch.randn(300, 700, generator=g) / 17).to(dtype)
    ud = (torch.randn(700, 600, generator=g) / 17).to(dtype)
    outs = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        outs.append(
            (
                _op("sparse_linear")(x, wt, None, 0.5, None, None),
                _op("gated_mlp")(x, gt, ud, None, None, None, 0.05, None, 0, None),
            )
        )
    torch.set_num_threads(1)
    assert torch.equal(outs[0][0], outs[1][0])  # same sums in the same order: bit-identical
    assert torch.equal(outs[0][1], outs[1][1])


# Batch 1 streams 8 survivor rows at a time with up to 8 output vectors held in registers, then
# blocks of 4, 2, 1 vectors and a scalar tail; the sizes below hit every block width at 16-
# (AVX-512) and 8-float (AVX2, portable) vectors, survivor counts of every remainder mod 8,
# and (n, k, s) where two threads split the outputs (k * n * (1 - s) >= 65536).
OUTS = (1, 7, 8, 15, 16, 17, 33, 47, 64, 65, 113, 127, 128, 129, 200, 255, 257, 577)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch1_blocks_match_f_linear(dtype) -> None:  # noqa: ANN001
    g = torch.Generator().manual_seed(21)
    op = _op("sparse_linear")
    for i, n in enumerate(OUTS):
        k = (1, 3, 8, 9, 17, 30, 64, 119)[i % 8]
        w, b = torch.randn(n, k, generator=g), torch.randn(n, generator=g)
        wq, wt = w.to(dtype).float(), w.t().contiguous().to(dtype)
        x = torch.randn(1, k, generator=g)
        for t in (-math.inf, 0.0, 0.4, 1.2, math.inf):  # all survive ... none survives
            keep = x.abs() > t
            y = op(x, wt, b if i % 2 else None, t, None, None)
            _check(y, *_linear_ref(x, wq, b if i % 2 else None, keep))
            ref32 = F.linear(x * keep, wq, b if i % 2 else None)
            assert torch.allclose(y, ref32, rtol=1e-5, atol=1e-5 * k), (n, k, t)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch1_thread_count_is_bitwise_invariant(dtype) -> None:  # noqa: ANN001
    g = torch.Generator().manual_seed(22)
    op = _op("sparse_linear")
    cases = []
    for k, n in ((300, 577), (700, 576), (129, 1000)):
        wt = torch.randn(k, n, generator=g).to(dtype)
        x = torch.randn(1, k, generator=g)
        b = torch.randn(n, generator=g)
        cases += [(x, wt, b, t) for t in (-math.inf, 0.0, 0.5)]
    try:
        outs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            outs.append([op(x, wt, b, t, None, None) for x, wt, b, t in cases])
    finally:
        torch.set_num_threads(1)
    for (x, wt, b, t), y1, y2 in zip(cases, *outs, strict=True):
        assert torch.equal(y1, y2), (tuple(wt.shape), t)
        keep = x.abs() > t
        _check(y1, *_linear_ref(x, wt.float().t(), b, keep))


def test_non_finite_and_extreme_inputs() -> None:
    g = torch.Generator().manual_seed(9)
    w = torch.randn(40, 30, generator=g)
    wt = w.t().contiguous()
    op = _op("sparse_linear")
    for special in (math.nan, math.inf, -math.inf):
        x = torch.randn(1, 30, generator=g)
        x[0, 7] = special
        y = op(x, wt, None, 0.5, None, None)
        ref = F.linear(x * (~(x.abs() <= 0.5)), w)  # the torch path keeps NaN (NaN * 0 = NaN)
        assert torch.equal(y.isnan(), ref.isnan()) and torch.equal(y.isinf(), ref.isinf())
        fin = ref.isfinite()
        assert torch.equal(torch.sign(y[~fin & ~y.isnan()]), torch.sign(ref[~fin & ~ref.isnan()]))
        assert torch.allclose(y[fin], ref[fin], rtol=1e-5, atol=1e-4)
    for scale in (1e18, 1e-18):  # huge and tiny (products near float32's range ends)
        x = torch.randn(2, 30, generator=g) * scale
        y = op(x, wt, None, 0.5 * scale, None, None)
        ref, bound = _linear_ref(x, w, None, x.abs() > 0.5 * scale)
        _check(y, ref, bound)
    # the gated kernel: NaN in x reaches every output, as through the torch path
    x = torch.randn(1, 30, generator=g)
    x[0, 3] = math.nan
    gt, ud = torch.randn(30, 50, generator=g), torch.randn(50, 60, generator=g)
    assert bool(_op("gated_mlp")(x, gt, ud, None, None, None, 0.1, None, 0, None).isnan().all())


def test_isa_is_the_selected_one() -> None:
    assert kernel_isa() == capability()


def test_op_errors_are_one_line() -> None:
    op = _op("sparse_linear")
    with pytest.raises(RuntimeError, match="wt is"):
        op(torch.randn(1, 5), torch.randn(6, 3), None, 0.0, None, None)
    with pytest.raises(RuntimeError, match="float32"):
        op(torch.randn(1, 5).double(), torch.randn(5, 3), None, 0.0, None, None)
    with pytest.raises(RuntimeError, match="updown"):
        _op("gated_mlp")(
            torch.randn(1, 4),
            torch.randn(4, 6),
            torch.randn(6, 7),
            None,
            None,
            None,
            0,
            None,
            0,
            None,
        )


# ----------------------------------------------------------------------------- modules / models
def _sparse_linear(dtype: torch.dtype = torch.float32) -> tuple[SparseLinear, SparseLinear]:
    torch.manual_seed(2)
    m = SparseLinear.wrap(nn.Linear(48, 40), 0.7)
    twin = copy.deepcopy(m)
    model = nn.Sequential(twin)
    use_kernels(model, dtype)
    return m, twin


def test_module_kernel_path_matches_torch_path_and_counts() -> None:
    torch.manual_seed(0)
    plain, fast = _sparse_linear()
    assert fast._kernel is not None and plain._kernel is None
    with torch.no_grad():
        for shape in ((48,), (1, 48), (1, 1, 48), (3, 1, 48)):
            x = torch.randn(shape)
            assert torch.allclose(fast(x), plain(x), rtol=1e-5, atol=1e-5)
    assert (fast.seen, fast.zeroed) == (plain.seen, plain.zeroed) and fast.seen > 0
    with torch.no_grad():  # prefill (more rows than max_rows): the torch path, same result
        x = torch.randn(1, 20, 48)
        assert torch.equal(fast(x), plain(x))
    for mode in ("decode", "last-half"):
        plain.mode = fast.mode = mode
        with torch.no_grad():
            x = torch.randn(1, 4, 48)  # several positions: dense (decode) / half (last-half)
            assert torch.allclose(fast(x), plain(x), rtol=1e-5, atol=1e-5)
    x = torch.randn(1, 48, requires_grad=True)  # autograd: the torch path
    fast(x).sum().backward()
    assert x.grad is not None


def test_module_follows_weight_changes_and_drop() -> None:
    plain, fast = _sparse_linear(torch.float32)
    with torch.no_grad():
        fast.weight.mul_(2.0)
        plain.weight.mul_(2.0)
        x = torch.randn(1, 48)
        assert torch.allclose(fast(x), plain(x), rtol=1e-5, atol=1e-5)
    assert drop_kernels(nn.Sequential(fast)) == 1 and fast._kernel is None


def test_bf16_module_and_topk_site() -> None:
    plain, fast = _sparse_linear(torch.bfloat16)
    with torch.no_grad():
        x = torch.randn(2, 48)
        keep = x.abs() > 0.7
        ref, scale = _linear_ref(x, plain.weight.bfloat16().float(), plain.bias, keep)
        _check(fast(x), ref, scale)
    torch.manual_seed(4)
    top = SparseTopKLinear.wrap(nn.Linear(32, 24), 0.5)  # WINA: its own keep rule
    twin = copy.deepcopy(top)
    use_kernels(nn.Sequential(twin))
    with torch.no_grad():
        x = torch.randn(1, 1, 32)
        assert torch.allclose(twin(x), top(x), rtol=1e-5, atol=1e-5)
    assert twin.zeroed == top.zeroed == 16


class _Attn(nn.Module):
    def __init__(self, thresholds: tuple[float, float, float]) -> None:
        super().__init__()
        torch.manual_seed(6)
        for name, n, t in zip(("q_proj", "k_proj", "v_proj"), (24, 8, 8), thresholds):
            setattr(self, name, SparseLinear.wrap(nn.Linear(16, n, bias=name != "k_proj"), t))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.q_proj(x), self.k_proj(x), self.v_proj(x)], -1)


@pytest.mark.parametrize("thresholds", [(0.5, 0.5, 0.5), (0.5, 0.2, 0.5)])
def test_siblings_reading_one_input_share_one_call(thresholds) -> None:  # noqa: ANN001
    plain = _Attn(thresholds)
    fast = copy.deepcopy(plain)
    use_kernels(fast)
    packs = {id(m._kernel.packed) for m in (fast.q_proj, fast.k_proj, fast.v_proj)}
    assert len(packs) == (1 if thresholds[0] == thresholds[1] else 2)  # q|k|v or q|v + k
    with torch.no_grad():
        for shape in ((1, 16), (3, 1, 16)):
            x = torch.randn(shape)
            assert torch.allclose(fast(x), plain(x), rtol=1e-5, atol=1e-5)
            x.mul_(2.0)  # in place: the cached output must not be reused
            assert torch.allclose(fast(x), plain(x), rtol=1e-5, atol=1e-5)
        fast.k_proj.weight.mul_(3.0)  # a sibling's weight changes: repacked
        plain.k_proj.weight.mul_(3.0)
        x = torch.randn(1, 16)
        assert torch.allclose(fast(x), plain(x), rtol=1e-5, atol=1e-5)
    for name in ("q_proj", "k_proj", "v_proj"):
        a, b = getattr(fast, name), getattr(plain, name)
        assert (a.seen, a.zeroed) == (b.seen, b.zeroed)


@pytest.mark.parametrize("method", ["teal", "cats", "chess"])
def test_sparsified_llama_same_tokens_with_kernels(method: str, batches) -> None:  # noqa: ANN001
    model = tiny_llama(2, seed=3)
    make_method(method, sparsity=0.5).apply(
        model, make_method(method, sparsity=0.5).calibrate(model, batches)
    )
    prompt = batches[0][:1, :8]
    with torch.no_grad():
        want = model.generate(prompt, max_new_tokens=10, do_sample=False)
        report = use_kernels(model)
        kinds = {type(m) for m in model.modules() if m.__dict__.get("_kernel") is not None}
        assert report.modules and not report.skipped, str(report)
        assert (SparseGatedMLP in kinds) == (method != "teal")
        got = model.generate(prompt, max_new_tokens=10, do_sample=False)
    assert torch.equal(got, want)


def _forget_kernels() -> object:
    return ext_builder._results.pop(KERNELS, None)


def test_no_compiler_falls_back_with_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    plain, _ = _sparse_linear()
    model = nn.Sequential(copy.deepcopy(plain))
    saved = _forget_kernels()
    try:
        ext_builder._results[KERNELS] = NativeUnavailable("x", "CalledProcessError: error: no c++")
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            report = use_kernels(model)
        assert len(got) == 1 and "no c++" in str(got[0].message), [str(w.message) for w in got]
        _forget_kernels()
        monkeypatch.setenv("ACTLAB_NATIVE", "0")
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            report = use_kernels(model)
        assert len(got) == 1 and "ACTLAB_NATIVE=0" in str(got[0].message)
        assert report.reason and not report.modules and model[0]._kernel is None
        x = torch.randn(1, 48)
        with torch.no_grad():
            assert torch.equal(model(x), plain(x))  # the torch path
    finally:
        _forget_kernels()
        if saved is not None:
            ext_builder._results[KERNELS] = saved  # type: ignore[assignment]


def test_use_kernels_bad_input() -> None:
    with pytest.raises(SparseError, match="float32 or torch.bfloat16"):
        use_kernels(nn.Sequential(SparseLinear.wrap(nn.Linear(4, 4), 0.1)), torch.float16)
    with pytest.raises(SparseError, match="no sparse modules"):
        use_kernels(nn.Linear(4, 4))
    with pytest.raises(SparseError, match="max_rows"):
        use_kernels(nn.Sequential(SparseLinear.wrap(nn.Linear(4, 4), 0.1)), max_rows=0)


# ----------------------------------------------------------------------------- lean decode loop
@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_lean_decoder_logits_match_full_forward(arch: str) -> None:
    from actlab.sparse._decode import LeanDecoder

    model = tiny_llama(2, seed=3) if arch == "llama" else tiny_gemma3()
    ids = torch.randint(3, 97, (1, 14), generator=torch.Generator().manual_seed(0))
    dec = LeanDecoder(model, 16)
    with torch.no_grad():
        full = model(input_ids=ids, use_cache=False).logits[0]  # [T, vocab]
        got = [dec.forward(ids[:, :9], 0)]  # prefill 9 positions, then one at a time
        got += [dec.forward(ids[:, p : p + 1], p) for p in range(9, 14)]
    assert torch.allclose(torch.stack(got), full[8:], rtol=1e-4, atol=1e-4)
    want = model.generate(ids[:, :9], max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert torch.equal(LeanDecoder(model, 16).generate(ids[:, :9], 6), want)
    with pytest.raises(SparseError, match="max_len"):
        dec.forward(ids[:, :1], 16)


def test_lean_decoder_with_kernels_same_tokens(batches) -> None:  # noqa: ANN001
    from actlab.sparse._decode import LeanDecoder

    model = tiny_llama(2, seed=3)
    method = make_method("cats", sparsity=0.5)
    method.apply(model, method.calibrate(model, batches))
    prompt = batches[0][:1, :8]
    want = model.generate(prompt, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    use_kernels(model)
    assert torch.equal(LeanDecoder(model, 16).generate(prompt, 8), want)
    with pytest.raises(SparseError, match="Llama-family"):
        LeanDecoder(nn.Linear(2, 2), 8)


def test_non_cpu_weights_keep_the_torch_path() -> None:
    with torch.device("meta"):  # stands for CUDA here: any non-CPU device is left alone
        model = nn.Sequential(SparseLinear.wrap(nn.Linear(8, 8), 0.1))
    report = use_kernels(model)
    assert not report.modules and "CPU-only" in report.skipped["0"]
    assert model[0]._kernel is None
    assert "skipped 0" in str(report)
