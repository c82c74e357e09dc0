"""Probes on the offline pretrained models: MiniLM-L6 (attention entropy, sparsity on a
padded batch) and SmolLM2-135M (massive activations, the exact median on 256 tokens and the
element-sampled estimate against its stated bound), each checked against the model's own
outputs."""

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
    """A padded batch: model(**enc) passes attention_mask=, so only real tokens count."""
    model, tok = minilm
    enc = tok(SENTENCES[:2], return_tensors="pt", padding=True)
    real = enc["attention_mask"].bool()
    assert not bool(real.all())  # the batch is padded
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        m.register_forward_hook(lambda mod, a, o, n=n: captured.__setitem__(n, o.detach()))
        for n, m in model.named_modules()
        if n.endswith("intermediate.intermediate_act_fn")
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
        flat = act[real] if act.ndim == 3 else act  # the pooler's tanh sees (B, D): no tokens
        assert row["tokens_sampled"] == flat.shape[0]
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


def _median_checks(
    exact_rows: list[dict[str, Any]],
    est_rows: list[dict[str, Any]],
    hidden: list[torch.Tensor],
    eps: float,
) -> list[float]:
    """Exact rows equal the median over every entry; estimated rows lie within ``eps`` of
    rank 1/2; the max is exact in both. Returns the estimates' relative errors."""
    rel_errs = []
    for row, est, h in zip(exact_rows, est_rows, hidden, strict=True):
        h = h.abs().flatten()
        med = float(h.median())
        assert row["median_abs"] == med and row["max_abs"] == float(h.max())
        assert row["median_estimated_calls"] == 0
        assert est["median_estimated_calls"] == 1 and est["max_abs"] == float(h.max())
        lo = float((h < est["median_abs"]).double().mean())
        hi = float((h <= est["median_abs"]).double().mean())
        assert lo - eps <= 0.5 <= hi + eps  # its rank in the call
        rel_errs.append(abs(est["median_abs"] / med - 1))
    return rel_errs


def test_minilm_median_exact_on_256_tokens(minilm: tuple[Any, Any]) -> None:
    """256 tokens x 384 dims per block: the default median is exact; 2**14 element draws
    keep the rank within 0.02 of 1/2 (DKW: failure probability 2 exp(-2 * 16384 * 0.02**2)
    = 4e-6 per block)."""
    model, tok = minilm
    text = " ".join(SENTENCES * 40)
    enc = tok(text, return_tensors="pt", truncation=True, max_length=256)
    assert enc["input_ids"].shape[1] == 256
    sampled = P.MassiveActivationProbe(median_elems=1 << 14)
    with P.probe(model, probes=["massive", sampled]) as p, torch.no_grad():
        out = model(**enc, output_hidden_states=True)
    errs = _median_checks(
        p.summary("massive").rows,
        p.summary("massive_1").rows,
        list(out.hidden_states[1:]),
        eps=0.02,
    )
    assert max(errs) < 0.1


@pytest.mark.slow
def test_smollm2_median_exact_on_256_tokens_and_the_estimate_within_its_bound(
    smollm2: tuple[Any, Any],
) -> None:
    """Default settings: the median of |h| over all 256 x 576 entries of each block output is
    exact (the old row sampling was off by up to ~20%). Forcing the element-level estimate
    (2**16 draws), each block's estimate lies within the DKW rank bound of the exact median:
    P(|q - 1/2| > 0.01) <= 2 exp(-2 * 65536 * 0.01**2) = 4e-6."""
    model, tok = smollm2
    from actlab.data.text import load_shakespeare

    text = load_shakespeare()
    text = text[text.find("To be, or not to be") :][:4000]
    ids = tok(text, return_tensors="pt").input_ids[:, :256]
    assert ids.shape[1] == 256
    sampled = P.MassiveActivationProbe(median_elems=1 << 16)
    with P.probe(model, probes=["massive", sampled]) as p, torch.no_grad():
        out = model(ids, output_hidden_states=True)
    rows, est = p.summary("massive").rows, p.summary("massive_1").rows
    # the last hidden state is after the final norm: compare blocks 0..28
    errs = _median_checks(rows[:-1], est[:-1], list(out.hidden_states[1:-1]), eps=0.01)
    assert max(errs) < 0.05  # measured: 1.5% at most, 0.4% on average
