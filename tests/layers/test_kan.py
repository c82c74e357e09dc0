"""The KAN family (af_kan, relu_kan, s_kan): references, contracts, schedule, fitting.

The registry's matrix (test_layer_matrix.py) already checks each block against its float64
reference at one setting; here: every option against the reference (values and gradients),
the input-range contract, one-line errors, the S-KAN schedule, and a real fit of a known
1-D function.
"""

from __future__ import annotations

import math
import re
import warnings

import pytest
import torch
from torch import Tensor, nn

from actlab.layers import create_layer
from actlab.layers._kan_common import CHECK_EVERY, grid_phases, relu_basis
from actlab.layers._kan_ref import af_kan_ref, relu_kan_ref, s_kan_ref
from actlab.layers.af_kan import FUNCS
from actlab.layers.s_kan import SKAN

KANS = ["af_kan", "relu_kan", "s_kan"]
REFS = {"af_kan": af_kan_ref, "relu_kan": relu_kan_ref, "s_kan": s_kan_ref}


def _kan(name: str, d_in: int = 3, hidden: int = 4, d_out: int = 2, **kw: object) -> nn.Module:
    torch.manual_seed(0)
    spec = name if not kw else f"{name}({', '.join(f'{k}={v!r}' for k, v in kw.items())})"
    m = create_layer(spec, in_features=d_in, hidden_features=hidden, out_features=d_out)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            if p.dtype.is_floating_point:
                p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m.double()


def _x(*shape: int, scale: float = 1.5, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).requires_grad_(True)


def _check_values_and_grads(m: nn.Module, ref: object, x: Tensor) -> None:
    y = m(x)
    want = ref(m, x, None)  # type: ignore[operator]
    torch.testing.assert_close(y, want, rtol=1e-10, atol=1e-12)
    w = torch.randn_like(y)
    params = [p for p in m.parameters() if p.requires_grad]
    got = torch.autograd.grad((y * w).sum(), [x, *params], allow_unused=True)
    exp = torch.autograd.grad((want * w).sum(), [x, *params], allow_unused=True)
    for a, b in zip(got, exp, strict=True):
        if a is None or b is None:
            assert (a is None or not a.any()) and (b is None or not b.any())
        else:
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("input_norm", ["tanh", "none"])
@pytest.mark.parametrize("name", KANS)
def test_values_and_gradients_match_the_float64_reference(name: str, input_norm: str) -> None:
    m = _kan(name, input_norm=input_norm)
    scale = 1.5 if input_norm == "tanh" else 0.45  # "none": stay inside [-1, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # in range: no warning
        _check_values_and_grads(m, REFS[name], _x(5, 3, scale=scale))


@pytest.mark.parametrize("func", sorted(FUNCS))
@pytest.mark.parametrize("func_norm", ["batch", "sample", "none"])
def test_af_kan_every_combination_and_normalisation(func: str, func_norm: str) -> None:
    m = _kan("af_kan", func=func, func_norm=func_norm)
    _check_values_and_grads(m, af_kan_ref, _x(2, 4, 3, seed=2))


def test_af_kan_sample_norm_is_batch_independent_and_batch_norm_is_not() -> None:
    x = _x(6, 3).detach()
    for mode, independent in (("sample", True), ("batch", False)):
        m = _kan("af_kan", func_norm=mode)
        full, part = m(x)[:2], m(x[:2])
        assert torch.allclose(full, part, atol=1e-12) is independent


def test_relu_basis_peaks_at_one_at_the_midpoint_and_vanishes_outside() -> None:
    low, high = grid_phases(5, 3)
    mid = ((low + high) / 2).unsqueeze(-1)  # (G, 1): the basis of every midpoint
    r = relu_basis(mid, low, high)  # (G, G)
    torch.testing.assert_close(r.diagonal(), torch.ones(8, dtype=torch.float64))
    assert float(r.max()) == pytest.approx(1.0)
    far = relu_basis(torch.tensor([[5.0], [-5.0]], dtype=torch.float64), low, high)
    assert not far.any()


@pytest.mark.parametrize("low_shape", [(3, 5), (5,)])
def test_relu_basis_backward_matches_autograd_of_the_formula(low_shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(4)
    x = (torch.rand(4, 3, 1, generator=g, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    low = (-1.2 + 0.4 * torch.arange(5, dtype=torch.float64)).expand(*low_shape).clone()
    low = (low + 0.05 * torch.randn(low_shape, generator=g, dtype=torch.float64)).requires_grad_()
    high = (low.detach() + 1.1).requires_grad_(True)
    out = relu_basis(x, low, high)
    plain = (torch.relu(x - low) * torch.relu(high - x) * 4 / (high - low) ** 2) ** 2
    torch.testing.assert_close(out, plain, rtol=1e-12, atol=1e-14)
    w = torch.randn(out.shape, generator=g, dtype=torch.float64)
    got = torch.autograd.grad((out * w).sum(), [x, low, high])
    want = torch.autograd.grad((plain * w).sum(), [x, low, high])
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(relu_basis, (x, low, high))


def test_pruned_s_kan_evaluates_each_space_on_its_nodes_only_and_matches_the_reference() -> None:
    m = _kan("s_kan", hidden=8)
    assert isinstance(m, SKAN)
    m.prune()
    assert m.layer1.phase == m.layer2.phase == "pruned"
    assert len(set(m.layer2.selection())) > 1  # mixed choices: the grouped path is exercised
    _check_values_and_grads(m, s_kan_ref, _x(4, 3))
    # a loaded choice replaces the cached node groups
    other = _kan("s_kan", hidden=8)
    with torch.no_grad():
        other.layer2.logits.copy_(torch.randn(other.layer2.logits.shape, dtype=torch.float64))
    other.prune()
    m.load_state_dict(other.state_dict())
    assert m.layer2.selection() == other.layer2.selection()
    _check_values_and_grads(m, s_kan_ref, _x(4, 3, seed=1))


@pytest.mark.parametrize("name", KANS)
def test_gradcheck_tiny(name: str) -> None:
    m = _kan(name, d_in=2, hidden=2, d_out=1, grid=3, k=2)
    x = _x(3, 2, scale=0.8)
    assert torch.autograd.gradcheck(lambda t: m(t), (x,))


@pytest.mark.parametrize("name", KANS)
def test_shapes_leading_axes_and_state_dict_round_trip(name: str) -> None:
    m = _kan(name)
    x = _x(2, 5, 3).detach()
    assert m(x).shape == (2, 5, 2) and m(x[0, 0]).shape == (2,)
    fresh = _kan(name)
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    fresh.load_state_dict(m.state_dict())
    torch.testing.assert_close(fresh(x), m(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", KANS)
def test_bad_input_is_one_line(name: str) -> None:
    m = _kan(name)
    for bad, words in [
        (torch.tensor(1.0, dtype=torch.float64), "scalar"),
        (torch.zeros(2, 4, dtype=torch.float64), "expects 3 features"),
        (torch.zeros(2, 3, dtype=torch.int64), "floating-point"),
    ]:
        with pytest.raises(ValueError, match=words) as info:
            m(bad)
        assert "\n" not in str(info.value) and name in str(info.value)
    with torch.no_grad():
        next(m.parameters()).view(-1)[0] = math.nan
    with pytest.raises(ValueError, match=f"{name}: non-finite parameters") as info:
        m(torch.zeros(2, 3, dtype=torch.float64))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", KANS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_non_finite_inputs_pass_through_and_unused_parameters_are_not_reported(
    name: str, dtype: torch.dtype
) -> None:
    """The block checks its output, and its parameters only when the output is not finite:
    a NaN / inf input gives NaN outputs without an error (finite parameters), a NaN in a
    parameter the output does not use (a pruned S-KAN's logits) is not reported, and one the
    output uses is, in the float32 kernels' path as in float64."""
    m = _kan(name).to(dtype)
    x = _x(4, 3).detach().to(dtype).clone()
    x[1, 0], x[2, 2] = math.nan, math.inf
    y = m(x)
    assert not torch.isfinite(y).all()
    if name != "af_kan":  # af_kan's batch min-max spreads a NaN over the batch (documented)
        assert torch.isfinite(y[[0, 3]]).all()
    if name == "s_kan":
        assert isinstance(m, SKAN)
        m.prune()
        with torch.no_grad():
            m.layer1.logits.fill_(math.nan)
        assert torch.isfinite(m(_x(4, 3).to(dtype))).all()
    with torch.no_grad():
        list(m.parameters())[-1].view(-1)[0] = math.inf  # the last layer's bias / weight
    with pytest.raises(ValueError, match=f"{name}: non-finite parameters"):
        m(_x(4, 3).to(dtype))


@pytest.mark.parametrize(
    "spec,words",
    [
        ("relu_kan(grid=0)", "grid must be a whole number >= 1"),
        ("af_kan(k=-1)", "k must be a whole number >= 0"),
        ("af_kan(func='quad9')", "func must be one of"),
        ("af_kan(func_norm='l2')", "func_norm must be one of"),
        ("s_kan(tau_min=2.0)", "tau_min must be in"),
        ("s_kan(spaces='spline,rbf')", "spaces must be distinct names"),
        ("s_kan(spaces='rbf,rbf')", "spaces must be distinct names"),
        ("relu_kan(input_norm='clip')", "input_norm must be one of"),
    ],
)
def test_bad_constructor_values_are_one_line(spec: str, words: str) -> None:
    from actlab.layers import LayerSpecError

    with pytest.raises((ValueError, LayerSpecError), match=words) as info:
        create_layer(spec, in_features=3, hidden_features=4, out_features=2)
    assert "\n" not in str(info.value)


def test_non_finite_constructor_values_are_one_line() -> None:
    from actlab.layers.fourier_karat import FourierKArAt
    from actlab.layers.s_kan import SKANLayer

    for build, words in [
        (lambda: SKANLayer(2, 2, tau_min=math.nan), "tau_min must be finite"),
        (lambda: FourierKArAt(omega=math.inf), "omega must be finite"),
    ]:
        with pytest.raises(ValueError, match=words) as info:
            build()
        assert "\n" not in str(info.value)


def test_af_kan_layernorm_is_skipped_for_one_input_feature() -> None:
    m = create_layer("af_kan", in_features=1, hidden_features=4, out_features=1)
    x = torch.linspace(-1, 1, 7).unsqueeze(-1)
    assert not m.layer1.use_norm and m.layer2.use_norm
    assert m(x).std() > 0  # not constant in x
    forced = create_layer("af_kan(norm='layer')", in_features=1, hidden_features=4,
                          out_features=1)  # fmt: skip
    assert forced.layer1.use_norm


@pytest.mark.parametrize("name", KANS)
def test_inputs_outside_the_grid_warn_when_not_normalised(name: str) -> None:
    m = _kan(name, input_norm="none")
    x = torch.full((4, 3), 0.5, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m(x)  # inside: silent
    x[0, 0] = 3.0
    m = _kan(name, input_norm="none")
    with pytest.warns(RuntimeWarning) as caught:
        m(x)  # first call checks; 1 of 12 inputs of layer 1 outside (layer 2 may warn too)
    assert any(
        re.search(r"8\.3% of the inputs .* outside the grid range", str(w.message)) for w in caught
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(CHECK_EVERY - 1):  # counted on the device, reported every CHECK_EVERY
            m(x * 0.1)
    with pytest.warns(RuntimeWarning, match="outside the grid range"):
        m(x)
    tanh = _kan(name)  # the default normalises explicitly: never outside
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tanh(x * 100)


def test_s_kan_schedule_full_selective_pruned_one_space_per_node() -> None:
    torch.manual_seed(0)
    m = create_layer(
        "s_kan(full_steps=3, select_steps=4, tau_min=0.01)",
        in_features=2, hidden_features=5, out_features=1,
    )  # fmt: skip
    assert isinstance(m, SKAN)
    layer = m.layer1
    opt = torch.optim.Adam(m.parameters(), lr=0.05)
    x = torch.rand(32, 2) * 2 - 1
    y = torch.sin(3 * x[:, :1]) * x[:, 1:]
    phases, taus = [], []
    for _ in range(9):
        phases.append(layer.phase)
        taus.append(layer.tau())
        loss = (m(x) - y).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert phases[:3] == ["full"] * 3 and phases[3:7] == ["selective"] * 4
    assert phases[7:] == ["pruned"] * 2
    assert taus[:4] == [1.0] * 4 and taus[4] > taus[5] > taus[6] > 0.01
    assert int(layer.step) == 7  # the clock stops at pruning (after the 7th backward pass)
    # one space per node, the argmax of its logits, reported
    for lay in (m.layer1, m.layer2):
        assert (lay.chosen >= 0).all()
        torch.testing.assert_close(lay.alpha().sum(-1), torch.ones(lay.in_features))
        assert set(lay.alpha().unique().tolist()) <= {0.0, 1.0}
        assert all(s in lay.spaces for s in lay.selection())
    report = m.selection()
    assert sum(report["layer1"].values()) == 2 and sum(report["layer2"].values()) == 5
    # eval and no-grad calls do not advance the schedule; the state survives a round trip
    m.eval()
    m(x)
    assert int(layer.step) == 7
    fresh = create_layer("s_kan(full_steps=3, select_steps=4)", in_features=2,
                         hidden_features=5, out_features=1)  # fmt: skip
    fresh.load_state_dict(m.state_dict())
    assert isinstance(fresh, SKAN) and fresh.selection() == report
    torch.testing.assert_close(fresh.eval()(x), m(x))


@pytest.mark.parametrize("full,select,calls", [(3, 4, 1), (0, 0, 1), (2, 3, 2)])
def test_s_kan_native_clock_follows_the_torch_paths_schedule(
    full: int, select: int, calls: int
) -> None:
    """The fused op advances the schedule in its backward (and prunes on the last step, before
    the optimizer moves the logits); the torch path with its tensor hook is the reference: the
    same phases and clock step by step, also with no schedule at all (pruned by the first
    backward) and with the layer applied twice per step (two ticks, as two hooks). Each path
    prunes to the argmax of its logits as they stand after the closing backward (the paths'
    logits differ by rounding, so near-ties may pick differently: choices are not compared)."""
    spec = f"s_kan(full_steps={full}, select_steps={select}, tau_min=0.01)"
    torch.manual_seed(0)
    fused = create_layer(spec, in_features=2, hidden_features=5, out_features=2)
    plain = create_layer(spec, in_features=2, hidden_features=5, out_features=2, fused=False)
    plain.load_state_dict(fused.state_dict())
    x = torch.rand(32, 2) * 2 - 1
    y = torch.sin(3 * x[:, :1]) * x[:, 1:]
    history = {}
    for name, m in (("fused", fused), ("plain", plain)):
        opt = torch.optim.Adam(m.parameters(), lr=0.05)
        rows = []
        for _ in range(full + select + 2):
            out = x
            for _ in range(calls):
                out = m(out)
            loss = (out[:, :1] - y).square().mean()
            opt.zero_grad()
            loss.backward()
            rows.append((m.layer1.phase, int(m.layer1.step)))
            for lay in (m.layer1, m.layer2):  # pruned this step or before: never re-chosen
                if lay.phase == "pruned" and not hasattr(lay, "_test_choice"):
                    torch.testing.assert_close(lay.chosen, lay.logits.argmax(-1))
                    lay._test_choice = lay.chosen.clone()
            opt.step()
        history[name] = rows
        assert m.layer1.phase == m.layer2.phase == "pruned"
        for lay in (m.layer1, m.layer2):
            torch.testing.assert_close(lay.chosen, lay._test_choice)
    assert history["fused"] == history["plain"]
    # pruned by the step that reaches full + select; every call of that step still ticks
    assert int(fused.layer1.step) == -(-max(full + select, 1) // calls) * calls
    # eval, no_grad and pruned calls leave the clock alone
    before = int(fused.layer1.step)
    fused.eval()(x)
    fused.train()
    with torch.no_grad():
        fused(x)
    fused(x).sum().backward()
    assert int(fused.layer1.step) == before


def test_s_kan_native_clock_bad_arguments_fail_in_one_line() -> None:
    from actlab.layers import _kan_native as kn

    x = torch.rand(4, 2, requires_grad=True)
    ops = kn.ops_for(x)
    assert ops is not None
    logits, w, b = torch.zeros(2, 4), torch.randn(3, 16), torch.zeros(3)
    args = (x, logits, [0, 1, 2, 3], 5, 3, w, b, True, False, 1.0)
    with pytest.raises(RuntimeError, match="clock must be an int64 scalar tensor"):
        ops.s_kan_layer(*args, torch.zeros(2, dtype=torch.int64), None, -1)
    with pytest.raises(RuntimeError, match="pruning at the clock needs"):
        ops.s_kan_layer(*args, torch.zeros((), dtype=torch.int64), None, 5)
    with pytest.raises(RuntimeError, match="pruning at the clock needs"):
        bad_chosen = torch.zeros(3, dtype=torch.int64)  # one entry per input: 2
        ops.s_kan_layer(*args, torch.zeros((), dtype=torch.int64), bad_chosen, 5)


@pytest.mark.parametrize(
    "name,rmse",
    [("relu_kan", 0.01), ("s_kan(full_steps=100, select_steps=100)", 0.01), ("af_kan", 0.08)],
)
def test_fits_a_known_1d_function(name: str, rmse: float) -> None:
    """sin(pi x) on [-1, 1], a [1, 8, 1] block, 800 Adam steps with the learning rate decayed
    to 0 by a cosine (a few seconds). Measured on seed 0 (AMD EPYC, AVX2 and portable
    dispatch alike): relu_kan 0.0023, s_kan 0.0027, af_kan 0.044-0.045 (an mlp [1, 8, 1]:
    0.012). A constant learning rate (400 steps at 1e-2) left the fit wherever the last steps
    bounced, which depends on the CPU's rounding: relu_kan 0.0049 on an AVX-512 Xeon, 0.0069
    under the portable dispatch and 0.0111 under AVX2 on the EPYC; the decay makes the end
    point converge, the same on every dispatch."""
    torch.manual_seed(0)
    m = create_layer(name, in_features=1, hidden_features=8, out_features=1)
    x = torch.linspace(-1, 1, 256).unsqueeze(-1)
    y = torch.sin(math.pi * x)
    steps = 800
    opt = torch.optim.Adam(m.parameters(), lr=2e-2)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        loss = (m(x) - y).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        decay.step()
    m.eval()
    test = torch.rand(500, 1, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        err = float((m(test) - torch.sin(math.pi * test)).square().mean().sqrt())
    assert err < rmse, f"{name}: RMSE {err:.4f} >= {rmse}"


@pytest.mark.parametrize("name", KANS)
def test_block_dropout_applies_after_each_layer_in_training_only(name: str) -> None:
    """drop > 0: in training each layer's output goes through the block's Dropout (a call per
    layer, zeros scaled by 1 / (1 - p)); in eval, and with drop = 0 (not called at all), the
    block is its two layers."""
    torch.manual_seed(0)
    m = create_layer(name, in_features=3, hidden_features=64, out_features=2, drop=0.5).double()
    x = _x(32, 3).detach()
    calls: list[Tensor] = []
    m.drop.register_forward_hook(lambda mod, inp, out: calls.append(out))
    m.train()
    m(x)
    assert len(calls) == 2 and bool((calls[0] == 0).any())
    m.eval()
    want = m.layer2(m.layer1(x))
    torch.testing.assert_close(m(x), want, rtol=0, atol=0)
    m.drop.p = 0.0
    m.train()
    calls.clear()
    torch.testing.assert_close(m(x), m.layer2(m.layer1(x)), rtol=0, atol=0)
    assert calls == []
