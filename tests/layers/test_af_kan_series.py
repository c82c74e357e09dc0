"""AF-KAN's series path (``csrc/kan_af_series.cpp``) against the exact kernels and the twins.

On CPU float32 with ``input_norm="tanh"`` and ``func_norm`` "batch" or "none", a layer call
with at least ``kSeriesMinValues`` (8192) inputs takes the phases from per-call Chebyshev
series: s0 and s1 evaluated inside the tail (the series' T_d recurrence, or on AVX builds
per-cell polynomials fitted to them), the phase gradients from moments,
the min / max of f exact from candidates. Each test compares it with the exact native kernels
(``series=False``), the torch path (``fused=False``) and, for accuracy, the float64 torch path.
"""

from __future__ import annotations

import copy
import os
import warnings

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from _autograd import saved_bytes
from actlab.layers import _kan_native as kn
from actlab.layers import create_layer

pytestmark = pytest.mark.skipif(
    os.environ.get("ACTLAB_NATIVE", "1") == "0", reason="native kernels disabled by ACTLAB_NATIVE=0"
)

ROWS, D_IN, HIDDEN, D_OUT = 1100, 16, 24, 8  # 17,600 and 26,400 inputs: both layers qualify


def _block(spec: str, act: str = "silu", seed: int = 0) -> nn.Module:
    """A float32 AF-KAN block with perturbed parameters (phases off the grid, attention on)."""
    torch.manual_seed(seed)
    m = create_layer(spec, in_features=D_IN, hidden_features=HIDDEN, out_features=D_OUT,
                     act_layer=act)  # fmt: skip
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m.float()


def _variant(m: nn.Module, *, series: bool = True, fused: bool = True) -> nn.Module:
    v = copy.deepcopy(m)
    for layer in (v.layer1, v.layer2):
        layer.fused = fused
        layer.series_knots = 1024 if series else 0
    return v


def _x(rows: int = ROWS, scale: float = 1.5, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, D_IN, generator=g) * scale


def _grads(m: nn.Module, x: Tensor) -> list[Tensor]:
    x = x.detach().clone().requires_grad_(True)
    y = m(x)
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(7))
    params = [p for p in m.parameters() if p.requires_grad]
    got = torch.autograd.grad((y * w).sum(), [x, *params], allow_unused=True)
    return [y.detach()] + [g if g is not None else torch.zeros_like(p) for g, p in
                           zip(got, [x, *params], strict=True)]  # fmt: skip


def _err(m: nn.Module, got: list[Tensor], ref: list[Tensor]) -> list[float]:
    """Per output (value, then gradients): max |got - ref| / (max |ref| + 1e-6), without the
    attention biases' (softmax over the inputs does not see them: their gradient is 0 up to
    rounding)."""
    names = ["y", "x"] + [n for n, p in m.named_parameters() if p.requires_grad]
    return [
        float((a.double() - b.double()).abs().max()) / (float(b.abs().max()) + 1e-6)
        for name, a, b in zip(names, got, ref, strict=True)
        if not name.endswith("attn.bias")
    ]


def _assert_as_accurate(series: list[float], exact: list[float]) -> None:
    for s, e in zip(series, exact, strict=True):
        assert s <= max(4 * e, 2e-4), (series, exact)


def test_autograd_keeps_five_or_six_values_per_input_and_never_f() -> None:
    """Per layer autograd keeps u, act(q) and the tail's a, s1n, act'(q) (five floats per input
    value; the exact path also s0n: six), two per row and the parameters: never f (N, in, G) or
    the contractions. The series path's backward takes the s0n-weighted sums from its moments."""
    m = _block("af_kan")
    x = _x()
    n_in = ROWS * (D_IN + HIDDEN)  # the two layers' input values
    params = sum(p.numel() for p in m.parameters()) * 4
    for per, mod in ((5, m), (6, _variant(m, series=False))):
        got = saved_bytes(lambda mod=mod: mod(x.detach().requires_grad_(True)))
        pad = 4 * (2 * 2 * (ROWS + 16) + 16 * per * (D_IN + HIDDEN))  # rows padded to vectors
        assert per * n_in * 4 <= got <= per * n_in * 4 + pad + params + 4096


def test_the_series_path_runs_where_it_applies() -> None:
    """The series path evaluates s0, s1 another way than the exact kernels (as accurately:
    tested below), so a layer that takes it gives other low bits; below 8,192 inputs, for
    func_norm="sample" and for input_norm="none" both run the same exact kernels."""
    assert kn.ops_for(torch.zeros(1)) is not None
    m = _block("af_kan")
    x = _x()
    with torch.no_grad():
        assert not torch.equal(m(x), _variant(m, series=False)(x))
    for spec, rows in [("af_kan", 300), ("af_kan(func_norm='sample')", ROWS),
                       ("af_kan(input_norm='none')", ROWS)]:  # fmt: skip
        b = _block(spec)
        xs = torch.rand(rows, D_IN, generator=torch.Generator().manual_seed(1)) * 1.8 - 0.9
        with warnings.catch_warnings():  # input_norm="none": layer 2's inputs leave [-1, 1]
            warnings.simplefilter("ignore", RuntimeWarning)
            pairs = zip(_grads(b, xs), _grads(_variant(b, series=False), xs), strict=True)
            for a, e in pairs:
                assert torch.equal(a, e), spec


@pytest.mark.parametrize("act", ["silu", "gelu"])
@pytest.mark.parametrize("func", ["quad1", "quad2", "sum", "prod", "cubic1", "cubic2"])
@pytest.mark.parametrize("func_norm", ["batch", "none"])
def test_series_is_as_accurate_as_the_exact_kernels(act: str, func: str, func_norm: str) -> None:
    """Values and every gradient (input, phases, attention, temperature, LayerNorm, weights)
    against the float64 torch path: both float32 paths lose digits to min-max scaling and to
    sums with cancellation (the temperature's, the phases'); the series path's error stays at
    that level: within 4x the exact kernels' own or 2e-4 of the output's scale (measured with
    the AVX-512 build: 6e-8 to 8.3e-4, the largest, GELU prod with batch min-max, equal to the
    exact kernels' own; the portable build's arithmetic loses a little more)."""
    m = _block(f"af_kan(func={func!r}, func_norm={func_norm!r})", act=act)
    x = _x()
    ref = _grads(_variant(m, fused=False).double(), x.double())
    series = _err(m, _grads(m, x), ref)
    exact = _err(m, _grads(_variant(m, series=False), x), ref)
    _assert_as_accurate(series, exact)


@pytest.mark.parametrize("norm", ["none", "layer"])
def test_series_matches_the_exact_kernels_and_the_plain_twin(norm: str) -> None:
    """Against the exact kernels every output, relative to its scale; against the torch path
    the values (its gradients differ more at single inputs where the min / max is nearly tied:
    which value is the float32 extremum depends on each path's rounding)."""
    m = _block(f"af_kan(norm={norm!r})", act="gelu")
    x = _x(seed=3)
    got = _grads(m, x)
    assert max(_err(m, got, _grads(_variant(m, series=False), x))) < 1e-4
    assert _err(m, got, _grads(_variant(m, fused=False), x))[0] < 1e-5


def test_saturated_ties_narrow_and_constant_inputs() -> None:
    """Hundreds of inputs at u = +-1 exactly (ties of the min / max across chunks) and a narrow
    band of inputs (most cells empty) against the float64 torch path; so a batch of one value,
    its values and input gradient (its phase gradients are 0 up to rounding; with every node
    equal the LayerNorm scales rounding by 1 / sqrt(eps): every float32 path is ~5e-5 off the
    float64 one there, each its own way)."""
    m = _block("af_kan")
    exact = _variant(m, series=False)
    ref64 = _variant(m, fused=False).double()
    x = _x(seed=5)
    x[:300:2] = 60.0
    x[1:300:2] = -60.0
    narrow = 0.1 + 0.4 * torch.rand(ROWS, D_IN, generator=torch.Generator().manual_seed(2))
    for xs in (x, narrow):
        ref = _grads(ref64, xs.double())
        _assert_as_accurate(_err(m, _grads(m, xs), ref), _err(m, _grads(exact, xs), ref))
    single = torch.full((ROWS, D_IN), 0.3)
    ref = _grads(ref64, single.double())
    _assert_as_accurate(
        _err(m, _grads(m, single), ref)[:2], _err(m, _grads(exact, single), ref)[:2]
    )


def _extremes_case(kind: str, seed: int, n: int = 2048) -> Tensor:
    """u (8, n) float32 in [-1, 1]: dense, saturated (ties at +-1), a narrow band (most cells
    empty), one repeated value, a sparse scatter. (n 2048: 256 cells, one table; 8192: 1,024
    cells, the two-level table.)"""
    g = torch.Generator().manual_seed(seed)
    if kind == "dense":
        u = torch.tanh(1.5 * torch.randn(8, n, generator=g))
    elif kind == "saturated":
        u = torch.tanh(1.5 * torch.randn(8, n, generator=g))
        u[:, ::3] = 1.0
        u[:, 1::3] = -1.0
    elif kind == "narrow":
        u = 0.1 + 0.01 * torch.rand(8, n, generator=g)
    elif kind == "single":
        u = torch.full((8, n), 0.3)
    else:  # sparse: a few values spread wide, the rest at one point
        u = torch.full((8, n), -0.2)
        idx = torch.randint(0, 8 * n, (40,), generator=g)
        u.view(-1)[idx] = torch.rand(40, generator=g) * 2 - 1
    return u.contiguous()


@pytest.mark.parametrize("kind", ["dense", "saturated", "narrow", "single", "sparse"])
@pytest.mark.parametrize("act,func", [(0, 0), (1, 0), (0, 5), (1, 2), (0, 6)])
def test_candidates_give_the_exact_min_max(kind: str, act: int, func: int) -> None:
    """The series path's min / max of f over the tensor equal the exact kernel's bit for bit
    (both evaluate the extrema with the same float32 arithmetic), for inputs that stress the
    candidate search, with phases off the grid."""
    ops = kn.ops_for(torch.zeros(1))
    assert ops is not None
    g = torch.Generator().manual_seed(11)
    low = torch.linspace(-2.2, 0.6, 8) + 0.2 * torch.randn(8, generator=g)
    high = low + 1.6 + 0.2 * torch.randn(8, generator=g)
    w = torch.randn(8, generator=g)
    for seed in range(3):
        u = _extremes_case(kind, seed)
        cand, lo, hi, tie_pairs, tie_vals = ops.af_series_extremes(u, low, high, act, func, 1024)
        _, _, lo_x, hi_x = ops.af_reduce_t(u, low, high, w, act, func, 0)
        assert torch.equal(lo, lo_x) and torch.equal(hi, hi_x), (kind, seed)
        assert cand.numel() < u.numel() * 8  # candidates, not everything
        # the ties (saved for the backward with their partials): candidates equal to lo / hi
        assert set(tie_pairs.tolist()) <= set(cand.tolist())
        which = tie_vals[:, 0].to(torch.int64)
        assert bool((which & 1).any()) and bool((which & 2).any()), (kind, seed)
        assert bool(((which >= 1) & (which <= 3)).all()) and bool(tie_vals.isfinite().all())


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    kind=st.sampled_from(["dense", "saturated", "narrow", "single", "sparse"]),
    shift=st.floats(-1.0, 1.0),
    width=st.floats(0.8, 3.0),
    knots=st.sampled_from([512, 1024, 4096]),
    act=st.integers(0, 1),
    func=st.integers(0, 6),
)
def test_candidates_of_the_two_level_table_fuzzed(seed: int, kind: str, shift: float,
                                                  width: float, knots: int, act: int,
                                                  func: int) -> None:  # fmt: skip
    """65,536 inputs take 512 or 1,024 cells, where the bounds come from a coarse table and
    the fine knots of the coarse cells it flags (kan_af_series.cpp, two_level_flags): the
    min / max stay bit-equal to the exact kernel's, and the ties are candidates."""
    ops = kn.ops_for(torch.zeros(1))
    assert ops is not None
    g = torch.Generator().manual_seed(seed)
    low = torch.linspace(-2.2, 0.6, 8) + shift + 0.3 * torch.randn(8, generator=g)
    high = low + width * (0.5 + torch.rand(8, generator=g))
    u = _extremes_case(kind, seed, 8192)
    cand, lo, hi, tie_pairs, _ = ops.af_series_extremes(u, low, high, act, func, knots)
    _, _, lo_x, hi_x = ops.af_reduce_t(u, low, high, torch.ones(8), act, func, 0)
    assert torch.equal(lo, lo_x) and torch.equal(hi, hi_x)
    assert set(tie_pairs.tolist()) <= set(cand.tolist())


def test_nan_inputs_take_the_exact_kernels() -> None:
    m = _block("af_kan")
    x = _x(seed=6)
    x[3, 2] = float("nan")
    for mod in (m, _variant(m, series=False)):
        mod.zero_grad()
    a, b = m(x), _variant(m, series=False)(x)
    torch.testing.assert_close(a, b, equal_nan=True)
    assert a.isnan().all()  # one NaN reaches the whole-tensor min / max


@settings(max_examples=60, deadline=None)
@example(seed=207, kind="dense", shift=0.0, width=0.203125, knots=16, act=0, func=0)
@example(seed=64292, kind="dense", shift=-2.7757357093687176, width=0.5642668459010872,
         knots=1024, act=1, func=3)  # fmt: skip
@given(
    seed=st.integers(0, 2**16),
    kind=st.sampled_from(["dense", "saturated", "narrow", "single", "sparse"]),
    shift=st.floats(-3.0, 3.0),
    width=st.floats(0.003, 5.0),
    knots=st.sampled_from([16, 64, 256, 1024, 4096]),
    act=st.integers(0, 1),
    func=st.integers(0, 6),
)
def test_candidates_fuzzed(seed: int, kind: str, shift: float, width: float, knots: int,
                           act: int, func: int) -> None:  # fmt: skip
    """Random phases (shifted, wide or narrow: the cells narrow with them), inputs, cell counts
    and combinations: the min / max stay bit-equal to the exact kernel's. (Two bugs this found:
    cells wider than a phase, where f_j' turns twice in a cell; float GELU's erf, good to
    1.5e-7 absolute, far from the table in its tail, now measured at the knots.)"""
    ops = kn.ops_for(torch.zeros(1))
    assert ops is not None
    g = torch.Generator().manual_seed(seed)
    low = torch.linspace(-2.2, 0.6, 8) + shift + 0.3 * torch.randn(8, generator=g)
    high = low + width * (0.5 + torch.rand(8, generator=g))
    u = _extremes_case(kind, seed)
    _, lo, hi, _, _ = ops.af_series_extremes(u, low, high, act, func, knots)
    _, _, lo_x, hi_x = ops.af_reduce_t(u, low, high, torch.ones(8), act, func, 0)
    assert torch.equal(lo, lo_x) and torch.equal(hi, hi_x)


def test_series_results_do_not_depend_on_the_thread_count() -> None:
    """Bit for bit, but for the weight gradients (their GEMMs may split sums by thread)."""
    m = _block("af_kan")
    x = _x(2048, seed=8)
    before = torch.get_num_threads()
    runs = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            runs.append(_grads(m, x))
    finally:
        torch.set_num_threads(before)
    names = ["y", "x"] + [n for n, p in m.named_parameters() if p.requires_grad]
    for name, a, b in zip(names, *runs, strict=True):
        if name in ("layer1.weight", "layer2.weight"):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-3)
        else:
            assert torch.equal(a, b), name


def test_the_op_refuses_a_bad_knot_count() -> None:
    ops = kn.ops_for(torch.zeros(1))
    assert ops is not None
    m = _block("af_kan").layer1
    x = _x()
    p = m._params(torch.float32)
    with pytest.raises(RuntimeError, match="knots must be in 16 .. 32768"):
        ops.af_kan_layer(x, p["low"], p["high"], p["attn_w"][0], p["attn_b"], p["temperature"],
                         m.weight, p["norm_w"], p["norm_b"], 0, 0, 0, True, 1e-5, 3)  # fmt: skip


def test_bad_knots_act_and_func_are_one_line_errors_at_every_size() -> None:
    """The layer op checks its knots on entry (also where the series path would not run: a
    small input); the extremes op checks act, func and knots."""
    ops = kn.ops_for(torch.zeros(1))
    assert ops is not None
    m = _block("af_kan").layer1
    p = m._params(torch.float32)
    small = _x(8)
    for knots in (3, -1, 40000):
        with pytest.raises(RuntimeError, match="knots must be in 16 .. 32768"):
            ops.af_kan_layer(small, p["low"], p["high"], p["attn_w"][0], p["attn_b"],
                             p["temperature"], m.weight, p["norm_w"], p["norm_b"], 0, 0, 0, True,
                             1e-5, knots)  # fmt: skip
    u = torch.rand(4, 64) * 2 - 1
    low, high = p["low"].detach(), p["high"].detach()
    for act, func, knots, what in [(2, 0, 64, "act 0..1"), (0, 7, 64, "func 0..6"),
                                   (0, 0, 8, "knots must be in 16 .. 32768")]:  # fmt: skip
        with pytest.raises(RuntimeError, match=what):
            ops.af_series_extremes(u, low, high, act, func, knots)


def test_the_layer_op_takes_w_as_g_or_1_by_g_and_refuses_other_shapes() -> None:
    """The attention weight goes in as the Linear's (1, G) weight (no select per call) or as
    (G,); either gives the same output, and any other shape is a one-line error."""
    ops = kn.ops_for(torch.zeros(1))
    assert ops is not None
    m = _block("af_kan").layer1
    p = m._params(torch.float32)
    x = _x(8)
    rest = (m.weight, p["norm_w"], p["norm_b"], 0, 0, 0, True, 1e-5, 0)
    with torch.no_grad():
        a = ops.af_kan_layer(x, p["low"], p["high"], p["attn_w"], p["attn_b"], p["temperature"],
                             *rest)  # fmt: skip
        b = ops.af_kan_layer(x, p["low"], p["high"], p["attn_w"][0], p["attn_b"],
                             p["temperature"], *rest)  # fmt: skip
        assert torch.equal(a, b)
        bad = p["attn_w"].repeat(2, 1)  # (2, G)
        with pytest.raises(RuntimeError, match=r"af_kan_layer: w must have shape \[1, 8\]"):
            ops.af_kan_layer(x, p["low"], p["high"], bad, p["attn_b"], p["temperature"], *rest)


@pytest.mark.parametrize("act", [0, 1])  # SiLU, GELU
def test_pieces_stand_in_for_the_series_on_avx_builds(act: int) -> None:
    """With AVX-512 (32 cells of degree 5) or AVX2 (8 of degree 7) the tail evaluates s0, s1
    from per-cell polynomials (kan_af.h, ``pieces2``) that reproduce the series within 1e-8 of
    their scale and, in the backward, their slopes from pieces of degree 5 within 1e-6; the
    portable build has none and keeps the series (its tests are the series branch's). The
    accuracy tests above run on either."""
    ops = kn.ops_for(torch.zeros(1))
    assert ops is not None
    m = _block("af_kan").layer1
    low, high, w = m.low.detach(), m.high.detach(), m.attn.weight.detach()[0]
    cells = {"AVX512": 32, "AVX2": 8, "DEFAULT": 0}[kn.kernel_isa()]
    fwd = ops.af_series_info(low, high, w, act, 0, False)
    bwd = ops.af_series_info(low, high, w, act, 0, True)
    assert fwd[4] == bwd[4] == cells
    assert fwd[0] == bwd[0] > 5 and bwd[2] > 5  # degree D of s0, s1 and Dm of the moments
    assert (fwd[3], bwd[3]) == ((2, 4) if cells else (0, 0))  # s0, s1 (+ s0', s1') tables
    with pytest.raises(RuntimeError, match="af_series_info: w must have shape"):
        ops.af_series_info(low, high, w[:3], act, 0, False)


def _softmax_pieces(layer: nn.Module, x: Tensor, act: int, mode: int) -> bool:
    """Whether the layer's softmax at input x takes its pieces (af_softmax_info, at the min /
    max of f the call finds)."""
    ops = kn.ops_for(torch.zeros(1))
    assert ops is not None
    low, high, w = layer.low.detach(), layer.high.detach(), layer.attn.weight.detach()[0]
    lo = hi = 0.0
    if mode == 0:
        u = torch.tanh(x).t().contiguous()
        _, lo_t, hi_t, _, _ = ops.af_series_extremes(u, low, high, act, 0, 1024)
        lo, hi = float(lo_t), float(hi_t)
    b, t = float(layer.attn.bias.detach()), float(layer.temperature.detach())
    return bool(ops.af_softmax_info(low, high, w, act, 0, mode, lo, hi, b, t))


@pytest.mark.parametrize("func_norm,mode", [("batch", 0), ("none", 2)])
@pytest.mark.parametrize("act", ["silu", "gelu"])
def test_the_softmax_takes_pieces_where_its_exponent_range_allows(
    func_norm: str, mode: int, act: str
) -> None:
    """On AVX builds the series path's forward evaluates the softmax numerators' E - 1 and s1n
    from per-call pieces (``softmax_tables``: no exp, max or scale per value) where the
    exponent's range over [-1, 1] is at most 2; wider ranges (large attention weights, a
    temperature near 1) take the exp. Both are as accurate as the exact kernels; the portable
    build never takes the pieces."""
    m = _block(f"af_kan(func_norm={func_norm!r})", act=act)
    x = _x()
    code = {"silu": 0, "gelu": 1}[act]
    wide = copy.deepcopy(m)
    with torch.no_grad():
        wide.layer1.attn.weight.mul_(40.0)
        wide.layer1.temperature.fill_(1.0)
    pieces = kn.kernel_isa() != "DEFAULT"
    assert _softmax_pieces(m.layer1, x, code, mode) == pieces
    assert not _softmax_pieces(wide.layer1, x, code, mode)
    for model in (m, wide):
        ref = _grads(_variant(model, fused=False).double(), x.double())
        series = _err(model, _grads(model, x), ref)
        _assert_as_accurate(series, _err(model, _grads(_variant(model, series=False), x), ref))


def test_af_softmax_info_refuses_bad_arguments() -> None:
    ops = kn.ops_for(torch.zeros(1))
    assert ops is not None
    low = torch.linspace(-1.0, 0.6, 8)
    high, w = low + 0.8, torch.full((8,), 0.1)
    with pytest.raises(RuntimeError, match="af_softmax_info: mode 0"):
        ops.af_softmax_info(low, high, w, 0, 0, 1, 0.0, 1.0, 0.0, 4.0)
    with pytest.raises(RuntimeError, match="af_softmax_info: w must have shape"):
        ops.af_softmax_info(low, high, w[:3], 0, 0, 0, 0.0, 1.0, 0.0, 4.0)
    with pytest.raises(RuntimeError, match="af_softmax_info: act 0..1"):
        ops.af_softmax_info(low, high, w, 5, 0, 0, 0.0, 1.0, 0.0, 4.0)


@pytest.mark.parametrize("act", ["silu", "gelu"])
def test_the_forward_is_the_same_with_and_without_a_backward_to_come(act: str) -> None:
    """With gradients on, the forward fits the backward's series too (kept for it, not fitted
    again): the values take the same arithmetic either way, bit for bit; and with the phases
    and the input frozen (no moments needed) the other gradients are the same bits as with
    everything trainable, but for the temperature's: with the moments sunk its sum weighted by
    s0n comes from them, else from the kept s0n (keeps_s0n), the same to float32 rounding."""
    m = _block("af_kan", act=act)
    x = _x(seed=3)
    y = m(x)
    assert y.requires_grad
    with torch.no_grad():
        assert torch.equal(m(x), y)
    full = _grads(m, x)
    frozen = copy.deepcopy(m)
    for layer in (frozen.layer1, frozen.layer2):
        for p in (layer.low, layer.high, layer.attn.weight):
            p.requires_grad_(False)
    yf = frozen(x)
    assert torch.equal(yf, y)
    w = torch.randn(yf.shape, generator=torch.Generator().manual_seed(7))
    names = [n for n, p in frozen.named_parameters() if p.requires_grad]
    got = torch.autograd.grad((yf * w).sum(), [p for p in frozen.parameters() if p.requires_grad])
    by_name = dict(zip(["x"] + [n for n, p in m.named_parameters() if p.requires_grad], full[1:],
                       strict=True))  # fmt: skip
    for name, g in zip(names, got, strict=True):
        if name.endswith("temperature"):
            torch.testing.assert_close(g, by_name[name], rtol=1e-5, atol=0.0)
        else:
            assert torch.equal(g, by_name[name]), name


def test_many_graphs_in_flight_keep_their_own_tail_values() -> None:
    """The kept tail values come from recycled buffers: twelve forwards whose graphs are all
    alive, then their backward passes in reverse order, give each forward's own gradients (those
    of a lone forward + backward), on the series and the exact path."""
    for series in (True, False):
        m = _variant(_block("af_kan"), series=series)
        xs = [_x(seed=s) for s in range(12)]
        alone = [_grads(m, x) for x in xs]
        params = [p for p in m.parameters() if p.requires_grad]
        w = torch.randn(ROWS, D_OUT, generator=torch.Generator().manual_seed(7))
        ins = [x.detach().clone().requires_grad_(True) for x in xs]
        outs = [m(x) for x in ins]  # every graph alive at once
        for k in reversed(range(len(xs))):
            got = torch.autograd.grad((outs[k] * w).sum(), [ins[k], *params], allow_unused=True)
            for a, b in zip(got, alone[k][1:], strict=True):
                assert torch.equal(a if a is not None else torch.zeros_like(b), b)


def test_release_kept_buffers_gives_the_pool_back_and_steps_go_on() -> None:
    """After a step the pool holds the kept buffers' blocks; release_kept_buffers frees them
    (their bytes: at least the step's kept values), a second call finds none, and the next step
    gives the same gradients as before."""
    from actlab.layers import release_kept_buffers

    m = _block("af_kan")
    x = _x()
    before = _grads(m, x)
    freed = release_kept_buffers()
    assert freed >= 5 * ROWS * (D_IN + HIDDEN) * 4  # act(q) and 4 kept values per input
    assert release_kept_buffers() == 0
    for a, b in zip(_grads(m, x), before, strict=True):
        assert torch.equal(a, b)


def test_a_retained_graph_gives_the_same_gradients_twice() -> None:
    """The backward only reads what the forward kept: a second backward through a retained
    graph (retain_graph=True) gives the first one's gradients bit for bit."""
    m = _block("af_kan")
    x = _x().requires_grad_(True)
    y = m(x)
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(3))
    params = [x, *(p for p in m.parameters() if p.requires_grad)]
    first = torch.autograd.grad((y * w).sum(), params, retain_graph=True, allow_unused=True)
    second = torch.autograd.grad((y * w).sum(), params, allow_unused=True)
    for a, b in zip(first, second, strict=True):
        assert (a is None and b is None) or torch.equal(a, b)


@pytest.mark.parametrize("leading", [(ROWS,), (20, ROWS // 20)])
def test_the_input_gradient_lies_as_the_input_does(leading: tuple[int, ...]) -> None:
    """A row-major input gets a row-major gradient from the series path (written so by the
    sink: no transposing copy for AccumulateGrad or the layer below), equal to the exact
    kernels' within the suite's tolerance and with its ties' share; a layer whose input is the
    previous KAN layer's (in, N) output hands back that layout (the block's second layer)."""
    m = _block("af_kan")
    x = _x().reshape(*leading, D_IN).requires_grad_(True)
    (got,) = torch.autograd.grad(m(x).square().sum(), [x])  # as the op returns it
    assert got.is_contiguous() and got.shape == x.shape
    (ref,) = torch.autograd.grad(_variant(m, series=False)(x).square().sum(), [x])
    assert float((got - ref).abs().max()) <= 1e-4 * float(ref.abs().max())
    h = m.layer1(x.detach()).detach().requires_grad_(True)  # (..., hidden) over (hidden, N)
    (gh,) = torch.autograd.grad(m.layer2(h).square().sum(), [h])
    assert gh.stride() == h.stride() and not h.is_contiguous()
