"""Attention entropy (closed forms, brute force, fused-qkv recomputation) and MoE routing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import actlab.probes as P
from actlab.probes import AttentionEntropyProbe, ProbeContext, RoutingProbe, entropy_bands
from actlab.probes.attention import row_entropy
from actlab.probes.routing import routing_fluctuation


def _probe(norm: str = "support") -> AttentionEntropyProbe:
    p = AttentionEntropyProbe(norm=norm)  # type: ignore[arg-type]
    p.bind(ProbeContext(sample=100_000))
    return p


def test_uniform_and_one_hot_attention() -> None:
    b, h, t = 2, 3, 10
    uniform = torch.full((b, h, t, t), 1.0 / t)
    one_hot = F.one_hot(torch.randint(0, t, (b, h, t)), t).float()
    p = _probe()
    p.update("u", nn.Identity(), (torch.zeros(b, t, 4), uniform))
    p.update("o", nn.Identity(), (torch.zeros(b, t, 4), one_hot))
    rows = p.summary()
    for head in range(h):
        assert rows[f"u#h{head}"]["entropy"] == pytest.approx(math.log(t))
        assert rows[f"u#h{head}"]["entropy_norm"] == pytest.approx(1.0)
        assert rows[f"o#h{head}"]["entropy"] == pytest.approx(0.0, abs=1e-7)


def test_causal_uniform_rows_normalise_to_one() -> None:
    t = 12
    mask = torch.tril(torch.ones(t, t))
    probs = (mask / mask.sum(-1, keepdim=True)).expand(1, 2, t, t)
    for norm in ("support", "causal"):
        p = _probe(norm)
        p.update("c", nn.Identity(), probs)
        row = p.summary()["c#h0"]
        assert row["entropy"] == pytest.approx(sum(math.log(i + 1) for i in range(t)) / t)
        assert row["entropy_norm"] == pytest.approx(1.0)  # every row at its maximum log(i+1)
    full = _probe("full")
    full.update("c", nn.Identity(), probs)
    assert full.summary()["c#h0"]["entropy_norm"] < 0.8


def test_random_attention_matches_brute_force() -> None:
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(3, 4, 7, 7) * 2, dim=-1)
    p = _probe()
    p.update("r", nn.Identity(), probs)
    rows = p.summary()
    ent = -(probs * probs.log()).sum(-1)  # (B, H, T)
    for head in range(4):
        assert rows[f"r#h{head}"]["entropy"] == pytest.approx(float(ent[:, head].mean()), rel=1e-5)
        assert rows[f"r#h{head}"]["entropy_norm"] == pytest.approx(
            float(ent[:, head].mean() / math.log(7)), rel=1e-5
        )
    assert float(row_entropy(torch.tensor([0.5, 0.5, 0.0]))) == pytest.approx(math.log(2))


def test_padded_queries_are_ignored_with_attention_mask() -> None:
    torch.manual_seed(5)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    scores = torch.randn(2, 3, 5, 5).masked_fill(mask[:, None, None, :] == 0, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    p = _probe()
    p.ctx.extras["attention_mask"] = mask
    p.update("m", nn.Identity(), probs)
    rows = p.summary()
    ent = row_entropy(probs)  # (B, H, T)
    support = mask.sum(1).float()  # keys per sequence: 5 and 3
    for head in range(3):
        real = torch.cat([ent[0, head], ent[1, head, :3]])
        assert rows[f"m#h{head}"]["entropy"] == pytest.approx(float(real.mean()), rel=1e-5)
        normed = torch.cat([ent[0, head] / support[0].log(), ent[1, head, :3] / support[1].log()])
        assert rows[f"m#h{head}"]["entropy_norm"] == pytest.approx(float(normed.mean()), rel=1e-5)


class FusedAttention(nn.Module):
    """A timm-style attention with a fused qkv and SDPA (no probabilities exposed)."""

    def __init__(self, dim: int = 16, num_heads: int = 4, causal: bool = False) -> None:
        super().__init__()
        self.num_heads, self.is_causal = num_heads, causal
        self.qkv = nn.Linear(dim, 3 * dim)

    def probs(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, _ = self.qkv(x).split(d, dim=2)
        q = q.view(b, t, self.num_heads, -1).transpose(1, 2)
        k = k.view(b, t, self.num_heads, -1).transpose(1, 2)
        s = q @ k.transpose(-1, -2) / math.sqrt(d // self.num_heads)
        if self.is_causal:
            s = s.masked_fill(torch.triu(torch.ones(t, t, dtype=torch.bool), 1), float("-inf"))
        return torch.softmax(s, -1)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = (
            z.view(b, t, self.num_heads, -1).transpose(1, 2) for z in self.qkv(x).split(d, 2)
        )
        return (
            F.scaled_dot_product_attention(q, k, v, is_causal=self.is_causal)
            .transpose(1, 2)
            .reshape(b, t, d)
        )


@pytest.mark.parametrize("causal", [False, True])
def test_fused_qkv_attention_is_recomputed(causal: bool) -> None:
    torch.manual_seed(1)
    attn = FusedAttention(causal=causal)
    net = nn.Sequential(attn)
    x = torch.randn(2, 9, 16) * 3
    with P.probe(net, probes=["attention"], sample=10_000) as p:
        net(x)
    assert p.sites["attention"] == ["0"]
    with torch.no_grad():
        ent = row_entropy(attn.probs(x))  # (B, H, T)
    for row in p.summary("attention"):
        assert row["entropy"] == pytest.approx(float(ent[:, row["head"]].mean()), rel=1e-4)


def test_torch_multihead_attention_weights() -> None:
    torch.manual_seed(2)
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    x = torch.randn(2, 5, 8)
    with pytest.raises(ValueError, match="where"):  # an empty glob is refused, not ignored
        AttentionEntropyProbe(where="")
    with pytest.raises(ValueError, match="matches no module"):  # the root has no name to match
        P.probe(mha, probes=[AttentionEntropyProbe(where="attn*")]).attach()
    wrap = nn.ModuleDict({"attn": mha})
    with P.probe(wrap, probes=["attention"]) as p:
        _, w = wrap["attn"](x, x, x)
    row = p.summary("attention")[0]
    assert row["head"] == 0
    assert row["entropy"] == pytest.approx(float(row_entropy(w.detach()).mean()), rel=1e-5)


def test_sdpa_attention_without_probabilities_is_reported() -> None:
    class Attention(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x

    net = nn.Sequential(Attention())
    with P.probe(net, probes=["attention"]) as p:
        net(torch.randn(1, 3, 4))
    assert "eager" in p.summary("attention")[0]["note"]


def test_entropy_bands() -> None:
    rows = [{"layer": "a", "entropy": v} for v in (0.1, 2.0, 2.5, 3.9, 4.0)]
    bands = entropy_bands(rows)
    assert bands["M"] == 4.0
    assert bands["band_of_row"] == ["collapse", "healthy", "healthy", "overload", "overload"]
    assert bands["verdict"] == "entropic overload"
    assert (
        entropy_bands([{"layer": "a", "entropy": 0.1}] * 3 + [{"layer": "a", "entropy": 4.0}])[
            "verdict"
        ]
        == "entropy collapse"
    )


# --- MoE routing -------------------------------------------------------------------------


class Router(nn.Module):
    def __init__(self, dim: int, experts: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, experts, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)  # router logits


class TinyMoE(nn.Module):
    """Top-1 mixture of experts: a router, E expert MLPs."""

    def __init__(self, dim: int = 8, experts: int = 4) -> None:
        super().__init__()
        self.router = Router(dim, experts)
        self.experts = nn.ModuleList(nn.Linear(dim, dim) for _ in range(experts))

    def forward(self, x: Tensor) -> Tensor:
        logits = self.router(x)
        top = logits.argmax(-1)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            m = top == e
            out[m] = expert(x[m]) * torch.softmax(logits, -1)[m][:, e : e + 1]
        return x + out


def test_routing_entropy_load_and_fluctuation() -> None:
    torch.manual_seed(3)
    moe0, moe1 = TinyMoE(), TinyMoE()
    moe = nn.Sequential(moe0, moe1)
    x = torch.randn(4, 16, 8)
    with P.probe(moe, probes=["routing"], max_tokens=48) as p_a:
        moe(x)
    assert p_a.sites["routing"] == ["0.router", "1.router"]
    row = p_a.summary("routing").get("routing", "0.router")
    with torch.no_grad():
        logits = moe0.router(x).reshape(-1, 4)
    pr = torch.softmax(logits, -1)
    assert row["entropy"] == pytest.approx(float(-(pr * pr.log()).sum(-1).mean()), rel=1e-5)
    load = torch.bincount(logits.argmax(-1), minlength=4).float() / 64
    assert row["load"] == pytest.approx(load.tolist())
    # a second checkpoint: perturb the first router, compare top-1 on the same tokens
    with torch.no_grad():
        old_1 = moe1.router(moe0(x)).reshape(-1, 4)
        moe0.router.proj.weight.add_(0.5 * torch.randn(4, 8))
    with P.probe(moe, probes=["routing"], max_tokens=48) as p_b:
        moe(x)
    fl = routing_fluctuation(p_a["routing"], p_b["routing"])
    assert isinstance(fl, dict)
    with torch.no_grad():
        new_logits = moe0.router(x).reshape(-1, 4)
    brute = float((logits.argmax(-1)[:48] != new_logits.argmax(-1)[:48]).float().mean())
    assert fl["0.router"] == pytest.approx(brute) and brute > 0
    with torch.no_grad():
        new_1 = moe1.router(moe0(x)).reshape(-1, 4)
    assert fl["1.router"] == pytest.approx(
        float((old_1.argmax(-1) != new_1.argmax(-1))[:48].float().mean())
    )
    or_none = routing_fluctuation(logits, new_logits)
    assert or_none == pytest.approx(
        float((logits.argmax(-1) != new_logits.argmax(-1)).float().mean())
    )


def test_uniform_router_has_max_entropy() -> None:
    p = RoutingProbe()
    p.update("r", nn.Identity(), torch.zeros(10, 6))
    row = p.summary()["r"]
    assert row["entropy"] == pytest.approx(math.log(6)) and row["entropy_norm"] == pytest.approx(
        1.0
    )
