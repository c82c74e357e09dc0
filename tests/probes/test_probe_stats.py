"""Each probe's statistics against brute force or closed forms (called directly, no hooks)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from actlab.probes import DistributionProbe, MassiveActivationProbe, ProbeContext, SparsityProbe
from actlab.probes.base import Reservoir, sample_chunks, sample_rows
from actlab.probes.massive import fit_ratio_curve, ratio_curve
from actlab.probes.sparsity import cls, tls

DUMMY = nn.Identity().eval()  # eval mode: every call is sampled


# --- sampling ----------------------------------------------------------------------------


def test_reservoir_is_uniform_and_bounded() -> None:
    g = torch.Generator().manual_seed(0)
    hits = torch.zeros(200)
    for _ in range(300):
        r = Reservoir(20, g)
        for start in range(0, 200, 25):  # a stream of 200 rows in batches of 25
            ids = torch.arange(start, start + 25, dtype=torch.float32)[:, None]
            r.add(ids, extra=ids.clone())
        assert len(r) == 20 and r.rows is not None and r.extra is not None
        assert torch.equal(r.rows, r.extra)  # side data follows its row
        hits[r.rows[:, 0].long()] += 1
    # each row kept with probability 20/200: 30 expected hits per row over 300 trials
    chi2 = float(((hits - 30) ** 2 / 30).sum())
    assert chi2 < stats.chi2.ppf(0.999, 199)
    assert hits[:25].sum() > 0 and hits[-25:].sum() > 0


def test_sample_rows_and_chunks_layouts() -> None:
    g = np.random.default_rng(0)
    conv = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    rows = sample_rows(conv, 1000, g)  # all 32 positions, 3 channels each
    assert rows.shape == (32, 3)
    assert torch.equal(rows[5], conv[0, :, 1, 1])
    few = sample_rows(conv, 7, g)
    assert few.shape == (7, 3) and all(any(torch.equal(r, q) for q in rows) for r in few)
    seq = torch.randn(3, 20, 5)
    ch = sample_chunks(seq, 8, 100, g)
    assert ch is not None and ch.shape == (6, 8, 5)  # 2 full chunks per sequence
    assert torch.equal(ch[0], seq[0, 0:8]) and torch.equal(ch[3], seq[1, 8:16])
    assert sample_chunks(torch.randn(5, 4), 8, 10, g) is None
    img = torch.randn(2, 3, 4, 4)  # conv map: chunks run along the raster order of positions
    ch4 = sample_chunks(img, 8, 100, g)
    assert ch4 is not None and ch4.shape == (4, 8, 3)
    assert torch.equal(ch4[3], img[1].flatten(1)[:, 8:16].T)
    small = torch.randn(3, 5)
    copy = sample_rows(small, 10, g)
    small.zero_()  # an in-place op after the hook must not reach the sample
    assert copy.abs().sum() > 0


# --- sparsity -----------------------------------------------------------------------------


def test_sparsity_fractions_match_brute_force() -> None:
    torch.manual_seed(0)
    a = torch.relu(torch.randn(4, 16, 32))
    a[a.abs() < 0.05] = 0.003  # some near-zero, non-zero values
    p = SparsityProbe(near_zero=0.01, window=10**9)
    p.bind(ProbeContext(sample=10_000))
    p.update("l", DUMMY, a)
    row = p.summary()["l"]
    flat = a.reshape(-1, 32)
    assert row["zero_frac"] == pytest.approx(float((flat == 0).float().mean()))
    assert row["near_zero_frac"] == pytest.approx(float((flat.abs() <= 0.01).float().mean()))
    assert row["tls"] == pytest.approx(tls(flat))
    ref_cls = np.mean([cls(a[b]) for b in range(4)])
    assert row["cls_8"] == pytest.approx(ref_cls)


def test_tls_cls_closed_form_bernoulli() -> None:
    torch.manual_seed(1)
    q = 0.3  # each unit active independently with probability q
    a = (torch.rand(64, 64, 256) < q).float()
    p = SparsityProbe(window=10**9)
    p.bind(ProbeContext(sample=100_000))
    p.update("l", DUMMY, a)
    row = p.summary()["l"]
    assert row["tls"] == pytest.approx(1 - q, abs=0.005)
    assert row["cls_8"] == pytest.approx((1 - q) ** 8, abs=0.005)


def test_dead_units_over_windows() -> None:
    p = SparsityProbe(window=100, criterion="positive")
    p.bind(ProbeContext(sample=64))
    x = torch.randn(50, 10)
    x[:, :3] = -1.0  # units 0-2 never positive
    p.update("l", DUMMY, x)  # 50 rows: window not complete
    assert p.summary()["l"]["dead_windows_done"] == 0
    assert p.summary()["l"]["dead_rate"] == pytest.approx(0.3)
    y = torch.randn(60, 10)
    y[:, :2] = -1.0
    y[0, 2] = 5.0  # unit 2 revives once in this window
    p.update("l", DUMMY, y)  # 110 rows: closes the first window
    row = p.summary()["l"]
    assert row["dead_windows_done"] == 1 and row["dead_rate"] == pytest.approx(0.2)
    assert row["dead_rate_partial"] == 1.0  # the new window has seen nothing yet
    conv = torch.randn(4, 6, 5, 5)
    conv[:, 4] = -2.0  # a dead channel of a conv map
    q = SparsityProbe(window=10, criterion="positive")
    q.update("c", DUMMY, conv)
    assert q.summary()["c"]["dead_rate"] == pytest.approx(1 / 6)


# --- pre-activation distribution ------------------------------------------------------------


def test_distribution_histogram_and_moments() -> None:
    torch.manual_seed(2)
    x = torch.randn(64, 128) * 1.5 + 0.3
    x[0, 0], x[0, 1], x[0, 2] = 100.0, -100.0, 8.0  # overflow, underflow, top edge (overflow)
    edges = np.linspace(-8, 8, 33)
    p = DistributionProbe(edges=edges, max_elems=10**6)
    p.bind(ProbeContext(sample=10_000))
    p.update("l", DUMMY, x)
    counts, e, under, over = p.histogram("l")
    v = x.flatten().double().numpy()
    ref, _ = np.histogram(v[(v >= -8) & (v < 8)], bins=edges)
    assert counts.tolist() == ref.tolist() and under == 1 and over == 2
    m = p.moments("l")
    assert m["mean"] == pytest.approx(v.mean(), rel=1e-5)
    assert m["std"] == pytest.approx(v.std(), rel=1e-5)
    assert m["skew"] == pytest.approx(stats.skew(v), rel=1e-4)
    assert m["kurtosis"] == pytest.approx(stats.kurtosis(v), rel=1e-4)
    # non-uniform edges take the bucketize path and agree with numpy too
    odd = np.array([-3.0, -1.0, -0.2, 0.0, 0.5, 2.0, 8.0])
    q = DistributionProbe(edges=odd, max_elems=10**6)
    q.bind(ProbeContext(sample=10_000))
    q.update("l", DUMMY, x)
    ref_odd, _ = np.histogram(v[(v >= -3) & (v < 8)], bins=odd)
    assert q.histogram("l")[0].tolist() == ref_odd.tolist()
    # a large offset keeps its precision (moments are accumulated around the first mean)
    big = DistributionProbe(max_elems=10**6)
    big.update("l", DUMMY, torch.randn(64, 64) * 0.01 + 1000.0)
    assert big.moments("l")["std"] == pytest.approx(0.01, rel=0.05)
    assert (m["min"], m["max"]) == (-100.0, 100.0)


def test_to_density_standard_normal() -> None:
    torch.manual_seed(3)
    p = DistributionProbe(edges=np.linspace(-5, 5, 101), max_elems=10**6)
    p.bind(ProbeContext(sample=4096))
    for _ in range(4):
        p.update("l", DUMMY, torch.randn(4096, 64))
    grid, dens, ddens = p.to_density("l", smooth_bins=1.5)
    phi = np.exp(-(grid**2) / 2) / math.sqrt(2 * math.pi)
    inner = np.abs(grid) < 3.5
    assert np.max(np.abs(dens - phi)[inner]) < 0.01
    assert np.max(np.abs(ddens - (-grid * phi))[inner]) < 0.03
    with pytest.raises(KeyError):
        p.to_density("nope")


# --- massive activations ---------------------------------------------------------------------


def test_massive_ratio_and_location() -> None:
    torch.manual_seed(4)
    h = torch.randn(2, 12, 64)
    h[1, 0, 17] = -2500.0  # a massive activation: batch 1, first token, dim 17
    h[0, 5, 3] = 40.0
    p = MassiveActivationProbe(top_k=3)
    p.bind(ProbeContext())
    p.update("block", DUMMY, (h, None))  # tuple outputs: first tensor is the hidden state
    row = p.summary()["block"]
    med = float(h.abs().median())
    assert row["max_abs"] == 2500.0
    assert row["median_abs"] == pytest.approx(med)
    assert row["ratio"] == pytest.approx(2500.0 / med)
    assert row["massive"] and row["massive_tokens"] == 1
    assert row["top_dims"][0][0] == 17
    top = row["top_tokens"][0]
    assert (top["batch"], top["position"], top["dim"]) == (1, 0, 17)
    assert row["top_tokens"][1]["dim"] == 3
    small = MassiveActivationProbe()
    small.update("b", DUMMY, torch.randn(3, 8, 16))
    assert not small.summary()["b"]["massive"]  # a ratio ~ 5 is no massive activation


def test_massive_top_tokens_merge_across_calls() -> None:
    p = MassiveActivationProbe(top_k=2)
    for call, v in enumerate([5.0, 50.0, 7.0]):
        h = torch.zeros(1, 4, 8) + 0.1
        h[0, call, call] = v
        p.update("b", DUMMY, h)
    tops = p.summary()["b"]["top_tokens"]
    assert [(t["call"], t["position"], t["value"]) for t in tops] == [(1, 1, 50.0), (2, 2, 7.0)]


@pytest.mark.parametrize("params", [(50.0, 0.5, 0.01, 1.5, 10.0), (-30.0, 0.8, 0.05, 1.2, 100.0)])
def test_fit_recovers_known_parameters(params: tuple[float, ...]) -> None:
    t = np.linspace(0, 1000, 40)
    fit = fit_ratio_curve(t, ratio_curve(t, *params))
    got = (fit.a, fit.lam, fit.gamma, fit.t0, fit.k)
    for g, want in zip(got, params, strict=True):
        assert g == pytest.approx(want, rel=1e-3)
    assert fit.rmse < 1e-6


def test_fit_noisy_curve_reaches_noise_level() -> None:
    t = np.linspace(0, 1000, 40)
    y = ratio_curve(t, 50.0, 0.5, 0.01, 1.5, 10.0)
    noise = 0.01 * np.ptp(y)
    fit = fit_ratio_curve(t, y + np.random.default_rng(0).normal(0, noise, t.size))
    assert fit.rmse < 1.2 * noise and fit.lam >= 0
    assert np.max(np.abs(fit(t) - y)) < 4 * noise
    with pytest.raises(ValueError):
        fit_ratio_curve([1, 2, 3], [1, 2, 3])


def _known_median_tensor(shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, float]:
    """|h| is a shuffled 1..n (random signs): the lower median is (n - 1) // 2 + 1."""
    n = math.prod(shape)
    g = torch.Generator().manual_seed(seed)
    mag = (torch.randperm(n, generator=g) + 1).double()
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).double()
    return (mag * sign).reshape(shape).float(), float((n - 1) // 2 + 1)


def test_massive_median_is_exact_over_every_entry() -> None:
    h, med = _known_median_tensor((4, 300, 96), seed=5)  # 115,200 entries, 1,200 tokens
    p = MassiveActivationProbe()  # default median_elems = 2**18 >= 115,200: exact
    p.update("b", DUMMY, h)
    row = p.summary()["b"]
    assert row["median_abs"] == med and row["median_estimated_calls"] == 0
    assert row["max_abs"] == float(h.numel()) and row["ratio"] == float(h.numel()) / med
    # over two calls: the mean of the per-call medians, the max over both
    h2, med2 = _known_median_tensor((2, 10, 96), seed=6)
    p.update("b", DUMMY, h2)
    row = p.summary()["b"]
    assert row["median_abs"] == pytest.approx((med + med2) / 2)
    assert row["max_abs"] == float(h.numel())


def test_massive_median_estimate_meets_its_stated_bound() -> None:
    """Above median_elems entries: the median of m uniform element draws; its rank q in the
    call obeys P(|q - 1/2| > eps) <= 2 exp(-2 m eps^2) (DKW). eps for a 1e-6 failure rate."""
    m = 4096
    eps = math.sqrt(math.log(2e6) / (2 * m))  # 0.042
    h, _ = _known_median_tensor((8, 512, 64), seed=7)  # 262,144 entries
    n = h.numel()
    p = MassiveActivationProbe(median_elems=m)
    ranks = []
    for call in range(20):
        p.reset()
        p.ctx = ProbeContext(seed=call)
        p.update("b", DUMMY, h)
        row = p.summary()["b"]
        assert row["median_estimated_calls"] == 1 and row["max_abs"] == float(n)  # max exact
        ranks.append(row["median_abs"] / n)  # |h| = 1..n: the value is its rank
    assert max(abs(q - 0.5) for q in ranks) <= eps
    assert abs(float(np.mean(ranks)) - 0.5) < 4 * 0.5 / math.sqrt(m * 20)  # unbiased in rank
