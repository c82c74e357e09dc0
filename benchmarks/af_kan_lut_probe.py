"""How far a lookup-table (LUT) evaluation of AF-KAN's phases could take the layer: a probe.

AF-KAN (``actlab.layers.af_kan``) evaluates 2 G activation values per input element and phase
(G = 8 by default), forward and again in the backward pass; that is most of its step
(docs/layers.md, "Where af_kan's time goes"). Every phase function f_j(u) is a function of the
scalar u = tanh(x) in [-1, 1] alone, so the two contractions the layer needs, s0(u) = sum_j w_j
f_j(u) and s1(u) = sum_j f_j(u), are 1-D functions too: tabulated once per step on K + 1 knots
(values and derivatives, G (K + 1) exact evaluations) and interpolated (cubic Hermite, error
about h^4 / 384 max |f''''|, h = 2 / K: far below float32 rounding at K = 1024), each element
costs two table lookups instead of G phase pairs. What the lookups cannot give directly is the
exact min / max of f over the whole tensor (the layer's min-max scale) and the phases'
gradients; the design in docs/layers.md finds the min / max from per-bin ranges of u plus exact
evaluation of the few candidates, and the gradients from per-knot deposits of the backward's
two gradient streams.

This probe times those building blocks, not a layer: written as plain loops (the compiler's
vectorisation, -O3 -march=native, built with torch's cpp_extension on first use; the lookup
also with explicit AVX-512 gathers where the CPU has them) and run at the
two layer sizes of bench_layers' transformer slot (x (64, 17, 64), H = 126), one thread, next to
the shipped exact kernel (``af_kan_reduce``, forward and forward + backward) and the MLP step
the issue-14 target is stated against:

  lookup    s0, s1 of every element from the table (the forward; the backward's derivatives
            are one more lookup of the same cost); on an AVX-512 CPU also with explicit gathers,
            and the faster of the two enters the projection
  bins      per-bin min / max of u over the tensor (one scalar pass: the candidate search)
  deposit   the backward's two gradient streams spread onto the knots with the Hermite weights
            (one scalar pass)

and prints the projected step: the measured af_kan step minus the exact reduction's forward +
backward plus the LUT blocks (2 lookups + bins + deposit) per layer; the table build and the
candidates' exact evaluation (about 1 % of the elements) are not in it. A projection, not a
measurement of a shipped path.

    python benchmarks/af_kan_lut_probe.py [--knots 1024] [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved_samples  # noqa: E402

from actlab.layers import create_layer  # noqa: E402
from actlab.models import match_hidden  # noqa: E402

SOURCE = r"""
#include <torch/extension.h>
#include <algorithm>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

// The knot interval k of u in [-1, 1] (K intervals, sc = K / 2) and the cubic Hermite weights
// of its position t in it: values at k, k + 1 (h00, h01) and h-scaled slopes (h10, h11).
struct Cell {
  int k;
  float h00, h10, h01, h11;
};

inline Cell cell(float u, float sc, int kmax) {
  const float p = (u + 1.0f) * sc;
  const int k = std::min(std::max(static_cast<int>(p), 0), kmax);
  const float t = p - static_cast<float>(k), om = 1.0f - t, t2 = t * t, om2 = om * om;
  return {k, (1.0f + 2.0f * t) * om2, t * om2, t2 * (3.0f - 2.0f * t), t2 * (t - 1.0f)};
}

// has_gathers(): whether this build has the explicit AVX-512 lookup (-march=native on an
// AVX-512 CPU)
bool has_gathers() {
#ifdef __AVX512F__
  return true;
#else
  return false;
#endif
}

// table (K + 1, 4): S0, h S0', S1, h S1' at the knots -1 + k h, h = 2 / K. gathers: the rows in
// whole vectors of 16 with explicit AVX-512 gathers (where built), the rest in the plain loop.
std::vector<at::Tensor> lookup_impl(const at::Tensor& ut, const at::Tensor& table, bool gathers) {
  const int64_t M = ut.numel(), K = table.size(0) - 1;
  auto s0 = at::empty_like(ut), s1 = at::empty_like(ut);
  const float* u = ut.data_ptr<float>();
  const float* T = table.data_ptr<float>();
  float* o0 = s0.data_ptr<float>();
  float* o1 = s1.data_ptr<float>();
  const float sc = 0.5f * static_cast<float>(K);
  const int kmax = static_cast<int>(K) - 1;
  int64_t n0 = 0;
#ifdef __AVX512F__
  if (gathers) {
    const __m512 vsc = _mm512_set1_ps(sc), one = _mm512_set1_ps(1.0f);
    const __m512 two = _mm512_set1_ps(2.0f), three = _mm512_set1_ps(3.0f);
    const __m512i vkmax = _mm512_set1_epi32(kmax), zero = _mm512_setzero_si512();
    for (; n0 + 16 <= M; n0 += 16) {
      const __m512 p = _mm512_mul_ps(_mm512_add_ps(_mm512_loadu_ps(u + n0), one), vsc);
      const __m512i k = _mm512_max_epi32(_mm512_min_epi32(_mm512_cvttps_epi32(p), vkmax), zero);
      const __m512 t = _mm512_sub_ps(p, _mm512_cvtepi32_ps(k));
      const __m512i b = _mm512_slli_epi32(k, 2);  // 4 floats per knot
      auto at = [&](int off) {
        return _mm512_i32gather_ps(_mm512_add_epi32(b, _mm512_set1_epi32(off)), T, 4);
      };
      const __m512 om = _mm512_sub_ps(one, t), om2 = _mm512_mul_ps(om, om);
      const __m512 t2 = _mm512_mul_ps(t, t);
      const __m512 h00 = _mm512_mul_ps(_mm512_fmadd_ps(two, t, one), om2);
      const __m512 h10 = _mm512_mul_ps(t, om2);
      const __m512 h01 = _mm512_mul_ps(t2, _mm512_fnmadd_ps(two, t, three));
      const __m512 h11 = _mm512_mul_ps(t2, _mm512_sub_ps(t, one));
      auto herm = [&](int o) {
        return _mm512_fmadd_ps(h00, at(o), _mm512_fmadd_ps(h10, at(o + 1),
               _mm512_fmadd_ps(h01, at(o + 4), _mm512_mul_ps(h11, at(o + 5)))));
      };
      _mm512_storeu_ps(o0 + n0, herm(0));
      _mm512_storeu_ps(o1 + n0, herm(2));
    }
  }
#endif
#pragma omp simd
  for (int64_t n = n0; n < M; ++n) {
    const Cell c = cell(u[n], sc, kmax);
    const float* q = T + 4 * c.k;
    o0[n] = c.h00 * q[0] + c.h10 * q[1] + c.h01 * q[4] + c.h11 * q[5];
    o1[n] = c.h00 * q[2] + c.h10 * q[3] + c.h01 * q[6] + c.h11 * q[7];
  }
  return {s0, s1};
}

std::vector<at::Tensor> lookup(const at::Tensor& ut, const at::Tensor& table) {
  return lookup_impl(ut, table, false);
}

std::vector<at::Tensor> lookup_gather(const at::Tensor& ut, const at::Tensor& table) {
  return lookup_impl(ut, table, true);
}

// per-bin min and max of u (K bins)
at::Tensor bins(const at::Tensor& ut, int64_t K) {
  auto r = at::empty({K, 2}, ut.options());
  float* R = r.data_ptr<float>();
  for (int64_t k = 0; k < K; ++k) R[2 * k] = 2.0f, R[2 * k + 1] = -2.0f;
  const float* u = ut.data_ptr<float>();
  const float sc = 0.5f * static_cast<float>(K);
  const int64_t M = ut.numel(), kmax = K - 1;
  for (int64_t n = 0; n < M; ++n) {
    const float v = u[n];
    const int64_t k0 = static_cast<int64_t>((v + 1.0f) * sc);
    const int64_t k = std::min<int64_t>(std::max<int64_t>(k0, 0), kmax);
    R[2 * k] = std::min(R[2 * k], v);
    R[2 * k + 1] = std::max(R[2 * k + 1], v);
  }
  return r;
}

// g0, g1 onto the knots with the Hermite weights: (K + 1, 4) sums
at::Tensor deposit(const at::Tensor& ut, const at::Tensor& g0, const at::Tensor& g1, int64_t K) {
  auto d = at::zeros({K + 1, 4}, ut.options());
  float* D = d.data_ptr<float>();
  const float* u = ut.data_ptr<float>();
  const float* a = g0.data_ptr<float>();
  const float* b = g1.data_ptr<float>();
  const float sc = 0.5f * static_cast<float>(K);
  const int64_t M = ut.numel();
  for (int64_t n = 0; n < M; ++n) {
    const Cell c = cell(u[n], sc, static_cast<int>(K) - 1);
    float* q = D + 4 * c.k;
    q[0] += c.h00 * a[n], q[1] += c.h10 * a[n], q[2] += c.h00 * b[n], q[3] += c.h10 * b[n];
    q[4] += c.h01 * a[n], q[5] += c.h11 * a[n], q[6] += c.h01 * b[n], q[7] += c.h11 * b[n];
  }
  return d;
}
"""


def build() -> Any:
    from torch.utils.cpp_extension import load_inline

    return load_inline(
        "actlab_af_kan_lut_probe",
        cpp_sources=SOURCE,
        functions=["lookup", "lookup_gather", "has_gathers", "bins", "deposit"],
        extra_cflags=["-O3", "-march=native", "-fopenmp-simd"],
        verbose=False,
    )


def best_ms(fn: Callable[[], Any], repeats: int) -> float:
    """Median over ``repeats`` rounds of the mean of 5 calls (after 5 warm-up calls), in ms."""
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(5):
            fn()
        times.append((time.perf_counter() - t0) / 5)
    return statistics.median(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--knots", type=int, default=1024, help="table intervals K (default 1024)")
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    if args.knots < 4:
        sys.exit("af_kan_lut_probe: --knots must be >= 4")
    torch.set_num_threads(1)
    print("building the probe's kernels (torch cpp_extension, first run ~30 s) ...", flush=True)
    ext = build()
    torch.manual_seed(0)
    x = torch.randn(64, 17, 64)
    mlp = create_layer("mlp", in_features=64, hidden_features=128, out_features=64,
                       act_layer="gelu")  # fmt: skip
    target = sum(p.numel() for p in mlp.parameters())
    h = match_hidden("af_kan", 64, 64, target)
    af: Any = create_layer("af_kan", in_features=64, hidden_features=h, out_features=64,
                      act_layer="gelu")  # fmt: skip

    def step(m: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            for p in m.parameters():
                p.grad = None
            m(x).square().mean().backward()

        return run

    samples = interleaved_samples({"mlp": step(mlp), "af_kan": step(af)}, args.repeats)
    mlp_ms = statistics.median(samples["mlp"]) * 1e3
    af_ms = statistics.median(samples["af_kan"]) * 1e3
    print(f"steps (1 thread, x {tuple(x.shape)}, H {h}): mlp(gelu) {mlp_ms:.3f} ms, "
          f"af_kan {af_ms:.3f} ms = {af_ms / mlp_ms:.2f}x")  # fmt: skip
    K = args.knots
    table = torch.randn(K + 1, 4)
    saved = 0.0
    with torch.no_grad():
        h1 = af.layer1(x)
    layers: list[tuple[str, Any, torch.Tensor]] = [
        ("layer1", af.layer1, x),
        ("layer2", af.layer2, h1),
    ]
    for name, layer, inp in layers:
        xin = inp.reshape(-1, inp.shape[-1]).detach()
        p = layer._params(xin.dtype)
        ops = layer._ops(xin, p)
        if ops is None:
            sys.exit("af_kan_lut_probe: the native AF-KAN kernels are not available here")
        code = layer._act_id[1]
        ut = torch.tanh(xin).t().contiguous()
        g0, g1 = torch.randn_like(ut), torch.randn_like(ut)
        xg = xin.clone().requires_grad_()
        args_ = (p["low"], p["high"], p["attn_w"][0], code, 0, 0, True)

        def exact_fwd(xin: torch.Tensor = xin, ops: Any = ops, a: tuple = args_) -> Any:
            with torch.no_grad():
                return ops.af_kan_reduce(xin, *a)

        def exact_fb(xg: torch.Tensor = xg, ops: Any = ops, a: tuple = args_) -> None:
            xg.grad = None
            r = ops.af_kan_reduce(xg, *a)
            (r[0].sum() + r[1].sum() + r[2].sum() + r[3].sum()).backward()

        fwd = best_ms(exact_fwd, args.repeats)
        fb = best_ms(exact_fb, args.repeats)
        look = best_ms(partial(ext.lookup, ut, table), args.repeats)
        if ext.has_gathers():  # the explicit AVX-512 version, checked against the plain loop
            got, want = ext.lookup_gather(ut, table), ext.lookup(ut, table)
            assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-5) for a, b in zip(got, want))
            gather = best_ms(partial(ext.lookup_gather, ut, table), args.repeats)
            print(f"{name}: lookup with AVX-512 gathers {gather:.3f} ms (plain loop {look:.3f})")
            look = min(look, gather)
        bins = best_ms(partial(ext.bins, ut, K), args.repeats)
        dep = best_ms(partial(ext.deposit, ut, g0, g1, K), args.repeats)
        lut = 2 * look + bins + dep
        saved += fb - lut
        print(
            f"{name}: {ut.numel()} elements x G {p['low'].numel()}; exact reduction fwd "
            f"{fwd:.3f} ms, fwd+bwd {fb:.3f} ms | LUT K {K}: lookup {look:.3f}, bins "
            f"{bins:.3f}, deposit {dep:.3f} ms; 2 lookups + bins + deposit {lut:.3f} ms"
        )
    proj = af_ms - saved
    print(
        f"projected af_kan step with LUT phases: {proj:.3f} ms = {proj / mlp_ms:.2f}x the MLP "
        f"(now {af_ms / mlp_ms:.2f}x; without the table build and the candidates)"
    )


if __name__ == "__main__":
    main()
