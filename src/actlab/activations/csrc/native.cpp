// actlab native CPU kernels: one memory pass forward, one pass backward, input-only saving.
//
// Formulas (see actlab/activations/eafo.py and eafo.md):
//
//   crrelu      y   = max(0, x) + eps * xc * e,            e = exp(-xc^2 / 2)
//               dx  = g * (1[x > 0] + eps * (1 - xc^2) * e)
//               deps = sum(g * xc * e)
//
//   eafo_gelu   f = x Phi, f' = Phi + xc phi, f'' = phi (2 - xc^2), A = 2 phi + xc Phi,
//               A' = Phi - xc phi, w(u) = u+ / max(u, tau)^2,
//               c = phi A w,  c' = phi ((A' - xc A) w + A w'(f') f'')
//               y = f - eps c,   dx = g (f' - eps c'),   deps = -sum(g c)
//
// where xc = clamp(x, -40, 40): beyond |x| = 40 every term carrying phi(x) or exp(-x^2/2) is
// exactly 0 in float32 and float64, and clamping keeps x = +-inf finite inside those terms
// (no inf * 0). NaN propagates. float32 computes e = exp(-x^2/2) by a scalef-based 2^t (AVX512;
// relative error ~2e-7) or ATen's exp_u20 (AVX2 / portable: 20 ulp, results below FLT_MIN
// flushed to 0), Phi by the erf of ATen's own float GELU (Abramowitz & Stegun 7.1.26, absolute
// error <= 1.5e-7) sharing that e with phi, and reciprocals by a Newton-refined estimate;
// float64 uses the 1-ulp exp and erf and true division. Reductions run over fixed blocks of
// kBlock elements summed in double, so deps does not depend on the number of threads.
//
// Cost: these kernels are compute-bound where GELU is nearly memory-bound. Per 16 floats on
// AVX512 the eafo(gelu) forward is ~45 vector instructions (exp 9, Phi 13, the correction 13,
// clamp, loads, stores, register copies), the backward ~61; every rewrite here was kept only
// if it lowered that count (bench: benchmarks/bench_activations.py).
//
// Built and loaded at run time by actlab/activations/_native.py (torch.utils.cpp_extension),
// registered as torch.ops.actlab_native.*: the kernels (*_fwd, *_bwd) and the differentiable
// ops (crrelu, eafo_gelu) that save only their input and call them.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

using at::vec::Vectorized;

constexpr int64_t kBlock = 4096;
constexpr int64_t kGrain = 32768;

// exp(-x2 / 2) for finite x2 >= 0 (x2 = x^2 with |x| <= 40).
// float on AVX512: 2^t, t = -x2 log2(e) / 2 split as n + f (n integer, |f| <= 1/2), 2^f by a
// degree-5 polynomial (fitted here to 2^f on [-1/2, 1/2]: relative error 2.1e-7 evaluated in
// float32, against exp_u20's 20 ulp) and the product p 2^n by vscalefps, which underflows
// to 0 by itself -- 9 instructions where exp_u20 takes ~20. The error of the rounded
// argument t dominates for large x2 as it does for any float32 exp(-x^2/2).
// Elsewhere: ATen's exp_u20 (float) or 1-ulp exp (double).
template <typename T>
inline Vectorized<T> exp_mhalf(const Vectorized<T>& x2) {
  if constexpr (std::is_same_v<T, float>) {
    return (x2 * Vectorized<T>(T(-0.5))).exp_u20();
  } else {
    return (x2 * Vectorized<T>(T(-0.5))).exp();
  }
}
#if defined(CPU_CAPABILITY_AVX512)
template <>
inline Vectorized<float> exp_mhalf<float>(const Vectorized<float>& x2) {
  // n = round(t) by adding and subtracting 1.5 * 2^23 (|t| <= 1154 here), f = t - n with t
  // kept unrounded inside the fma
  const __m512 c = _mm512_set1_ps(-0.72134752044448170368f);  // -log2(e) / 2
  const __m512 magic = _mm512_set1_ps(12582912.f);
  const __m512 n = _mm512_sub_ps(_mm512_fmadd_ps(x2, c, magic), magic);
  const __m512 f = _mm512_fmsub_ps(x2, c, n);
  __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(1.327647129e-3f), f, _mm512_set1_ps(9.675541893e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550713092e-2f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.402212024e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931469440e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.000000119f));
  return _mm512_scalef_ps(p, n);
}
#endif

// 1/a. float on AVX512/AVX2: the hardware estimate refined by one Newton step (relative
// error ~1e-8 after the step, below float32 rounding); only for finite a > 0 here.
template <typename T>
inline Vectorized<T> recip(const Vectorized<T>& a) {
  return a.reciprocal();
}
#if defined(CPU_CAPABILITY_AVX512)
template <>
inline Vectorized<float> recip<float>(const Vectorized<float>& a) {
  const __m512 r = _mm512_rcp14_ps(a);
  return _mm512_mul_ps(r, _mm512_fnmadd_ps(a, r, _mm512_set1_ps(2.f)));
}
#elif defined(CPU_CAPABILITY_AVX2)
template <>
inline Vectorized<float> recip<float>(const Vectorized<float>& a) {
  const __m256 r = _mm256_rcp_ps(a);
  return _mm256_mul_ps(r, _mm256_fnmadd_ps(a, r, _mm256_set1_ps(2.f)));
}
#endif

// clamp(x, -40, 40); NaN stays NaN (vrangeps would be one instruction, but it drops NaN).
template <typename T>
inline Vectorized<T> clamp40(const Vectorized<T>& x) {
  return at::vec::clamp(x, Vectorized<T>(T(-40)), Vectorized<T>(T(40)));
}

// Phi(x) = (1 + erf(x / sqrt 2)) / 2 given e = exp(-x^2 / 2) for the same (clamped) x.
// float: erf by Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7), the formula ATen's own
// vectorised float erf (and so F.gelu) uses, with its exp(-z^2) = e shared with phi; the
// 1/sqrt 2 and the 1/2 of Phi are folded into its coefficients. float64: the 1-ulp erf.
template <typename T>
inline Vectorized<T> normal_cdf(const Vectorized<T>& x, const Vectorized<T>& /*e*/) {
  return Vectorized<T>(T(0.5)) * (Vectorized<T>(T(1)) + (x * Vectorized<T>(T(0.70710678118654752440))).erf());
}
// Phi(-|x|) = erfc(|x| / sqrt 2) / 2 for float, given |x| and e = exp(-x^2 / 2): A&S 7.1.26 with
// halved coefficients, t (a1 + t (a2 + ...)) e / 2, t = 1 / (1 + p |x| / sqrt 2).
inline Vectorized<float> normal_tail(const Vectorized<float>& ax, const Vectorized<float>& e) {
  using V = Vectorized<float>;
  const V t = recip<float>(at::vec::fmadd(V(0.3275911f * 0.70710678118654752440f), ax, V(1.f)));
  V r = at::vec::fmadd(V(0.5f * 1.061405429f), t, V(0.5f * -1.453152027f));
  r = at::vec::fmadd(r, t, V(0.5f * 1.421413741f));
  r = at::vec::fmadd(r, t, V(0.5f * -0.284496736f));
  r = at::vec::fmadd(r, t, V(0.5f * 0.254829592f));
  return r * t * e;
}

template <>
inline Vectorized<float> normal_cdf<float>(const Vectorized<float>& x, const Vectorized<float>& e) {
  using V = Vectorized<float>;
  const V sign = x & V(-0.f);
  const V tail = normal_tail(x ^ sign, e);  // of |x|
  // Phi(x) = 1/2 + copysign(1/2 - Phi(-|x|), x), by bits (no compare / blend)
  return V(0.5f) + ((V(0.5f) - tail) ^ sign);
}

void check_input(const at::Tensor& x, const char* op) {
  TORCH_CHECK(x.device().is_cpu(), op, ": expected a CPU tensor, got ", x.device());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              ": expected float32 or float64, got ", x.scalar_type());
}

double scalar_of(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.numel() == 1, op, ": ", name, " must hold one value, got ", t.numel());
  return t.item<double>();
}

// Run body(vector values, count) over [0, n) in chunks of at most Vec::size() elements.
template <typename T, typename Body>
inline void for_vec(int64_t begin, int64_t end, Body body) {
  constexpr int64_t S = Vectorized<T>::size();
  for (int64_t i = begin; i < end; i += S) {
    body(i, std::min<int64_t>(S, end - i));
  }
}

// y = op(x), elementwise, in parallel.
// Two vectors per iteration: their independent dependency chains interleave (the formulas
// are long serial chains, latency-bound one vector at a time). Each thread works on its own
// copy of op, so its constants stay in registers (a captured reference could alias y).
template <typename T, typename Op>
void map_forward(const T* x, T* y, int64_t n, const Op& op_) {
  constexpr int64_t S = Vectorized<T>::size();
  at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
    const Op op = op_;
    int64_t i = b;
    for (; i + 2 * S <= e; i += 2 * S) {
      auto r0 = op(Vectorized<T>::loadu(x + i));
      auto r1 = op(Vectorized<T>::loadu(x + i + S));
      r0.store(y + i);
      r1.store(y + i + S);
    }
    for_vec<T>(i, e, [&](int64_t j, int64_t c) {
      op(Vectorized<T>::loadu(x + j, c)).store(y + j, c);
    });
  });
}

// op(x, g) returns (gx, a, b): gx is stored elementwise, and the sum of a * b over all
// elements is returned, accumulated (by fma) per fixed block of kBlock elements and summed
// in double in block order.
template <typename T, typename Op>
double map_backward(const T* x, const T* g, T* gx, int64_t n, const Op& op_) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> part(blocks, 0.0);
  at::parallel_for(0, blocks, std::max<int64_t>(1, kGrain / kBlock), [&](int64_t b0, int64_t b1) {
    const Op op = op_;
    const Vectorized<T> zero(T(0));
    constexpr int64_t S = Vectorized<T>::size();
    for (int64_t blk = b0; blk < b1; ++blk) {
      Vectorized<T> acc(T(0)), acc1(T(0));
      const int64_t end = std::min(n, (blk + 1) * kBlock);
      int64_t i = blk * kBlock;
      for (; i + 2 * S <= end; i += 2 * S) {  // two vectors per iteration, as in map_forward
        auto [dx0, a0, b0] = op(Vectorized<T>::loadu(x + i), Vectorized<T>::loadu(g + i));
        auto [dx1, a1, b1] = op(Vectorized<T>::loadu(x + i + S), Vectorized<T>::loadu(g + i + S));
        dx0.store(gx + i);
        dx1.store(gx + i + S);
        acc = at::vec::fmadd(a0, b0, acc);
        acc1 = at::vec::fmadd(a1, b1, acc1);
      }
      acc = acc + acc1;
      for_vec<T>(i, end, [&](int64_t j, int64_t c) {
        auto [dx, a, b] = op(Vectorized<T>::loadu(x + j, c), Vectorized<T>::loadu(g + j, c));
        dx.store(gx + j, c);
        auto term = a * b;
        if (c < Vectorized<T>::size()) {  // lanes past the end hold garbage: zero them
          term = Vectorized<T>::set(zero, term, c);
        }
        acc = acc + term;
      });
      T lanes[Vectorized<T>::size()];
      acc.store(lanes);
      double sum = 0.0;
      for (int64_t j = 0; j < Vectorized<T>::size(); ++j) sum += lanes[j];
      part[blk] = sum;
    }
  });
  double total = 0.0;
  for (double p : part) total += p;
  return total;
}

// The op wrappers: check, make contiguous, dispatch on dtype, return (y) or (gx, dtheta).
template <typename Launch>
at::Tensor forward_op(const char* name, const at::Tensor& x_, Launch launch) {
  check_input(x_, name);
  auto x = x_.contiguous();
  auto y = at::empty_like(x, at::MemoryFormat::Contiguous);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "actlab_native", [&] {
    launch(x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), x.numel());
  });
  return y;
}

template <typename Launch>
std::tuple<at::Tensor, at::Tensor> backward_op(const char* name, const at::Tensor& x_,
                                               const at::Tensor& g_, Launch launch) {
  check_input(x_, name);
  TORCH_CHECK(g_.sizes() == x_.sizes() && g_.scalar_type() == x_.scalar_type(), name,
              ": grad must match the input's shape and dtype");
  auto x = x_.contiguous();
  auto g = g_.contiguous();
  auto gx = at::empty_like(x, at::MemoryFormat::Contiguous);
  double dtheta = 0.0;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "actlab_native", [&] {
    dtheta = launch(x.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(), gx.data_ptr<scalar_t>(), x.numel());
  });
  return {gx, at::scalar_tensor(dtheta, x.options())};
}

// ------------------------------------------------------------------ crrelu
at::Tensor crrelu_fwd(const at::Tensor& x, const at::Tensor& eps_) {
  const double eps = scalar_of(eps_, "crrelu_fwd", "eps");
  return forward_op("crrelu_fwd", x, [&](auto* px, auto* py, int64_t n) {
    using T = std::remove_pointer_t<decltype(py)>;
    using V = Vectorized<T>;
    const V ve(static_cast<T>(eps));
    map_forward<T>(px, py, n, [ve](const V& v) {
      auto xc = clamp40(v);
      return at::vec::fmadd(ve * xc, exp_mhalf(xc * xc), at::vec::clamp_min(v, V(T(0))));
    });
  });
}

std::tuple<at::Tensor, at::Tensor> crrelu_bwd(const at::Tensor& x, const at::Tensor& g,
                                              const at::Tensor& eps_) {
  const double eps = scalar_of(eps_, "crrelu_bwd", "eps");
  return backward_op("crrelu_bwd", x, g, [&](auto* px, auto* pg, auto* pgx, int64_t n) {
    using T = std::remove_pointer_t<decltype(pgx)>;
    using V = Vectorized<T>;
    const V ve(static_cast<T>(eps));
    return map_backward<T>(px, pg, pgx, n, [ve](const V& v, const V& gv) {
      auto xc = clamp40(v);
      auto x2 = xc * xc;
      auto ex = exp_mhalf(x2);
      auto step = (v > V(T(0))) & V(T(1));  // 1[x > 0]
      return std::make_tuple(gv * at::vec::fmadd(ve * (V(T(1)) - x2), ex, step), gv, xc * ex);
    });
  });
}

// ------------------------------------------------------------------ eafo(gelu)
template <typename T>
struct GeluTerms {
  Vectorized<T> f, f1, c, dc;
};

// f, f', the correction c and its derivative c' for eafo with base gelu (header formulas)
template <typename T, bool kNeedDc>
inline GeluTerms<T> gelu_terms(const Vectorized<T>& v, const Vectorized<T>& tau) {
  using V = Vectorized<T>;
  const V zero(T(0)), two(T(2));
  auto xc = clamp40(v);
  auto x2 = xc * xc;
  auto ex = exp_mhalf(x2);
  auto phi = V(T(0.39894228040143267794)) * ex;
  auto Phi = normal_cdf<T>(xc, ex);  // exactly 0 / 1 beyond |x| = 40
  auto xphi = xc * phi;
  auto f1 = Phi + xphi;
  auto a = at::vec::fmadd(xc, Phi, two * phi);
  auto m = at::vec::clamp_min(f1, tau);  // max(f1, tau) >= tau > 0
  auto inv_m2 = recip<T>(m * m);
  auto w = at::vec::clamp_min(f1, zero) * inv_m2;  // f1+ / max(f1, tau)^2
  GeluTerms<T> out;
  out.f = v * Phi;
  out.f1 = f1;
  out.c = phi * a * w;
  if constexpr (kNeedDc) {
    // w'(f1) = -1/f1^2 (f1 > tau), 1/tau^2 (0 < f1 <= tau), 0 (f1 <= 0): below tau m = tau,
    // so inv_m2 is 1/tau^2 there; the sign flips where f1 > tau (by bits, no blend)
    auto dw = ((f1 > zero) & inv_m2) ^ ((f1 > tau) & V(T(-0.0)));
    auto f2 = phi * (two - x2);
    auto da = Phi - xphi;
    out.dc = phi * at::vec::fmadd(a * dw, f2, (da - xc * a) * w);
  }
  return out;
}

#if defined(CPU_CAPABILITY_AVX512)
// The same terms for float on AVX512, written with intrinsics: the branches of Phi and of
// w / w' use mask registers (compare + masked op) instead of vector masks and bit tricks,
// and f'' reuses 2 phi -- ~10% fewer instructions than the generic version above.
template <bool kNeedDc>
inline GeluTerms<float> gelu_terms_avx512(const __m512 v, const __m512 tau) {
  const __m512 zero = _mm512_setzero_ps();
  const __m512 xc = clamp40<float>(v);
  const __m512 x2 = _mm512_mul_ps(xc, xc);
  const __m512 e = exp_mhalf<float>(x2);
  // Phi(x) = Phi(-|x|), or 1 - Phi(-|x|) where x > 0 (a masked subtraction)
  const __mmask16 xpos = _mm512_cmp_ps_mask(xc, zero, _CMP_GT_OQ);
  const __m512 tail = normal_tail(_mm512_abs_ps(xc), e);
  const __m512 Phi = _mm512_mask_sub_ps(tail, xpos, _mm512_set1_ps(1.f), tail);
  const __m512 phi = _mm512_mul_ps(e, _mm512_set1_ps(0.39894228040143267794f));
  const __m512 phi2 = _mm512_add_ps(phi, phi);
  const __m512 f1 = _mm512_fmadd_ps(xc, phi, Phi);
  const __m512 a = _mm512_fmadd_ps(xc, Phi, phi2);
  const __mmask16 f1pos = _mm512_cmp_ps_mask(f1, zero, _CMP_GT_OQ);
  const __m512 m = _mm512_max_ps(f1, tau);
  const __m512 inv_m2 = recip<float>(_mm512_mul_ps(m, m));
  const __m512 w = _mm512_maskz_mul_ps(f1pos, f1, inv_m2);  // f1+ / max(f1, tau)^2
  GeluTerms<float> out;
  out.f = _mm512_mul_ps(v, Phi);
  out.f1 = f1;
  out.c = _mm512_mul_ps(_mm512_mul_ps(phi, a), w);
  if constexpr (kNeedDc) {
    // w' = 1/tau^2 = inv_m2 on 0 < f1 <= tau, -1/f1^2 = -inv_m2 above, 0 below
    // dc = phi ((A' - x A) w + A f'' w'), the last term added (mid) or subtracted (big) by
    // masked fma: A' - x A = Phi - x phi - x A, f'' = phi (2 - x^2)
    const __mmask16 big = _mm512_cmp_ps_mask(f1, tau, _CMP_GT_OQ);
    const __mmask16 mid = _kandn_mask16(big, f1pos);
    const __m512 f2 = _mm512_fnmadd_ps(phi, x2, phi2);
    const __m512 da = _mm512_fnmadd_ps(xc, phi, Phi);
    const __m512 af2 = _mm512_mul_ps(a, f2);
    __m512 s = _mm512_mul_ps(_mm512_fnmadd_ps(xc, a, da), w);
    s = _mm512_mask3_fmadd_ps(af2, inv_m2, s, mid);
    s = _mm512_mask3_fnmadd_ps(af2, inv_m2, s, big);
    out.dc = _mm512_mul_ps(phi, s);
  }
  return out;
}

template <>
inline GeluTerms<float> gelu_terms<float, false>(const Vectorized<float>& v, const Vectorized<float>& tau) {
  return gelu_terms_avx512<false>(v, tau);
}
template <>
inline GeluTerms<float> gelu_terms<float, true>(const Vectorized<float>& v, const Vectorized<float>& tau) {
  return gelu_terms_avx512<true>(v, tau);
}
#endif

at::Tensor eafo_gelu_fwd(const at::Tensor& x, const at::Tensor& eps_, const at::Tensor& tau_) {
  const double eps = scalar_of(eps_, "eafo_gelu_fwd", "eps");
  const double tau = scalar_of(tau_, "eafo_gelu_fwd", "tau");
  return forward_op("eafo_gelu_fwd", x, [&](auto* px, auto* py, int64_t n) {
    using T = std::remove_pointer_t<decltype(py)>;
    using V = Vectorized<T>;
    const V mve(static_cast<T>(-eps)), vt(static_cast<T>(tau));
    map_forward<T>(px, py, n, [mve, vt](const V& v) {
      auto t = gelu_terms<T, false>(v, vt);
      return at::vec::fmadd(mve, t.c, t.f);  // f - eps c
    });
  });
}

std::tuple<at::Tensor, at::Tensor> eafo_gelu_bwd(const at::Tensor& x, const at::Tensor& g,
                                                 const at::Tensor& eps_, const at::Tensor& tau_) {
  const double eps = scalar_of(eps_, "eafo_gelu_bwd", "eps");
  const double tau = scalar_of(tau_, "eafo_gelu_bwd", "tau");
  auto [gx, sum_gc] = backward_op("eafo_gelu_bwd", x, g, [&](auto* px, auto* pg, auto* pgx, int64_t n) {
    using T = std::remove_pointer_t<decltype(pgx)>;
    using V = Vectorized<T>;
    const V mve(static_cast<T>(-eps)), vt(static_cast<T>(tau));
    return map_backward<T>(px, pg, pgx, n, [mve, vt](const V& v, const V& gv) {
      auto t = gelu_terms<T, true>(v, vt);
      return std::make_tuple(gv * at::vec::fmadd(mve, t.dc, t.f1), gv, t.c);
    });
  });
  return {gx, -sum_gc};  // deps = -sum(g c)
}

// ------------------------------------------------------------------ autograd
// The differentiable ops crrelu(x, eps) and eafo_gelu(x, eps, tau): the forward kernel, the
// input (and the scalars) saved, the backward kernel in backward -- all in C++, so a call
// costs one dispatcher round trip instead of a Python autograd.Function (~10-20 us per
// direction, a visible share of an activation on transformer-sized tensors).
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// the parameter gradient in the parameter's shape and dtype (undefined if not needed)
at::Tensor param_grad(const at::Tensor& g, const at::Tensor& p, bool needed) {
  return needed ? g.reshape(p.sizes()).to(p.scalar_type()) : at::Tensor();
}

struct CRReLUFunction : public torch::autograd::Function<CRReLUFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& eps) {
    ctx->save_for_backward({x, eps});
    return crrelu_fwd(x, eps);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto [gx, geps] = crrelu_bwd(saved[0], grads[0], saved[1]);
    return {ctx->needs_input_grad(0) ? gx : at::Tensor(), param_grad(geps, saved[1], ctx->needs_input_grad(1))};
  }
};

struct EAFOGeluFunction : public torch::autograd::Function<EAFOGeluFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& eps,
                            const at::Tensor& tau) {
    ctx->save_for_backward({x, eps, tau});
    return eafo_gelu_fwd(x, eps, tau);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto [gx, geps] = eafo_gelu_bwd(saved[0], grads[0], saved[1], saved[2]);
    return {ctx->needs_input_grad(0) ? gx : at::Tensor(), param_grad(geps, saved[1], ctx->needs_input_grad(1)),
            at::Tensor()};  // tau is a constant
  }
};

at::Tensor crrelu_autograd(const at::Tensor& x, const at::Tensor& eps) {
  return CRReLUFunction::apply(x, eps);
}

at::Tensor eafo_gelu_autograd(const at::Tensor& x, const at::Tensor& eps, const at::Tensor& tau) {
  return EAFOGeluFunction::apply(x, eps, tau);
}

}  // namespace

TORCH_LIBRARY(actlab_native, m) {
  m.def("crrelu_fwd(Tensor x, Tensor eps) -> Tensor");
  m.def("crrelu_bwd(Tensor x, Tensor g, Tensor eps) -> (Tensor, Tensor)");
  m.def("eafo_gelu_fwd(Tensor x, Tensor eps, Tensor tau) -> Tensor");
  m.def("eafo_gelu_bwd(Tensor x, Tensor g, Tensor eps, Tensor tau) -> (Tensor, Tensor)");
  m.def("crrelu(Tensor x, Tensor eps) -> Tensor");
  m.def("eafo_gelu(Tensor x, Tensor eps, Tensor tau) -> Tensor");
}

TORCH_LIBRARY_IMPL(actlab_native, CPU, m) {
  m.impl("crrelu_fwd", crrelu_fwd);
  m.impl("crrelu_bwd", crrelu_bwd);
  m.impl("eafo_gelu_fwd", eafo_gelu_fwd);
  m.impl("eafo_gelu_bwd", eafo_gelu_bwd);
  m.impl("crrelu", crrelu_fwd);
  m.impl("eafo_gelu", eafo_gelu_fwd);
}

TORCH_LIBRARY_IMPL(actlab_native, Autograd, m) {
  m.impl("crrelu", crrelu_autograd);
  m.impl("eafo_gelu", eafo_gelu_autograd);
}
