"""I(X;T) from input ids against closed forms and a float64 reference written out by hand;
the EBAB default (zeros of ReLU-like layers in their own bin, the published scheme)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from torch import nn

import actlab.probes as P
from actlab.probes.binning import digitize, ebab_edges, ebab_entropy, ebab_mi_inputs


def plugin_h(symbols: Sequence[object]) -> float:
    n = len(symbols)
    return -sum(c / n * math.log2(c / n) for c in Counter(symbols).values())


def reference_ixt(t: np.ndarray, x: np.ndarray, n_bins: int = 30) -> tuple[float, float]:
    """(H(T), I(X;T)) by hand: the published EBAB edges (lowest edge 0 and zeros removed from
    U when every value is >= 0), right-open bins, plug-in counts in float64."""
    v = t.reshape(t.shape[0], -1).astype(np.float64)
    u = np.unique(v)
    edges = [0.0] if u.min() >= 0 else []
    if edges:
        u = u[u > 0]
    edges += [u[int(k * (u.size / n_bins))] for k in range(n_bins)] + [u[-1]]
    e = np.unique(np.array(edges))
    states = [tuple(int(np.searchsorted(e, val, side="right")) - 1 for val in row) for row in v]
    h_t = plugin_h(states)
    h_t_x = 0.0
    for xv in np.unique(x):
        sel = [s for s, xi in zip(states, x, strict=True) if xi == xv]
        h_t_x += len(sel) / len(states) * plugin_h(sel)
    return h_t, h_t - h_t_x


class Site(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rep = nn.Identity()

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.rep(t)


def probe_rows(t: torch.Tensor, **context: torch.Tensor) -> dict[str, float]:
    net = Site()
    with P.probe(net, probes=["infoplane"], where="rep", max_tokens=10_000) as p:
        for s in range(0, t.shape[0], 100):  # several batches through the reservoir
            p.set_context(**{k: v[s : s + 100] for k, v in context.items()})
            net(t[s : s + 100])
    return p.summary().get("infoplane", "rep")


def test_ixt_closed_form_repeated_inputs_with_noise() -> None:
    """X uniform on 4 ids, T = X + U with U in {0, 1} fair (exact counts): T takes 5 values
    with p = 1/8, 1/4, 1/4, 1/4, 1/8, so H(T) = 2.25 bits, H(T|X) = 1 bit, I(X;T) = 1.25."""
    x = np.repeat(np.arange(4), 100)
    u = np.tile(np.repeat([0.0, 1.0], 50), 4)
    t = torch.tensor((x + u)[:, None])
    assert ebab_mi_inputs(t, x) == pytest.approx(1.25, abs=1e-12)
    row = probe_rows(t.float(), input_ids=torch.tensor(x), labels=torch.tensor(x))
    assert row["H_T_ebab"] == pytest.approx(2.25, abs=1e-12)  # the bound: 1 bit too high
    assert row["I_XT_ebab"] == pytest.approx(1.25, abs=1e-12)
    assert row["inputs_distinct"] == 4 and row["points_with_ids"] == 400
    assert row["I_TY_ebab"] == pytest.approx(1.25, abs=1e-12)  # Y = X here
    # aKDE agrees in the small-noise limit (5 well-separated points per input pair)
    assert row["I_XT_kde"] == pytest.approx(1.25, abs=1e-3)
    assert row["I_XT_kde_upper"] > row["I_XT_kde"] + 0.9


def test_ixt_matches_a_float64_reference_on_gaussian_noise() -> None:
    rng = np.random.default_rng(0)
    k, reps = 8, 60
    x = np.repeat(np.arange(k), reps)
    t = np.stack([0.5 * x, -0.2 * x], axis=1) + rng.normal(0, 0.3, (x.size, 2))
    h_ref, i_ref = reference_ixt(t, x)
    assert ebab_mi_inputs(t, x) == pytest.approx(i_ref, abs=1e-9)
    row = probe_rows(torch.tensor(t), input_ids=torch.tensor(x))
    assert row["H_T_ebab"] == pytest.approx(h_ref, abs=1e-5)
    assert row["I_XT_ebab"] == pytest.approx(i_ref, abs=1e-5)
    assert row["I_XT_ebab"] <= math.log2(k) + 1e-9 < row["H_T_ebab"]
    assert "I_TY_ebab" not in row and row["points_labelled"] == 0


def test_distinct_inputs_and_token_rows_as_ids() -> None:
    rng = np.random.default_rng(1)
    t = torch.tensor(rng.normal(size=(300, 3)))
    ids = torch.arange(300)
    row = probe_rows(t, input_ids=ids)
    assert row["I_XT_ebab"] == pytest.approx(row["H_T_ebab"], abs=1e-12)  # H(T|X) = 0
    # (B, L) token rows: equal rows are one input (two inputs here, T noisy within each)
    tokens = torch.tensor([[5, 6, 7], [5, 6, 8]]).repeat(150, 1)
    t2 = torch.tensor([[0.0], [10.0]], dtype=torch.float64).repeat(150, 1)
    t2 = t2 + torch.tensor(rng.normal(0, 1, (300, 1)))
    row2 = probe_rows(t2, input_ids=tokens)
    assert row2["inputs_distinct"] == 2
    assert row2["I_XT_ebab"] == pytest.approx(1.0, abs=0.02)  # T tells the two inputs apart


def test_ebab_default_gives_relu_zeros_their_own_bin() -> None:
    rng = np.random.default_rng(2)
    v = np.maximum(rng.normal(size=(2000, 4)), 0.0)  # ReLU layer: about half exact zeros
    edges = ebab_edges(v)
    pos = np.unique(v[v > 0])
    assert edges[0] == 0.0 and edges[1] == pos[0]  # bin 0 = [0, min positive) holds 0 only
    codes = digitize(v, edges)
    assert set(codes[v == 0].tolist()) == {0} and codes[v > 0].min() >= 1
    assert np.array_equal(edges, ebab_edges(v, lower=0.0))
    # the published construction, written out: 0, then n edges over the positive uniques
    want = np.unique([0.0] + [pos[int(k * pos.size / 30)] for k in range(30)] + [pos[-1]])
    assert np.array_equal(edges, want)
    # lower=None pools 0 with the smallest positives (not the published scheme): fewer states
    assert ebab_entropy(v, lower=None) < ebab_entropy(v)
    # signed layers: no lower edge either way
    s = rng.normal(size=(500, 2))
    assert np.array_equal(ebab_edges(s), ebab_edges(s, lower=None))
