"""Probes on the offline pretrained models: MiniLM-L6 (attention entropy, sparsity) and
SmolLM2-135M (massive activations), each checked against the model's own outputs."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

import actlab.probes as P

pytestmark = pytest.mark.realmodel

SENTENCES = [
    "To be, or not to be: that is the question.",
    "The quick brown fox jumps over the lazy dog.",
    "Activations shape what a network can represent.",
]


@pytest.fixture(scope="module")
def minilm() -> tuple[Any, Any]:
    pretrained = pytest.importorskip("actlab.models.pretrained")
    try:
        model, tok = pretrained.load_minilm()
    except pretrained.ModelUnavailableError as e:
        pytest.skip(str(e))
    P.use_eager_attention(model)
    return model, tok


@pytest.fixture(scope="module")
def smollm2() -> tuple[Any, Any]:
    pretrained = pytest.importorskip("actlab.models.pretrained")
    try:
        return pretrained.load_smollm2()  # type: ignore[no-any-return]
    except pretrained.ModelUnavailableError as e:
        pytest.skip(str(e))


def test_minilm_attention_entropy_matches_returned_attentions(minilm: tuple[Any, Any]) -> None:
    model, tok = minilm
    enc = tok(SENTENCES, return_tensors="pt", padding=True)
    with P.probe(model, probes=["attention"], sample=10_000) as p, torch.no_grad():
        p.set_context(attention_mask=enc["attention_mask"])
        out = model(**enc, output_attentions=True)
    assert len(p.sites["attention"]) == 6
    rows = p.summary("attention").rows
    assert len(rows) == 6 * 12
    mask = enc["attention_mask"].bool()
    for layer, att in enumerate(out.attentions):  # (B, H, T, T), brute force
        ent = -(torch.special.xlogy(att, att)).sum(-1)  # (B, H, T)
        for head in (0, 5, 11):
            row = rows[layer * 12 + head]
            assert row["head"] == head
            want = ent[:, head][mask].mean()
            assert row["entropy"] == pytest.approx(float(want), rel=1e-4)
            assert 0.0 < row["entropy_norm"] <= 1.0 + 1e-6
    bands = P.entropy_bands(rows)
    assert abs(sum(bands["shares"].values()) - 1.0) < 1e-9 and bands["verdict"]


def test_minilm_sparsity_of_gelu_sites(minilm: tuple[Any, Any]) -> None:
    model, tok = minilm
    enc = tok(SENTENCES[:2], return_tensors="pt", padding=True)
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        m.register_forward_hook(lambda mod, a, o, n=n: captured.__setitem__(n, o.detach()))
        for n, m in model.named_modules() if n.endswith("intermediate.intermediate_act_fn")
    ]
    try:
        with P.probe(model, probes=["sparsity"], sample=10_000) as p, torch.no_grad():
            model(**enc)
    finally:
        for h in hooks:
            h.remove()
    assert len(p.sites["sparsity"]) == 7  # 6 GELUs + the pooler's tanh
    for name, act in captured.items():
        row = p.summary("sparsity").get("sparsity", name)
        flat = act.reshape(-1, act.shape[-1])
        assert row["tls"] == pytest.approx(float(1 - (flat > 0).float().mean()), abs=1e-6)
        assert row["zero_frac"] == pytest.approx(float((flat == 0).float().mean()), abs=1e-6)
        assert row["dead_rate"] == pytest.approx(float(((flat > 0).sum(0) == 0).float().mean()))


def test_smollm2_massive_activations(smollm2: tuple[Any, Any]) -> None:
    model, tok = smollm2
    ids = tok("To be, or not to be", return_tensors="pt").input_ids[:, :6]
    with P.probe(model, probes=["massive"]) as p, torch.no_grad():
        out = model(ids, output_hidden_states=True)
    rows = p.summary("massive").rows
    assert [r["layer"] for r in rows] == [f"model.layers.{i}" for i in range(30)]
    for i, r in enumerate(rows):
        h = out.hidden_states[i + 1].abs()  # block i's output (the last one before the norm)
        if i == len(rows) - 1:
            continue  # transformers applies the final norm to the last hidden state
        assert r["max_abs"] == pytest.approx(float(h.max()), rel=1e-5)
        assert r["median_abs"] == pytest.approx(float(h.median()), rel=1e-5)
    massive = [r for r in rows if r["massive"]]
    assert len(massive) >= 5  # SmolLM2 has >100 and >=1000x activations in its middle blocks
    for r in massive:
        assert r["ratio"] >= 1000 and r["max_abs"] > 100
        top = r["top_tokens"][0]
        assert top["position"] == 0 and top["dim"] == r["top_dims"][0][0]
    assert math.isfinite(rows[0]["ratio"])
