"""Every registered layer: shapes (lazy sizing too), gradcheck, state_dict, dtype/device, reference.

Parametrised over ``LAYERS.names()``: registering a layer opts it in. Each layer needs a
plain float64 reference below (``REFERENCES``): a formula written independently of the
implementation (``F.layer_norm``, a hand-written RMSNorm, torch's softmax, ...).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from actlab.layers import LAYERS, create_layer, get_layer_info
from actlab.layers._registry import example_slot_args

NAMES = LAYERS.names()
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
if os.environ.get("ACTLAB_TEST_DEVICE") == "cpu":
    DEVICES = ["cpu"]


def _input(name: str, dtype: torch.dtype = torch.float64, seed: int = 0) -> tuple[Tensor, ...]:
    """A small input for layer ``name`` (and the causal mask for attention scores)."""
    g = torch.Generator().manual_seed(seed)
    info = get_layer_info(name)
    if info.kind == "attn_score":
        scores = torch.randn(2, 2, 3, 3, generator=g, dtype=dtype)
        return (scores,)
    if info.kind == "norm" and info.layout == "first":
        return (torch.randn(3, 4, 2, 2, generator=g, dtype=dtype),)
    return (torch.randn(2, 3, 4, generator=g, dtype=dtype),)


def _build(name: str, lazy: bool = False) -> nn.Module:
    info = get_layer_info(name)
    args = example_slot_args(info.kind)
    if lazy:
        args = {k: v for k, v in args.items() if k not in info.lazy}
    torch.manual_seed(0)
    return create_layer(name, **args)


def _rms(x: Tensor, w: Tensor, eps: float) -> Tensor:
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _bn(x: Tensor, m: nn.Module) -> Tensor:
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5) * m.weight.view(1, -1, 1, 1) + m.bias.view(
        1, -1, 1, 1
    )


def _mlp(x: Tensor, m: Any) -> Tensor:
    h = x @ m.fc1.weight.T + m.fc1.bias
    h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))  # exact GELU
    return h @ m.fc2.weight.T + m.fc2.bias


def _glu(x: Tensor, m: Any) -> Tensor:
    g = x @ m.fc1_g.weight.T + m.fc1_g.bias
    v = x @ m.fc1_x.weight.T + m.fc1_x.bias
    return (g * torch.sigmoid(g) * v) @ m.fc2.weight.T + m.fc2.bias  # SiLU gate


def _visible(s: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return torch.full_like(s[..., :1], s.shape[-1])
    return mask.to(s.dtype).sum(-1, keepdim=True).expand_as(s[..., :1])


# name -> (module, input, mask) -> expected output, all in float64
REFERENCES: dict[str, Callable[[nn.Module, Tensor, Tensor | None], Tensor]] = {
    "identity": lambda m, x, mask: x,
    "layernorm": lambda m, x, mask: F.layer_norm(x, (x.shape[-1],), m.weight, m.bias, 1e-5),
    "rmsnorm": lambda m, x, mask: _rms(x, m.weight, 1e-6),
    "batchnorm": lambda m, x, mask: _bn(x, m),
    "mlp": lambda m, x, mask: _mlp(x, m),
    "glu": lambda m, x, mask: _glu(x, m),
    "softmax": lambda m, x, mask: torch.softmax(
        x if mask is None else x.masked_fill(~mask, -math.inf), -1
    ),
    "relu_attn": lambda m, x, mask: (
        torch.relu(x) * (1 if mask is None else mask) / _visible(x, mask)
    ),
    "sigmoid_attn": lambda m, x, mask: (
        torch.sigmoid(x - torch.log(_visible(x, mask))) * (1 if mask is None else mask)
    ),
}


def _forward(m: nn.Module, name: str, x: Tensor, mask: Tensor | None = None) -> Tensor:
    if get_layer_info(name).kind == "attn_score":
        return m(x, mask)
    return m(x)


def _perturbed(m: nn.Module) -> nn.Module:
    """Non-trivial weights (norms start at w=1, b=0) so references see every parameter."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m


def test_every_layer_has_a_reference_and_metadata() -> None:
    missing = [n for n in NAMES if _reference(n) is None]
    assert not missing, (
        f"give {missing} a float64 reference: register_layer(..., reference=) or REFERENCES here"
    )
    for n in NAMES:
        info = get_layer_info(n)
        assert info.formula, n
        mod = __import__(info.factory.__module__, fromlist=["_"])
        assert mod.__doc__ and len(mod.__doc__) > 100, (
            f"{info.factory.__module__} needs a docstring"
        )


def _reference(name: str) -> Callable[[nn.Module, Tensor, Tensor | None], Tensor] | None:
    return REFERENCES.get(name) or get_layer_info(name).reference


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_reference_float64(name: str) -> None:
    m = _perturbed(_build(name)).double().train()
    (x,) = _input(name)
    y = _forward(m, name, x)
    assert y.shape == x.shape and y.dtype == torch.float64
    ref = _reference(name)
    assert ref is not None
    torch.testing.assert_close(y, ref(m, x, None), rtol=1e-10, atol=1e-12)
    if get_layer_info(name).kind == "attn_score":
        mask = torch.ones(3, 3, dtype=torch.bool).tril()
        y = _forward(m, name, x, mask)
        torch.testing.assert_close(y, ref(m, x, mask), rtol=1e-10, atol=1e-12)
        assert (y[..., ~mask] == 0).all()  # masked keys get exactly zero weight


@pytest.mark.parametrize("name", [n for n in NAMES if get_layer_info(n).lazy])
def test_lazy_sizing_from_the_first_input(name: str) -> None:
    eager = _perturbed(_build(name)).double()
    lazy = _build(name, lazy=True).double()  # dtype move before sizing
    (x,) = _input(name)
    y = _forward(lazy, name, x)
    assert y.shape == x.shape and all(p.dtype == torch.float64 for p in lazy.parameters())
    assert sorted(lazy.state_dict()) == sorted(eager.state_dict())  # same parameter names
    # a state_dict loads into an unsized instance, which then computes what the eager one does
    fresh = _build(name, lazy=True).double()
    fresh.load_state_dict(eager.state_dict())
    eager.eval(), fresh.eval()
    torch.testing.assert_close(_forward(fresh, name, x), _forward(eager, name, x))
    assert type(fresh) is type(eager)  # a lazy norm becomes the eager torch class


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_float64(name: str) -> None:
    m = _perturbed(_build(name)).double()
    (x,) = _input(name)
    x = x.clone().requires_grad_(True)
    params = [p for p in m.parameters() if p.requires_grad]
    if get_layer_info(name).kind == "attn_score":
        x = x.detach().mul(0.5).requires_grad_(True)  # away from relu's kink at 0
        mask = torch.ones(3, 3, dtype=torch.bool).tril()

        def fn(inp: Tensor) -> Tensor:
            return m(inp, mask)

        assert torch.autograd.gradcheck(fn, (x,))
        return

    def fn2(inp: Tensor, *ps: Tensor) -> Tensor:
        return torch.func.functional_call(
            m, dict(zip([n for n, _ in m.named_parameters()], ps, strict=True)), (inp,)
        )

    assert torch.autograd.gradcheck(
        fn2, (x, *[p.detach().clone().requires_grad_(True) for p in params])
    )


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_into_a_fresh_instance(name: str) -> None:
    m = _perturbed(_build(name)).double()
    (x,) = _input(name)
    _forward(m.train(), name, x)  # batchnorm: running statistics move
    fresh = _build(name).double()
    fresh.load_state_dict(m.state_dict())
    m.eval(), fresh.eval()
    torch.testing.assert_close(_forward(fresh, name, x), _forward(m, name, x), rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_dtype_and_device_moves(name: str, device: str) -> None:
    ref = _perturbed(_build(name)).double().eval()
    (x,) = _input(name)
    want = _forward(ref, name, x)
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 5e-2)):
        m = _perturbed(_build(name)).to(device=device, dtype=dtype).eval()
        assert all(t.dtype == dtype for t in m.parameters())
        y = _forward(m, name, x.to(device=device, dtype=dtype))
        assert y.dtype == dtype and y.device.type == device
        torch.testing.assert_close(y.double().cpu(), want, rtol=tol, atol=tol)


def test_create_layer_accepts_classes_factories_and_call_strings() -> None:
    assert isinstance(create_layer(nn.BatchNorm2d, num_features=3), nn.BatchNorm2d)
    ln = create_layer(nn.LayerNorm, num_features=3)  # size positionally, as timm does
    assert isinstance(ln, nn.LayerNorm) and ln.normalized_shape == (3,)
    m = create_layer(lambda num_features: nn.LayerNorm(num_features, eps=1e-3), num_features=5)
    assert isinstance(m, nn.LayerNorm) and m.eps == 1e-3
    r = create_layer("RMSNorm(eps=1e-5)", num_features=4)
    assert isinstance(r, nn.RMSNorm) and r.eps == 1e-5
    g = create_layer("glu(act='relu')", in_features=4, hidden_features=6, out_features=4)
    assert getattr(type(g.act), "activation_name", None) == "relu"
