"""The shared test matrix: every registered activation is checked here automatically.

Registering an activation (``@register_activation``) opts it in. Each check compares against
the registration's independent float64 oracle (``ActivationInfo.reference``).
"""

from __future__ import annotations

import copy
import io
import math
import pickle

import pytest
import torch
from torch.autograd import gradcheck

import actlab
from actlab.activations import kernel_mode

NAMES = actlab.list_activations()
# points where non-smooth activations have kinks (finite differences are invalid there)
KINKS = torch.tensor([0.0, 0.01, -3.0, 3.0], dtype=torch.float64)


def _perturbed(name: str) -> torch.nn.Module:
    """A float64 instance whose learnable parameters moved away from their init."""
    m = actlab.create_activation(name).double()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 + 0.1 * torch.rand_like(p))
    return m


def _grid(n: int = 2001) -> torch.Tensor:
    return torch.cat(
        [torch.linspace(-8, 8, n, dtype=torch.float64), 3 * torch.randn(500, dtype=torch.float64)]
    )


def _away_from_kinks(x: torch.Tensor, gap: float = 1e-3) -> torch.Tensor:
    d = (x[:, None] - KINKS[None, :]).abs().min(dim=1).values
    return torch.where(d < gap, x + 5 * gap, x)


def test_zoo_has_at_least_20_entries() -> None:
    assert len(NAMES) >= 20
    for required in [
        "relu",
        "leaky_relu",
        "prelu",
        "elu",
        "celu",
        "selu",
        "gelu",
        "gelu_tanh",
        "silu",
        "swish",
        "mish",
        "softplus",
        "hardswish",
        "sigmoid",
        "tanh",
        "crrelu",
        "eafo",
        "wafbc",
        "polyrelu",
        "fatrelu",
    ]:
        assert required in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_metadata(name: str) -> None:
    info = actlab.get_activation_info(name)
    assert info.formula and info.paper and info.reference is not None
    doc = (info.cls.__module__ and __import__(info.cls.__module__, fromlist=["x"]).__doc__) or ""
    assert doc.strip(), f"module of {name} lacks a docstring with formula and paper"


@pytest.mark.parametrize("mode", ["reference", "eager"])
@pytest.mark.parametrize("name", NAMES)
def test_forward_matches_float64_reference(name: str, mode: str) -> None:
    m = _perturbed(name)
    x = _grid()
    with kernel_mode(mode), torch.no_grad():
        y = m(x)
    ref = actlab.get_activation_info(name).reference(x, m)
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_including_learnable_parameters(name: str) -> None:
    m = _perturbed(name)
    params = dict(m.named_parameters())
    x = _away_from_kinks(torch.randn(64, dtype=torch.float64) * 2.5).requires_grad_(True)
    names = list(params)

    def f(x: torch.Tensor, *ps: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(m, dict(zip(names, ps)), (x,))

    inputs = (x, *[p.detach().clone().requires_grad_(True) for p in params.values()])
    with kernel_mode("eager"):
        assert gradcheck(f, inputs, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_lean_gradients_match_autograd_reference(name: str) -> None:
    m = _perturbed(name).float()
    x0 = torch.randn(4096) * 3
    g = torch.randn_like(x0)
    grads = {}
    for mode in ("reference", "eager"):
        m.zero_grad()
        x = x0.clone().requires_grad_(True)
        with kernel_mode(mode):
            m(x).backward(g)
        grads[mode] = [x.grad] + [p.grad.clone() for p in m.parameters()]
    for a, b in zip(grads["reference"], grads["eager"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", NAMES)
def test_low_precision_forward(name: str, dtype: torch.dtype) -> None:
    m64 = _perturbed(name)
    x = torch.linspace(-6, 6, 1001, dtype=torch.float64)
    ref = actlab.get_activation_info(name).reference(x, m64)
    m = copy.deepcopy(m64).to(dtype)
    xl = x.to(dtype)
    y = m(xl)
    assert y.dtype == dtype and y.shape == x.shape
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    # compare on the low-precision input (bf16 rounding of x alone moves f by f'·δx)
    ref_l = actlab.get_activation_info(name).reference(xl.double(), m64)
    torch.testing.assert_close(
        y.double(), ref_l, rtol=tol, atol=tol * (1 + ref.abs().max().item()) * 0.1
    )


@pytest.mark.parametrize("name", NAMES)
def test_inplace_accepted_and_equivalent(name: str) -> None:
    m = actlab.create_activation(name, inplace=True)
    ref = actlab.create_activation(name)
    ref.load_state_dict(m.state_dict())
    x = torch.randn(257)
    expected = ref(x.clone())
    torch.testing.assert_close(m(x.clone()), expected)
    spec_m = actlab.create_activation(f"{name}(inplace=True)")
    assert spec_m.inplace is True


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name: str) -> None:
    m = _perturbed(name).float()
    fresh = actlab.create_activation(name)
    fresh.load_state_dict(m.state_dict())
    x = torch.randn(100)
    torch.testing.assert_close(fresh(x), m(x))


@pytest.mark.parametrize("name", NAMES)
def test_deepcopy_and_pickle(name: str) -> None:
    m = _perturbed(name).float()
    x = torch.randn(100)
    torch.testing.assert_close(copy.deepcopy(m)(x), m(x))
    buf = io.BytesIO()
    pickle.dump(m, buf)
    buf.seek(0)
    torch.testing.assert_close(pickle.load(buf)(x), m(x))


@pytest.mark.parametrize("name", NAMES)
def test_empty_nan_inf_behaviour(name: str) -> None:
    """Documented behaviour: empty in -> empty out; nan -> nan; f(±inf) one of the registry's
    promised values (``limit_values``: the limit, or for a thin torch wrapper whose op differs
    by CPU / dtype, each value it may take). float32 and float64: the op can differ by dtype."""
    info = actlab.get_activation_info(name)
    m = actlab.create_activation(name)
    for shape in [(0,), (3, 0, 2)]:
        e = torch.empty(shape, requires_grad=True)
        y = m(e)
        assert y.shape == e.shape
        y.sum().backward()
    for dtype in (torch.float32, torch.float64):
        for n in (3, 1001):  # scalar tail and vectorised body of the op
            x = torch.zeros(n, dtype=dtype)
            x[0], x[1], x[-1] = math.nan, -math.inf, math.inf
            y = m.to(dtype)(x)
            assert math.isnan(y[0].item())
            for end, got in enumerate((y[1].item(), y[-1].item())):
                ok = [
                    (math.isnan(want) and math.isnan(got))
                    or got == pytest.approx(want, rel=1e-3, abs=1e-6)
                    for want in info.limit_values(end)
                ]
                assert any(ok), (
                    f"{name} {dtype}: f(±inf) = {got}, promised {info.limit_values(end)}"
                )


@pytest.mark.parametrize("name", NAMES)
def test_finite_for_large_finite_inputs(name: str) -> None:
    m = actlab.create_activation(name)
    x = torch.tensor([-1e4, -100.0, -45.0, 45.0, 100.0])
    y = m(x)
    assert torch.isfinite(y).all(), f"{name}: {y}"


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_device_dtype_follow_input(name: str) -> None:
    m = actlab.create_activation(name)
    x = torch.randn(2, 3, 4, 5)
    y = m(x)
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    xt = x.transpose(1, 3)  # non-contiguous input
    torch.testing.assert_close(m(xt), m(xt.contiguous()))
