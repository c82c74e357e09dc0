"""Estimators against closed forms: EBAB, aKDE bounds, KSG / Kozachenko-Leonenko, PCA-MI, DSE."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from actlab.probes.binning import (
    digitize,
    discrete_entropy,
    ebab_edges,
    ebab_entropy,
    ebab_mi,
    ebab_mi_labels,
)
from actlab.probes.dse import diffusion_spectral_entropy, dsmi
from actlab.probes.kde import kde_entropy, kde_mi_labels, kde_mi_xt
from actlab.probes.knn import compressed_mi, compressed_mi_labels, kl_entropy, ksg_mi

LOG2E = 1 / math.log(2)


def gaussian_pair(rho: float, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    return x, rho * x + math.sqrt(1 - rho * rho) * rng.standard_normal(n)


def gauss_mi_bits(rho: float) -> float:
    return -0.5 * math.log2(1 - rho * rho)


# --- EBAB -------------------------------------------------------------------------------


def test_ebab_edges_equal_unique_counts() -> None:
    v = np.arange(300, dtype=float)  # 300 unique values, 30 bins -> 10 per bin
    edges = ebab_edges(v, 30, lower=None)  # 0 as an ordinary value: the edge arithmetic alone
    counts = np.bincount(digitize(v, edges))
    assert counts[:30].tolist() == [10] * 29 + [9] and counts[30] == 1  # top value: own state
    assert ebab_edges(np.array([0.0, 0.0, 1.0, 2.0]), 2, lower=0.0)[0] == 0.0


@pytest.mark.parametrize("k", [2, 5, 8, 30])
def test_ebab_entropy_discrete_uniform(k: int) -> None:
    rng = np.random.default_rng(1)
    v = rng.integers(0, k, size=(20000, 1)).astype(float) * 0.37
    assert ebab_entropy(v) == pytest.approx(math.log2(k), abs=0.01)


def test_discrete_entropy_and_labels_mi() -> None:
    p = np.array([0.5, 0.25, 0.125, 0.125])
    sym = np.repeat(np.arange(4), (p * 8000).astype(int))
    assert discrete_entropy(sym) == pytest.approx(1.75, abs=1e-12)
    # T = f(Y) one to one: I(T;Y) = H(Y); T independent of Y: I ~ 0
    y = np.random.default_rng(2).integers(0, 4, 20000)
    t = (y * 3.0 + 1.0)[:, None]
    assert ebab_mi_labels(t, y) == pytest.approx(discrete_entropy(y), abs=1e-9)
    t_ind = np.random.default_rng(3).integers(0, 4, 20000)[:, None].astype(float)
    assert ebab_mi_labels(t_ind, y) == pytest.approx(0.0, abs=0.005)


@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_ebab_mi_correlated_gaussians(rho: float) -> None:
    x, y = gaussian_pair(rho, 40000)
    # plug-in on 31 x 31 states: bias ~ 31^2 / (2 n ln 2) = 0.017 bits up, binning loses a bit
    assert ebab_mi(x, y) == pytest.approx(gauss_mi_bits(rho), abs=0.08)


# --- aKDE -------------------------------------------------------------------------------


def test_kde_separated_clusters_exact() -> None:
    # K points far apart (>> sigma): H(T+Z) = log2 K + H(noise) exactly, both bounds
    k, var = 8, 0.01
    t = np.repeat(np.arange(k, dtype=float)[:, None] * 10.0, 50, axis=0)
    for bound in ("upper", "lower"):
        assert kde_mi_xt(t, var, bound) == pytest.approx(math.log2(k), abs=1e-6)  # type: ignore[arg-type]
    y = np.repeat(np.arange(k) % 2, 50)
    assert kde_mi_labels(t, y, var) == pytest.approx(1.0, abs=1e-6)


def test_kde_bounds_bracket_gaussian_entropy() -> None:
    # T ~ N(0, s^2 I_d) plus noise N(0, var I): H = d/2 log2(2 pi e (s^2 + var))
    rng = np.random.default_rng(4)
    d, var = 2, 0.25
    t = rng.standard_normal((1500, d))
    truth = 0.5 * d * math.log2(2 * math.pi * math.e * (1 + var))
    lo, hi = kde_entropy(t, var, "lower"), kde_entropy(t, var, "upper")
    assert lo - 0.05 <= truth <= hi + 0.05
    # small-noise limit: upper = H + d/2 nats, lower = H - (d/2)(ln 4 - 1) nats, gap d bits
    assert hi - truth < 0.5 * d * LOG2E + 0.05
    assert hi - lo < d + 0.05
    with pytest.raises(ValueError):
        kde_entropy(t, 0.0)


# --- kNN and PCA-compressed MI ----------------------------------------------------------


def test_kl_entropy_gaussian() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4000, 2)) * np.array([1.0, 3.0])
    truth = 0.5 * math.log2((2 * math.pi * math.e) ** 2 * 9.0)
    assert kl_entropy(x) == pytest.approx(truth, abs=0.06)


@pytest.mark.parametrize("rho", [0.0, 0.6, 0.9])
def test_ksg_correlated_gaussians(rho: float) -> None:
    x, y = gaussian_pair(rho, 3000, seed=6)
    assert ksg_mi(x, y) == pytest.approx(gauss_mi_bits(rho), abs=0.05)


def test_compressed_mi_high_dimensional() -> None:
    # two correlated 2-d latents embedded in 50 and 40 dims: I = 2 * (-1/2 log2(1 - rho^2))
    rng = np.random.default_rng(7)
    n, rho = 3000, 0.8
    z = rng.standard_normal((n, 2))
    w = rho * z + math.sqrt(1 - rho**2) * rng.standard_normal((n, 2))
    x = z @ rng.standard_normal((2, 50)) + 0.01 * rng.standard_normal((n, 50))
    t = w @ rng.standard_normal((2, 40)) + 0.01 * rng.standard_normal((n, 40))
    assert compressed_mi(x, t, dims=2) == pytest.approx(2 * gauss_mi_bits(rho), abs=0.12)


def test_compressed_mi_labels_separated_classes() -> None:
    rng = np.random.default_rng(8)
    y = rng.integers(0, 4, 2000)
    means = rng.standard_normal((4, 30)) * 20
    t = means[y] + rng.standard_normal((2000, 30))
    assert compressed_mi_labels(t, y, dims=3) == pytest.approx(discrete_entropy(y), abs=0.1)


# --- diffusion spectral entropy -----------------------------------------------------------


def dse_reference(z: np.ndarray, sigma: float, t: int) -> float:
    d2 = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    g = np.exp(-d2 / (2 * sigma**2))
    deg = g.sum(1)
    p_mat = g / deg[:, None]  # the diffusion operator D^-1 G (same spectrum)
    lam = np.abs(np.linalg.eigvals(p_mat)) ** t
    p = lam / lam.sum()
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def test_dse_closed_forms() -> None:
    z_same = np.ones((40, 5))
    assert diffusion_spectral_entropy(z_same, sigma=1.0) == pytest.approx(0.0, abs=1e-6)
    z_far = np.eye(32) * 100.0
    assert diffusion_spectral_entropy(z_far, sigma=1.0) == pytest.approx(5.0, abs=1e-9)
    rng = np.random.default_rng(9)
    centres = rng.standard_normal((6, 8)) * 1000
    z_clusters = np.repeat(centres, [10, 20, 5, 7, 30, 8], axis=0) + 1e-5 * rng.standard_normal(
        (80, 8)
    )
    assert diffusion_spectral_entropy(z_clusters, sigma=1.0) == pytest.approx(
        math.log2(6), abs=1e-4
    )


@pytest.mark.parametrize("t", [1, 3])
def test_dse_matches_brute_force(t: int) -> None:
    z = np.random.default_rng(10).standard_normal((60, 4))
    ours = diffusion_spectral_entropy(torch.from_numpy(z), sigma=1.5, t=t)
    assert ours == pytest.approx(dse_reference(z, 1.5, t), abs=1e-8)


def test_dse_subsample_is_seeded() -> None:
    z = np.random.default_rng(11).standard_normal((300, 3))
    a = diffusion_spectral_entropy(z, sigma=1.0, max_points=100, seed=3)
    assert a == diffusion_spectral_entropy(z, sigma=1.0, max_points=100, seed=3)
    assert a != diffusion_spectral_entropy(z, sigma=1.0, max_points=100, seed=4)


def test_dsmi_clusters_equal_classes() -> None:
    rng = np.random.default_rng(12)
    k = 4
    y = np.repeat(np.arange(k), 25)
    z = rng.standard_normal((k, 6))[y] * 1000 + 1e-3 * rng.standard_normal((100, 6))
    assert dsmi(z, y, sigma=1.0) == pytest.approx(math.log2(k), abs=0.02)
    y_random = rng.permutation(y)
    assert abs(dsmi(z, y_random, sigma=1.0)) < 0.2
