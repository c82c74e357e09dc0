"""The layers' finiteness checks (actlab.layers._finite): the native one-call answer against
torch's isfinite, and the schedule off the CPU (first call, every CHECK_EVERY-th, a replaced
tensor), exercised on the CPU by treating its tensors as a device's."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from actlab.layers import _finite, create_layer
from actlab.layers._finite import CHECK_EVERY, all_finite, due, finite_now

SPECIAL = [math.nan, math.inf, -math.inf]


def _torch_answer(ts: list[torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in ts)


def test_native_check_is_built_and_answers() -> None:
    assert _finite.available(), _finite.unavailable_reason()
    assert _finite.kernel_isa() in ("AVX512", "AVX2", "DEFAULT")
    assert all_finite([torch.randn(100), torch.randn(3, 5, dtype=torch.float64)]) is True


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", [1, 7, 8, 15, 16, 17, 33, 1000])
@pytest.mark.parametrize("bad", SPECIAL)
def test_one_bad_value_anywhere_is_found(dtype: torch.dtype, n: int, bad: float) -> None:
    """Every position (the vector body and the tail) and every kind of non-finite value."""
    for pos in range(n):
        t = torch.randn(n, dtype=dtype)
        t[pos] = bad
        assert all_finite([torch.ones(3, dtype=dtype), t]) is False, (n, pos)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_finite_values_pass(dtype: torch.dtype) -> None:
    """Largest, smallest normal, subnormal, -0: finite, and summing them could overflow, which
    the v * 0 sum never does."""
    info = torch.finfo(dtype)
    t = torch.tensor([info.max, -info.max, info.max, info.tiny, info.tiny / 4, -0.0, 0.0],
                     dtype=dtype)  # fmt: skip
    assert all_finite([t.repeat(100)]) is True


def test_where_the_native_check_does_not_apply() -> None:
    """Other dtypes and no tensors: None (the caller asks torch); finite_now answers anyway."""
    assert all_finite([]) is None
    assert all_finite([torch.ones(3, dtype=torch.float16)]) is None
    assert all_finite([torch.ones(3), torch.ones(3, dtype=torch.bfloat16)]) is None
    half = torch.ones(3, dtype=torch.float16)
    half[1] = math.inf
    assert finite_now([half]) is False and finite_now([]) is True


@settings(max_examples=150, deadline=None)
@given(
    shapes=st.lists(st.lists(st.integers(0, 9), min_size=0, max_size=3), min_size=1, max_size=4),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    specials=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 10**6), st.sampled_from(SPECIAL))
    ),
    strided=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_native_check_matches_torch(shapes: list[list[int]], dtype: torch.dtype,
                                    specials: list[tuple[int, int, float]], strided: bool,
                                    seed: int) -> None:  # fmt: skip
    """Random lists of tensors (empty ones, scalars, transposed views) with NaN / inf put at
    random places: the same answer as torch's isfinite."""
    g = torch.Generator().manual_seed(seed)
    ts = [torch.randn(s, generator=g, dtype=dtype) * 1e30 for s in shapes]
    for which, pos, value in specials:
        t = ts[which % len(ts)]
        if t.numel():
            t.view(-1)[pos % t.numel()] = value
    if strided:
        ts = [t.t() if t.dim() == 2 else t for t in ts]
    assert all_finite(ts) is _torch_answer(ts)


class _Probe(nn.Module):
    """A module whose forward checks its parameters as MoE / EvoNorm / PolyNorm do."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(4))
        self.checks = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ps = [self.w]
        if due(self, ps):
            self.checks += 1
            if not finite_now(ps):
                raise ValueError("probe: non-finite parameters")
        return x * self.w


@pytest.fixture
def as_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tensors count as a device's: the schedule off the CPU, on the CPU."""
    monkeypatch.setattr(_finite, "_on_cpu", lambda ts: False)


def test_on_the_cpu_every_call_checks() -> None:
    m = _Probe()
    for _ in range(5):
        m(torch.ones(4))
    assert m.checks == 5 and "_finite_calls" not in m.__dict__


def test_off_the_cpu_the_check_runs_every_check_every_calls(as_device: None) -> None:
    m = _Probe()
    m(torch.ones(4))  # the first call checks
    with torch.no_grad():
        m.w[0] = math.nan
    for _ in range(CHECK_EVERY - 1):  # calls 2 .. CHECK_EVERY: no check, NaN outputs
        assert m(torch.ones(4)).isnan().any()
    assert m.checks == 1
    with pytest.raises(ValueError, match="probe: non-finite parameters"):
        m(torch.ones(4))  # call CHECK_EVERY + 1
    assert m.checks == 2


def test_off_the_cpu_a_replaced_parameter_is_checked_at_once(as_device: None) -> None:
    m = _Probe()
    m(torch.ones(4))
    m(torch.ones(4))
    m.w = nn.Parameter(torch.full((4,), math.inf))  # new weights: another data pointer
    with pytest.raises(ValueError, match="non-finite"):
        m(torch.ones(4))


@pytest.mark.parametrize(
    "spec,slot,words",
    [
        ("moe", {"in_features": 8, "hidden_features": 16, "out_features": 8}, "moe: non-finite"),
        ("polynorm", {}, "polynorm: non-finite"),
        ("relu_kan", {"in_features": 8, "hidden_features": 8, "out_features": 8},
         "relu_kan: non-finite"),
    ],
)  # fmt: skip
def test_layers_raise_within_check_every_calls_off_the_cpu(
    as_device: None, spec: str, slot: dict[str, int], words: str
) -> None:
    """The layers keep their one-line errors on the device schedule: a parameter made non-finite
    after the first forward raises by the (CHECK_EVERY + 1)-th."""
    m = create_layer(spec, **slot)
    x = torch.randn(4, 8)
    m(x)
    with torch.no_grad():
        list(m.parameters())[-1].view(-1)[0] = math.inf  # one the output uses
    with pytest.raises(ValueError, match=words) as info:
        for _ in range(CHECK_EVERY):
            m(x)
    assert "\n" not in str(info.value)
