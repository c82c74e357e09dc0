"""Estimator accuracy: true vs estimated on synthetic data with closed forms, in one table.

    .venv/bin/python benchmarks/bench_probe_estimators.py [--n 4000] [--seed 0]

Every row draws fresh data from ``--seed``; units are bits unless stated. The closed forms:
correlated Gaussians I = -1/2 log2(1 - rho^2) per pair; a discrete uniform over K values
has H = log2 K; N(0, I_d) plus noise N(0, s2 I) has H = d/2 log2(2 pi e (1 + s2)); K tight,
far-apart clusters have DSE = log2 K and, as classes, DSMI = log2 K; independent Bernoulli(q)
units have TLS = 1 - q and CLS_8 = (1 - q)^8; uniform attention over T keys has entropy
ln T; the five-parameter massive-activation curve is refit from noiseless samples.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000, help="samples per estimate")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import actlab.probes as P
    from actlab.probes.base import ProbeContext
    from actlab.probes.binning import (
        discrete_entropy,
        ebab_entropy,
        ebab_mi,
        ebab_mi_inputs,
        ebab_mi_labels,
    )
    from actlab.probes.dse import diffusion_spectral_entropy, dsmi
    from actlab.probes.kde import kde_entropy, kde_mi_xt
    from actlab.probes.knn import compressed_mi, compressed_mi_labels, kl_entropy, ksg_mi
    from actlab.probes.massive import fit_ratio_curve, ratio_curve

    rng = np.random.default_rng(args.seed)
    n = args.n
    rows: list[tuple[str, str, float, float]] = []

    def gauss(rho: float, m: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.standard_normal(m)
        return x, rho * x + math.sqrt(1 - rho**2) * rng.standard_normal(m)

    for rho in (0.5, 0.9):
        truth = -0.5 * math.log2(1 - rho**2)
        x, y = gauss(rho, n)
        rows.append(
            ("I(X;Y) corr. Gaussians", f"EBAB 30 bins, rho={rho}, n={n}", truth, ebab_mi(x, y))
        )
        x, y = gauss(rho, n)
        rows.append(("I(X;Y) corr. Gaussians", f"KSG k=3, rho={rho}, n={n}", truth, ksg_mi(x, y)))
    for k in (8, 30):
        v = rng.integers(0, k, size=(n, 1)).astype(float)
        rows.append(("H(T) discrete uniform", f"EBAB, K={k}, n={n}", math.log2(k), ebab_entropy(v)))
    y = rng.integers(0, 4, n)
    t = (y * 2.0 + 1.0)[:, None]
    rows.append(("I(T;Y), T = f(Y), 4 classes", "EBAB", discrete_entropy(y), ebab_mi_labels(t, y)))
    # repeated inputs with noise: X uniform on 4 ids, T = X + U, U ~ Bernoulli(1/2);
    # I(X;T) = H(T) - H(T|X) = 2.25 - 1 = 1.25 bits, while H(T) (the old "I_XT") says 2.25
    xs = rng.integers(0, 4, n)
    tx = (xs + rng.integers(0, 2, n)).astype(float)[:, None]
    rows.append(("I(X;T), T = X + Bernoulli", "EBAB with input ids", 1.25, ebab_mi_inputs(tx, xs)))
    rows.append(("I(X;T), T = X + Bernoulli", "H(T) (bound, no ids)", 1.25, ebab_entropy(tx)))
    z = rng.standard_normal((n, 2)) * np.array([1.0, 3.0])
    rows.append(
        (
            "H Gaussian 2-d",
            "Kozachenko-Leonenko k=3",
            0.5 * math.log2((2 * math.pi * math.e) ** 2 * 9.0),
            kl_entropy(z),
        )
    )
    m, d, s2 = min(n, 1500), 2, 0.25
    z = rng.standard_normal((m, d))
    h_true = 0.5 * d * math.log2(2 * math.pi * math.e * (1 + s2))
    rows.append(
        ("H(T+noise) Gaussian", f"aKDE upper bound, s2={s2}, n={m}", h_true, kde_entropy(z, s2))
    )
    rows.append(
        (
            "H(T+noise) Gaussian",
            f"aKDE lower bound, s2={s2}, n={m}",
            h_true,
            kde_entropy(z, s2, "lower"),
        )
    )
    clusters = np.repeat(np.arange(8.0)[:, None] * 10, 100, axis=0)
    rows.append(("I(X;T), 8 far-apart states", "aKDE, s2=0.01", 3.0, kde_mi_xt(clusters, 0.01)))
    rho, m = 0.8, min(n, 3000)
    lat = rng.standard_normal((m, 2))
    lat2 = rho * lat + math.sqrt(1 - rho**2) * rng.standard_normal((m, 2))
    x50 = lat @ rng.standard_normal((2, 50)) + 0.01 * rng.standard_normal((m, 50))
    t40 = lat2 @ rng.standard_normal((2, 40)) + 0.01 * rng.standard_normal((m, 40))
    rows.append(
        (
            "I(X;T) 2 pairs in 50/40-d",
            "PCA(2) + KSG",
            -math.log2(1 - rho**2),
            compressed_mi(x50, t40, dims=2),
        )
    )
    y = rng.integers(0, 4, m)
    tt = rng.standard_normal((4, 30))[y] * 20 + rng.standard_normal((m, 30))
    rows.append(
        (
            "I(T;Y) 4 separated classes, 30-d",
            "PCA(3) + KL",
            discrete_entropy(y),
            compressed_mi_labels(tt, y, dims=3),
        )
    )
    centres = rng.standard_normal((6, 8)) * 1000
    zc = np.repeat(centres, 20, axis=0) + 1e-5 * rng.standard_normal((120, 8))
    rows.append(
        (
            "DSE of 6 tight clusters",
            "sigma=1, t=1",
            math.log2(6),
            diffusion_spectral_entropy(zc, sigma=1.0),
        )
    )
    yc = np.repeat(np.arange(6), 20)
    rows.append(
        ("DSMI, clusters = classes", "sigma=1, 5 repeats", math.log2(6), dsmi(zc, yc, sigma=1.0))
    )
    q = 0.3
    act = torch.from_numpy(rng.random((64, 64, 256)) < q).float()
    sp = P.SparsityProbe(window=10**9)
    sp.bind(ProbeContext(sample=4096))
    sp.update("l", torch.nn.Identity().eval(), act)
    srow = sp.summary()["l"]
    rows.append(("TLS, Bernoulli(0.3) units", "SparsityProbe", 1 - q, srow["tls"]))
    rows.append(("CLS_8, Bernoulli(0.3) units", "SparsityProbe", (1 - q) ** 8, srow["cls_8"]))
    ap_ = P.AttentionEntropyProbe()
    ap_.update("a", torch.nn.Identity().eval(), torch.full((2, 4, 16, 16), 1 / 16))
    rows.append(
        (
            "attention entropy, uniform (nats)",
            "T=16",
            math.log(16),
            ap_.summary()["a#h0"]["entropy"],
        )
    )
    steps = np.linspace(0, 1000, 40)
    fit = fit_ratio_curve(steps, ratio_curve(steps, 50.0, 0.5, 0.01, 1.5, 10.0))
    rows.append(("massive fit: lambda", "A=50 lam=0.5 gamma=0.01 t0=1.5 K=10", 0.5, fit.lam))
    rows.append(("massive fit: gamma", "(noiseless, 40 checkpoints)", 0.01, fit.gamma))

    print(f"{'quantity':36} {'estimator / setting':40} {'true':>9} {'estimate':>9} {'error':>9}")
    for what, how, truth, est in rows:
        print(f"{what:36} {how:40} {truth:9.4f} {est:9.4f} {est - truth:+9.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
