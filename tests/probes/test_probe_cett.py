"""CETT probe: closed forms on synthetic data (W = identity / diagonal), a float64 brute force
over every candidate threshold on a tiny random Llama (gated MLP: the down projection's input
is act(gate(x)) * up(x), recomputed here from the MLP input), padding, thresholds that realise
the truncation, and hostile arguments."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from actlab.probes import ProbeArgumentError, make_probe, probe
from actlab.probes.cett import CETTProbe, cett, cett_search, down_projections, ppl_p_search

transformers = pytest.importorskip("transformers")


def _tiny_llama(seed: int = 0, init: float = 0.02) -> Any:
    cfg = transformers.LlamaConfig(
        initializer_range=init,
        vocab_size=100,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(cfg).eval()


# ----------------------------------------------------------------- closed forms
def test_identity_weight_known_answer() -> None:
    # W = I: CETT(eps) = sqrt(sum of the cut h_i^2) / ||h||; |h| = 1, 2, 3, 4, ||h||^2 = 30
    h = torch.tensor([[1.0, -2.0, 3.0, -4.0], [-4.0, 3.0, 2.0, 1.0]], dtype=torch.float64)
    w = torch.eye(4, dtype=torch.float64)
    assert cett(h, w, 2.0) == pytest.approx(math.sqrt(1 / 30))
    assert cett(h, w, 3.0) == pytest.approx(math.sqrt(5 / 30))
    assert cett(h, w, 0.5) == 0.0 and cett(h, w, math.inf) == pytest.approx(1.0)
    pt = cett_search(h, w, tau=0.2)  # sqrt(1/30) = 0.183 <= 0.2 < sqrt(5/30) = 0.408
    assert pt.eps == 2.0 and pt.cett == pytest.approx(math.sqrt(1 / 30))
    assert pt.sparsity == 0.25 and pt.activation_ratio == 0.75 and pt.tokens == 2
    assert pt.cut_max == 1.0 and pt.margin_eps == 1.5
    assert cett_search(h, w, tau=0.5).eps == 3.0  # sqrt(5/30) = 0.408 <= 0.5 < sqrt(14/30)
    assert cett_search(h, w, tau=0.5).sparsity == 0.5
    assert cett_search(h, w, tau=0.1).sparsity == 0.0  # nothing can be cut


def test_diagonal_weight_neuron_vs_magnitude() -> None:
    # W = diag(10, 1, 1, 1), h = (1, 2, 3, 4): |n| = (10, 2, 3, 4), ||W h||^2 = 100 + 29 = 129
    h = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)
    w = torch.diag(torch.tensor([10.0, 1.0, 1.0, 1.0], dtype=torch.float64))
    pt = cett_search(h, w, tau=0.2, criterion="neuron")  # cut {2}: 2/sqrt(129) = 0.176
    assert pt.eps == 3.0 and pt.sparsity == 0.25
    assert pt.cett == pytest.approx(2 / math.sqrt(129))
    pt = cett_search(h, w, tau=0.2, criterion="magnitude")  # cutting |h|=1 costs 10/sqrt(129)
    assert pt.eps == 1.0 and pt.sparsity == 0.0 and pt.cett == 0.0


def _brute(h: torch.Tensor, w: torch.Tensor, tau: float) -> tuple[list[float], list[float]]:
    """Every candidate threshold (distinct |h_i| ||W[:, i]||, then inf) and its mean CETT,
    in float64 with plain loops over tokens."""
    mags = h.abs() * w.norm(dim=0)
    cands = sorted(set(mags.flatten().tolist())) + [math.inf]
    curve = []
    for eps in cands:
        ratios = []
        for t in range(h.shape[0]):
            full = torch.linalg.vector_norm(w @ h[t])
            if full == 0:
                continue
            cut = torch.where(mags[t] < eps, h[t], torch.zeros_like(h[t]))
            ratios.append(float(torch.linalg.vector_norm(w @ cut) / full))
        curve.append(sum(ratios) / len(ratios))
    return cands, curve


def test_tiny_llama_against_float64_brute_force() -> None:
    model = _tiny_llama()
    mlp_in: dict[int, torch.Tensor] = {}
    hooks = [
        layer.mlp.register_forward_hook(
            lambda mod, a, o, i=i: mlp_in.__setitem__(i, a[0].detach().double())
        )
        for i, layer in enumerate(model.model.layers)
    ]
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(1))
    try:
        cp = CETTProbe()
        with probe(model, probes=[cp], sample=64) as p, torch.no_grad():
            model(ids)
    finally:
        for hk in hooks:
            hk.remove()
    assert p.sites["cett"] == [f"model.layers.{i}.mlp.down_proj" for i in range(2)]
    rows = {r["layer"]: r for r in p.summary().rows}
    for i, layer in enumerate(model.model.layers):
        mlp = layer.mlp
        x = mlp_in[i].reshape(-1, 64)
        wg, wu = mlp.gate_proj.weight.detach().double(), mlp.up_proj.weight.detach().double()
        h = torch.nn.functional.silu(x @ wg.T) * (x @ wu.T)  # the gated MLP's down input
        w = mlp.down_proj.weight.detach().double()
        cands, curve = _brute(h, w, 0.2)
        row = rows[f"model.layers.{i}.mlp.down_proj"]
        assert row["tokens"] == 24 and row["units"] == 128
        j = min(range(len(cands)), key=lambda k: abs(cands[k] - row["eps"]))
        assert cands[j] == pytest.approx(row["eps"], rel=1e-5)  # a candidate threshold
        assert curve[j] <= 0.2 + 1e-6 and curve[j + 1] > 0.2 - 1e-6  # a crossing of tau
        assert row["cett"] == pytest.approx(curve[j], abs=1e-5)
        mags = h.abs() * w.norm(dim=0)
        want = float((mags < cands[j]).double().mean())
        assert row["sparsity"] == pytest.approx(want, abs=2 / mags.numel())
        assert row["activation_ratio"] == pytest.approx(1 - row["sparsity"])
        # the float64 search on the same data lands on the same crossing
        pt = cett_search(h, w, 0.2)
        assert pt.eps == pytest.approx(row["eps"], rel=1e-5)
        # the per-neuron thresholds realise the truncation: cut h_i where |h_i| < t_i
        t = cp.thresholds()[f"model.layers.{i}.mlp.down_proj"].double()
        cut = torch.where(h.abs() < t, h, torch.zeros_like(h))
        ratios = (cut @ w.T).norm(dim=1) / (h @ w.T).norm(dim=1)
        assert float(ratios.mean()) == pytest.approx(row["cett"], abs=1e-4)


def test_padding_and_where_and_tau_override() -> None:
    model = _tiny_llama(2)
    ids = torch.randint(0, 100, (2, 10), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 6:] = 0
    cett_p = CETTProbe(tau=0.1, where="*.down_proj")
    with probe(model, probes=[cett_p], sample=64) as p, torch.no_grad():
        model(ids, attention_mask=mask)
    rows = p.summary().rows
    assert len(rows) == 2 and all(r["tokens_seen"] == 16 for r in rows)
    assert all(r["tau"] == 0.1 and r["cett"] <= 0.1 for r in rows)
    loose = cett_p.search(0.4)
    assert all(loose[r["layer"]].sparsity >= r["sparsity"] for r in rows)


def test_sites_of_non_gated_mlp_and_reservoir_bound() -> None:
    net = nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 8))
    assert down_projections(net) == []  # "2" is not a down projection's name
    mlp = nn.Module()
    mlp.fc1, mlp.act, mlp.fc2 = nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 8)
    assert [n for n, _ in down_projections(mlp, "mlp")] == ["mlp.fc2"]
    p = CETTProbe(tokens=20, where="2")
    net.eval()  # train mode samples every train_stride-th call only
    with probe(net, probes=[p], sample=16) as mgr, torch.no_grad():
        for _ in range(4):
            net(torch.randn(3, 16, 8))
    assert mgr.sites["cett"] == ["2"]
    res = p.samples["2"]
    assert len(res) == 20 and res.seen == 4 * 16
    (row,) = mgr.summary().rows
    assert row["tokens"] == 20 and 0.0 <= row["sparsity"] < 1.0 and row["cett"] <= 0.2


# ------------------------------------------------------------------------ PPL-p%
def test_ppl_p_search_closed_form() -> None:
    # ratio(tau) = exp(loss - dense) = 1 + tau^2: PPL-1% at tau = 0.1; sparsity = tau
    def loss_at(tau: float) -> tuple[float, float]:
        return 2.0 + math.log1p(tau * tau), tau

    pt = ppl_p_search(loss_at, 2.0, p=1.0, steps=14)
    assert abs(pt.tau - 0.1) <= 0.99 / 2**14 and pt.ppl_ratio <= 1.01
    assert pt.sparsity == pt.tau and pt.evaluations == 15
    assert ppl_p_search(loss_at, 2.0, p=200.0).tau == 0.99  # tau_max already qualifies
    never = ppl_p_search(lambda t: (3.0 if t > 0 else 2.0, t), 2.0, steps=4)
    assert never.tau == 0.0 and never.ppl_ratio == 1.0 and never.evaluations == 6
    nan = ppl_p_search(lambda t: (float("nan") if t > 0.5 else 2.0, t), 2.0, steps=6)
    assert nan.tau <= 0.5 and nan.ppl_ratio == 1.0
    for kw in ({"p": 0.0}, {"p": -1.0}, {"dense_loss": float("nan")}, {"steps": 0}):
        args: dict[str, Any] = {"p": 1.0, "dense_loss": 2.0, **kw}
        with pytest.raises(ProbeArgumentError):
            ppl_p_search(loss_at, args["dense_loss"], args["p"], steps=int(kw.get("steps", 12)))


def test_ppl_p_on_tiny_llama_with_test_side_truncation() -> None:
    """How actlab.sparse plugs in: thresholds from the probe, h_i zeroed where |h_i| < t_i by
    a pre-hook on each down projection (here in the test), the loss measured, tau bisected.

    A random model's loss on random tokens does not depend on its MLPs, so the loss here is
    the cross-entropy against the dense model's own next-token distribution (its entropy plus
    the KL divergence from it): the dense model has the least, any truncation raises it."""
    model = _tiny_llama(4, init=0.2)
    ids = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(5))
    cp = CETTProbe(tokens=64)
    with probe(model, probes=[cp], sample=64) as _, torch.no_grad():
        target = model(ids).logits.softmax(-1)

    def loss_of() -> float:
        logp = model(ids).logits.log_softmax(-1)
        return float(-(target * logp).sum(-1).mean())

    with torch.no_grad():
        dense = loss_of()
    downs = {n: m for n, m in model.named_modules() if n.endswith("down_proj")}

    def loss_at(tau: float) -> tuple[float, float]:
        th = cp.thresholds(tau)
        hooks = [
            downs[n].register_forward_pre_hook(
                lambda m, a, t=t: (torch.where(a[0].abs() < t, 0.0, a[0]),)
            )
            for n, t in th.items()
        ]
        try:
            with torch.no_grad():
                loss = loss_of()
        finally:
            for hk in hooks:
                hk.remove()
        return loss, cp.overall_sparsity(tau)

    assert loss_at(0.0) == (dense, 0.0)  # tau = 0 cuts nothing: bit-identical
    pt = ppl_p_search(loss_at, dense, p=1.0, steps=8)
    assert 0.0 < pt.tau < 0.99 and pt.ppl_ratio <= 1.01
    assert 0.0 < pt.sparsity < 1.0
    assert math.exp(loss_at(min(pt.tau + 0.99 / 2**8, 0.99))[0] - dense) > 1.01 or pt.tau > 0.9


# ------------------------------------------------------------------ hostile input
@pytest.mark.parametrize(
    "kwargs",
    [
        {"tau": -0.1},
        {"tau": 1.0},
        {"tau": float("nan")},
        {"tau": True},
        {"tau": "0.2"},
        {"criterion": "l1"},
        {"tokens": 0},
        {"where": ""},
    ],
)
def test_bad_arguments_are_one_line_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ProbeArgumentError) as e:
        CETTProbe(**kwargs)
    assert "\n" not in str(e.value)


def test_bad_data_and_sites_are_one_line_errors() -> None:
    w = torch.eye(4)
    for h, weight in [(torch.ones(3, 5), w), (torch.ones(4), w), (torch.ones(2, 4), torch.ones(4))]:
        with pytest.raises(ProbeArgumentError, match="d_ff"):
            cett_search(h, weight)
    with pytest.raises(ProbeArgumentError, match="nonzero"):
        cett_search(torch.zeros(3, 4), w)
    with pytest.raises(ProbeArgumentError, match="tau"):
        cett_search(torch.ones(3, 4), w, tau=2.0)
    with pytest.raises(ProbeArgumentError, match="floating"):
        cett_search(torch.ones(3, 4, dtype=torch.long), w)
    with pytest.raises(ProbeArgumentError, match="NaN"):
        cett_search(torch.ones(3, 4), torch.full((4, 4), float("inf")))
    with pytest.raises(ProbeArgumentError, match="finite"):
        cett_search(torch.full((3, 4), float("nan")), w)
    # tokens holding NaN / inf are left out, the others give the closed form
    h = torch.tensor([[1.0, 2.0, 3.0, 4.0], [float("nan"), 1.0, 1.0, 1.0], [float("inf")] * 4])
    pt = cett_search(h, w, 0.2)
    assert pt.tokens == 1 and pt.eps == 2.0 and pt.sparsity == 0.25
    net = nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 8))
    with pytest.raises(ProbeArgumentError, match="down projection"):
        with probe(net, probes=[CETTProbe(where="1")]):
            pass
    assert isinstance(make_probe("cett"), CETTProbe)


# ------------------------------------------------------------------- real model
@pytest.mark.realmodel
def test_smollm2_cett_sparsity_per_layer() -> None:
    """SmolLM2-135M on 128 Shakespeare tokens: every FFN is found, each layer's CETT-0.2 point
    is a crossing of the float64 curve, and its per-neuron thresholds realise it."""
    pretrained = pytest.importorskip("actlab.models.pretrained")
    from actlab.data import load_shakespeare

    try:
        model, tok = pretrained.load_smollm2()
    except pretrained.ModelUnavailableError as e:
        pytest.skip(str(e))
    ids = tok(load_shakespeare()[:4000], return_tensors="pt")["input_ids"][:, :128]
    captured: dict[str, torch.Tensor] = {}
    last = model.model.layers[-1].mlp.down_proj
    hk = last.register_forward_pre_hook(lambda m, a: captured.__setitem__("h", a[0].detach()))
    cp = CETTProbe(tau=0.2, tokens=128)
    try:
        with probe(model, probes=[cp], sample=128) as p, torch.no_grad():
            model(ids)
    finally:
        hk.remove()
    n = len(model.model.layers)
    assert p.sites["cett"] == [f"model.layers.{i}.mlp.down_proj" for i in range(n)]
    rows = p.summary().rows
    assert len(rows) == n
    assert all(r["cett"] <= 0.2 and 0.0 < r["sparsity"] < 1.0 for r in rows)
    h = captured["h"].reshape(-1, captured["h"].shape[-1]).double()
    w = last.weight.detach().double()
    label = f"model.layers.{n - 1}.mlp.down_proj"
    row = next(r for r in rows if r["layer"] == label)
    assert cett(h, w, row["eps"]) == pytest.approx(row["cett"], abs=1e-4)
    t = cp.thresholds()[label].double()
    cut = torch.where(h.abs() < t, h, torch.zeros_like(h))
    ratios = (cut @ w.T).norm(dim=1) / (h @ w.T).norm(dim=1)
    assert float(ratios.mean()) == pytest.approx(row["cett"], abs=1e-4)
    assert float((h.abs() < t).double().mean()) == pytest.approx(row["sparsity"], abs=1e-3)
