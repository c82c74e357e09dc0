"""PolyNorm (PolyCom): formula against a hand-written float64 twin, gradients, slots, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from actlab.layers import LayerSpecError, canonical_layer_spec, create_layer
from actlab.layers.polynorm import PolyNorm, PolyNormMlp


def _twin(x: Tensor, a3: float, a2: float, a1: float, a0: float, eps: float = 1e-6) -> Tensor:
    """a3 N(x^3) + a2 N(x^2) + a1 N(x) + a0, N(z) = z / rms(z), one row at a time."""
    out = torch.empty_like(x, dtype=torch.float64)
    rows = x.double().reshape(-1, x.shape[-1])
    for i, r in enumerate(rows):
        d = r.numel()
        parts = []
        for k in (3, 2, 1):
            z = r**k
            parts.append(z / math.sqrt(float(z.dot(z)) / d + eps))
        out.view(-1, x.shape[-1])[i] = a3 * parts[0] + a2 * parts[1] + a1 * parts[2] + a0
    return out


def _coefs(m: PolyNorm) -> tuple[float, float, float, float]:
    w = m.weight.detach().double().tolist()
    return w[0], w[1], w[2], float(m.bias.detach())


def test_init_and_parameter_names_follow_the_authors() -> None:
    m = create_layer("polynorm")
    assert isinstance(m, PolyNorm)
    assert sorted(m.state_dict()) == ["bias", "weight"]
    torch.testing.assert_close(m.weight.detach(), torch.full((3,), 1 / 3))
    assert float(m.bias.detach()) == 0.0 and m.eps == 1e-6


def test_values_match_the_float64_twin() -> None:
    g = torch.Generator().manual_seed(0)
    m = PolyNorm().double()
    with torch.no_grad():
        m.weight.copy_(torch.tensor([0.7, -0.2, 0.4]))
        m.bias.fill_(0.1)
    x = torch.randn(2, 3, 7, generator=g, dtype=torch.float64)
    torch.testing.assert_close(m(x), _twin(x, *_coefs(m)), rtol=1e-12, atol=1e-12)
    # float32 against the same twin
    y32 = PolyNorm().float()(x.float())
    torch.testing.assert_close(
        y32.double(), _twin(x, 1 / 3, 1 / 3, 1 / 3, 0.0), rtol=1e-5, atol=1e-5
    )


def test_gradients_match_the_twin_and_gradcheck() -> None:
    g = torch.Generator().manual_seed(1)
    m = PolyNorm().double()
    x = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    up = torch.randn(3, 5, generator=g, dtype=torch.float64)
    (m(x) * up).sum().backward()
    gx = x.grad.clone()

    x2 = x.detach().clone().requires_grad_(True)
    w = torch.full((3,), 1 / 3, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)

    def n(z: Tensor) -> Tensor:
        return z / torch.sqrt(z.pow(2).mean(-1, keepdim=True) + 1e-6)

    ref = w[0] * n(x2**3) + w[1] * n(x2**2) + w[2] * n(x2) + b
    (ref * up).sum().backward()
    torch.testing.assert_close(gx, x2.grad)
    torch.testing.assert_close(m.weight.grad, w.grad)
    torch.testing.assert_close(m.bias.grad, b.grad)
    xs = torch.randn(2, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: m(t), (xs,))


def test_not_elementwise_each_output_depends_on_the_whole_row() -> None:
    m = PolyNorm().double()
    x = torch.randn(1, 6, dtype=torch.float64)
    x2 = x.clone()
    x2[0, 5] += 1.0
    y, y2 = m(x), m(x2)
    assert not torch.allclose(y[0, :5], y2[0, :5])  # other features moved too
    x3 = torch.cat([x, x2])  # rows are independent
    torch.testing.assert_close(m(x3)[0], y[0])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_are_computed_in_float32(dtype: torch.dtype) -> None:
    m = PolyNorm()
    x = torch.tensor([[50.0, -3.0, 0.5, 2.0]])  # 50^3 overflows float16
    y = m(x.to(dtype))
    assert y.dtype == dtype and torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), m(x.to(dtype).float()), rtol=1e-2, atol=1e-2)


def test_bad_input_gets_one_line() -> None:
    m = PolyNorm()
    for bad in (torch.tensor(1.0), torch.empty(3, 0)):
        with pytest.raises(ValueError, match="last axis") as e:
            m(bad)
        assert "\n" not in str(e.value)
    with torch.no_grad():
        m.weight[1] = math.nan
    with pytest.raises(ValueError, match="non-finite coefficients") as e:
        m(torch.randn(2, 4))
    assert "\n" not in str(e.value)
    for spec in ("polynorm(eps=0)", "polynorm(eps=-1)", "polynorm_mlp(width=0)"):
        with pytest.raises(LayerSpecError):
            create_layer(spec, **({} if "mlp" not in spec else {"in_features": 4}))
    mlp = create_layer("polynorm_mlp", in_features=4, hidden_features=8, out_features=4)
    with pytest.raises(ValueError, match="built for 4 input features") as e:
        mlp(torch.randn(2, 5))
    assert "\n" not in str(e.value)


def test_state_dict_round_trip() -> None:
    m = PolyNorm()
    with torch.no_grad():
        m.weight.copy_(torch.tensor([0.1, 0.2, 0.3]))
        m.bias.fill_(-0.5)
    fresh = PolyNorm()
    fresh.load_state_dict(m.state_dict())
    x = torch.randn(4, 9)
    torch.testing.assert_close(fresh(x), m(x), rtol=0, atol=0)


def test_width_rule_matches_a_gated_mlp_in_parameters() -> None:
    def count(mod: nn.Module) -> int:
        return sum(p.numel() for p in mod.parameters())

    d, h = 16, 32
    args = {"in_features": d, "hidden_features": h, "out_features": d, "bias": False}
    glu = create_layer("glu", **args)
    wide = create_layer("polynorm_mlp(width=1.5)", **args)
    assert isinstance(wide, PolyNormMlp) and wide.fc1.out_features == 48
    assert count(wide) - 4 == count(glu)  # + the four PolyNorm coefficients
    plain = create_layer("polynorm_mlp", in_features=d, hidden_features=h, out_features=d)
    same = create_layer("mlp(act='polynorm')", in_features=d, hidden_features=h, out_features=d)
    same.load_state_dict(plain.state_dict())
    x = torch.randn(3, d)
    torch.testing.assert_close(same(x), plain(x))


def test_usable_as_the_mlp_activation_of_vit_and_char_gpt() -> None:
    from actlab.bench.plan import canonical_activation, formula_spec
    from actlab.models.char_gpt import CharGPT, GPTConfig
    from actlab.models.vit import ViT, ViTConfig

    cfg = ViTConfig(img_size=8, patch_size=4, in_chans=1, embed_dim=16, depth=1, num_heads=2)
    for kw in ({"act_layer": "polynorm"}, {"mlp_layer": "mlp(act='polynorm')"}):
        vit = ViT(cfg, **kw)  # type: ignore[arg-type]
        assert isinstance(vit.blocks[0].mlp.act, PolyNorm)
        assert vit(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    gpt = CharGPT(
        GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16), "polynorm"
    )
    assert isinstance(gpt.blocks[0].mlp.act, PolyNorm)
    assert gpt(torch.randint(0, 11, (2, 8))).shape == (2, 8, 11)
    assert canonical_layer_spec("mlp(act='polynorm(eps=1e-6)')") == "mlp(act='polynorm')"
    assert canonical_activation("polynorm(eps=1e-5)") == "polynorm(eps=1e-05)"
    for bad, words in [("polynorm(eps=nan)", "literal"), ("polynorm(eps=-1)", "eps must be")]:
        with pytest.raises(ValueError, match=words) as e:
            canonical_activation(formula_spec(bad))
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_lean_function_matches_plain_autograd(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(4)
    fast, plain = PolyNorm(), PolyNorm(fused=False)
    with torch.no_grad():
        fast.weight.copy_(torch.tensor([0.5, -0.3, 0.8]))
        fast.bias.fill_(0.2)
    plain.load_state_dict(fast.state_dict())
    fast, plain = fast.to(dtype), plain.to(dtype)
    x = 2 * torch.randn(3, 4, 9, generator=g).to(dtype)
    up = torch.randn(3, 4, 9, generator=g).to(dtype)
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    ys = [m(t) for m, t in zip((fast, plain), xs, strict=True)]
    for y in ys:
        (y * up).sum().backward()
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-4}
    torch.testing.assert_close(ys[0], ys[1], **tol)
    torch.testing.assert_close(xs[0].grad, xs[1].grad, **tol)
    torch.testing.assert_close(fast.weight.grad, plain.weight.grad, **tol)
    torch.testing.assert_close(fast.bias.grad, plain.bias.grad, **tol)
    if dtype == torch.float64:
        names = ["weight", "bias"]

        def fn(inp: Tensor, w: Tensor, b: Tensor) -> Tensor:
            return torch.func.functional_call(fast, dict(zip(names, (w, b), strict=True)), (inp,))

        args = (x[:1, :2].clone(), fast.weight.detach().clone(), fast.bias.detach().clone())
        assert torch.autograd.gradcheck(fn, tuple(a.requires_grad_(True) for a in args))
