"""The MoE MLP: per-token brute force for every router, gradients, sizing, routing probe."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from actlab.layers import LayerSpecError, create_layer
from actlab.layers.moe import MoeMlp, equal_active_expert_hidden

D, H = 6, 12


def _moe(spec: str = "moe", seed: int = 0, **kw: object) -> MoeMlp:
    torch.manual_seed(seed)
    m = create_layer(spec, in_features=D, hidden_features=H, out_features=D, **kw)
    assert isinstance(m, MoeMlp)
    return m.double()


def _gelu(h: Tensor) -> Tensor:
    return 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))


def _brute(m: MoeMlp, x: Tensor) -> Tensor:
    """One token at a time: router formula, gates, every expert, weighted sum."""
    kind, tau, k = m.router.kind, m.router.tau, m.top_k
    w = m.router.proj.weight
    rows = []
    for t in x.reshape(-1, x.shape[-1]):
        a = w @ t  # (E,)
        if kind == "blockffn":
            r = a.clamp_min(0)
            g = r / torch.sqrt((r * r).mean() + 1e-6) * m.router.norm.weight
            if k:
                keep = g.argsort(descending=True)[:k]
                g = torch.zeros_like(g).index_copy(0, keep, g[keep])
        else:
            z = (m.router.act(a) if kind == "act" else a) / tau
            keep = z.argsort(descending=True)[: k or len(z)]
            e = torch.zeros_like(z).index_copy(0, keep, torch.exp(z[keep] - z[keep].max()))
            g = e / e.sum()
        y = torch.zeros(m.out_features, dtype=x.dtype)
        for i, ex in enumerate(m.experts):
            y = y + g[i] * (ex.fc2.weight @ _gelu(ex.fc1.weight @ t + ex.fc1.bias) + ex.fc2.bias)
        rows.append(y)
    return torch.stack(rows).reshape(*x.shape[:-1], m.out_features)


SPECS = [
    "moe",
    "moe(tau=0.5)",
    "moe(router='softmax')",
    "moe(router='blockffn')",
    "moe(top_k=2, router_act='gelu')",  # relu ties at 0 would make the top-k choice arbitrary
    "moe(router='softmax', top_k=1)",
    "moe(router='blockffn', top_k=2)",
]


@pytest.mark.parametrize("spec", SPECS)
def test_matches_a_per_token_brute_force(spec: str) -> None:
    m = _moe(spec)
    x = torch.randn(2, 5, D, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _brute(m, x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "spec", ["moe", "moe(router='blockffn')", "moe(router='softmax', top_k=2)"]
)
def test_gradients_match_the_brute_force_and_gradcheck(spec: str) -> None:
    m = _moe(spec, seed=1)
    x = torch.randn(4, D, dtype=torch.float64, requires_grad=True)
    m(x).pow(2).sum().backward()
    got = [x.grad.clone()] + [p.grad.clone() for p in m.parameters()]
    x2 = x.detach().clone().requires_grad_(True)
    m.zero_grad()
    _brute(m, x2).pow(2).sum().backward()
    want = [x2.grad] + [p.grad for p in m.parameters()]
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    xs = torch.randn(3, D, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: m(t), (xs,))


def test_sparse_routing_runs_each_expert_on_its_tokens_only() -> None:
    m = _moe("moe(router='softmax', top_k=1)")
    seen: list[int] = []
    for ex in m.experts:
        ex.register_forward_hook(lambda mod, a, out: seen.append(a[0].shape[0]))
    m(torch.randn(10, D, dtype=torch.float64))
    assert sum(seen) == 10  # every token ran exactly one expert


def test_equal_active_parameters_with_the_dense_mlp() -> None:
    for d, h, e, k in [(128, 512, 4, 0), (128, 512, 8, 2), (64, 256, 4, 1), (6, 12, 4, 0)]:
        dense = create_layer("mlp", in_features=d, hidden_features=h, out_features=d)
        n_dense = sum(p.numel() for p in dense.parameters())
        m = create_layer(f"moe(experts={e}, top_k={k})", in_features=d, hidden_features=h)
        assert isinstance(m, MoeMlp)
        active = m.active_parameters()
        unit = (k or e) * (2 * d + 1)  # one more hidden unit in each active expert
        assert active <= n_dense < active + unit, (d, h, e, k, active, n_dense)
        assert m.expert_hidden == equal_active_expert_hidden(d, h, e, k)
    with pytest.raises(ValueError, match="cannot match"):
        equal_active_expert_hidden(4, 2, 64)


def test_routing_probe_entropy_equals_brute_force_on_router_outputs() -> None:
    from actlab.models.char_gpt import CharGPT, GPTConfig
    from actlab.probes import probe

    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16)
    gpt = CharGPT(cfg, mlp_layer="moe(experts=4, tau=0.7)")
    idx = torch.randint(0, 13, (3, 8))
    outs: dict[str, Tensor] = {}
    for i, blk in enumerate(gpt.blocks):
        blk.mlp.router.register_forward_hook(
            lambda mod, a, out, i=i: outs.__setitem__(f"blocks.{i}.mlp.router", out.detach())
        )
    with probe(gpt, probes=["routing"]) as p:
        gpt(idx)
    assert p.sites["routing"] == ["blocks.0.mlp.router", "blocks.1.mlp.router"]
    for site, z in outs.items():
        row = p.summary("routing").get("routing", site)
        z64 = z.double()  # (tokens, E) router outputs: relu(W x) / tau
        q = torch.exp(z64) / torch.exp(z64).sum(-1, keepdim=True)
        h = float(-(q * torch.log(q)).sum(-1).mean())
        assert row["entropy"] == pytest.approx(h, rel=1e-5)
        assert row["tokens"] == 24 and row["experts"] == 4


def test_usable_in_vit_and_char_gpt_through_mlp_layer() -> None:
    from actlab.models.factory import check_model_overrides
    from actlab.models.vit import ViT, ViTConfig

    cfg = ViTConfig(img_size=8, patch_size=4, in_chans=1, embed_dim=16, depth=1, num_heads=2)
    vit = ViT(cfg, mlp_layer="moe(router='blockffn')")
    y = vit(torch.randn(2, 1, 8, 8))
    y.sum().backward()
    assert y.shape == (2, 10)
    assert check_model_overrides("gpt_char_mini", {"mlp_layer": "moe(router='softmax')"}) == {
        "mlp_layer": "moe(router='softmax')"
    }


def test_state_dict_round_trip_and_lazy_sizing() -> None:
    m = _moe("moe(router='blockffn')").float()
    lazy = create_layer("moe(router='blockffn')", hidden_features=H, out_features=D)
    lazy.load_state_dict(m.state_dict())
    x = torch.randn(3, D)
    torch.testing.assert_close(lazy(x), m(x), rtol=0, atol=0)


def test_bad_input_gets_one_line() -> None:
    m = _moe()
    with pytest.raises(ValueError, match="built for 6 input features") as e:
        m(torch.randn(2, 7, dtype=torch.float64))
    assert "\n" not in str(e.value)
    with torch.no_grad():
        m.experts[2].fc1.weight[0, 0] = math.nan
    with pytest.raises(ValueError, match="non-finite parameters"):
        m(torch.randn(2, D, dtype=torch.float64))
    for spec, words in [
        ("moe(router='topk')", "router must be one of"),
        ("moe(top_k=5)", "top_k must be in 0..experts"),
        ("moe(experts=1)", "experts must be in"),
        ("moe(tau=0.0)", "tau must be"),
        ("moe(router_act='nosuch')", "nosuch"),
        ("moe(experts=64)", "cannot match"),
    ]:
        with pytest.raises(LayerSpecError, match=words) as e:
            create_layer(spec, in_features=D, hidden_features=H, out_features=D)
        assert "\n" not in str(e.value)


def test_router_activation_is_configurable() -> None:
    m = _moe("moe(router_act='gelu')")
    assert type(m.router.act).__name__.lower().startswith("gelu")
    x = torch.randn(2, D, dtype=torch.float64)
    a = x @ m.router.proj.weight.T
    torch.testing.assert_close(m.router(x), nn.functional.gelu(a))
