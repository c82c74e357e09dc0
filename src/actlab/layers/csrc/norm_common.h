// Shared helpers of the PolyNorm / EvoNorm kernels (norm_polynorm.cpp, norm_evonorm.cpp).
//
// Numerics: row sums run in vector lanes of the input type and are added up in double;
// per-row / per-group scalars are computed in double and rounded once. Variances are two-pass
// (mean, then the centred sum of squares). Parameter gradients are reduced per fixed block and
// summed in a fixed order, so no result depends on the number of threads. NaN and inf
// propagate as in the torch paths.
//
// Built and loaded at run time by actlab/layers/_norm_native.py (actlab._ext), registered as
// torch.ops.actlab_norm.*: the kernels (*_fwd, *_bwd) and the differentiable ops (polynorm,
// evonorm_b0, evonorm_s0: torch::autograd::Function in C++, no Python per call).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

namespace actlab_norm {

using at::vec::Vectorized;

constexpr int64_t kGrain = 32768;  // elements per parallel task, at least
constexpr int64_t kBlock = 4096;   // elements per fixed reduction block of PolyNorm's rows

// count (<= size) values from p; the lanes past count are zero
template <typename T>
inline Vectorized<T> load(const T* p, int64_t count) {
  if (count == Vectorized<T>::size()) return Vectorized<T>::loadu(p);
  return Vectorized<T>::set(Vectorized<T>(static_cast<T>(0)), Vectorized<T>::loadu(p, count), count);
}

// body(i, count) over [0, n) in vector steps
template <typename T, typename Body>
inline void for_vec(int64_t n, Body body) {
  constexpr int64_t S = Vectorized<T>::size();
  int64_t i = 0;
  for (; i + S <= n; i += S) body(i, S);
  if (i < n) body(i, n - i);
}

// the sum of the lanes of v, in double
template <typename T>
inline double hsum(const Vectorized<T>& v) {
  __at_align__ T lanes[Vectorized<T>::size()];
  v.store(lanes);
  double s = 0.0;
  for (int64_t j = 0; j < Vectorized<T>::size(); ++j) s += static_cast<double>(lanes[j]);
  return s;
}

// acc + (x - m)^2 for count (<= size) values from p; the lanes past count add nothing
template <typename T>
inline Vectorized<T> add_sq_dev(const Vectorized<T>& acc, const T* p, int64_t count,
                                const Vectorized<T>& m) {
  Vectorized<T> dv = Vectorized<T>::loadu(p, count) - m;
  if (count != Vectorized<T>::size()) dv = Vectorized<T>::set(Vectorized<T>(static_cast<T>(0)), dv, count);
  return at::vec::fmadd(dv, dv, acc);
}

// 1/a for a > 0 (finite or +inf; NaN stays NaN). float on AVX512 / AVX2: the hardware
// estimate (2^-14 / 1.5 2^-12) refined by one Newton step (relative error ~4e-9 / ~1.4e-7,
// at or below float32 rounding) instead of a division, 0 where the estimate is 0 (a = inf: the
// Newton step alone would give inf * 0). double and portable code: a true division.
template <typename T>
inline Vectorized<T> recip(const Vectorized<T>& a) {
  return Vectorized<T>(static_cast<T>(1)) / a;
}
#if defined(CPU_CAPABILITY_AVX512)
template <>
inline Vectorized<float> recip<float>(const Vectorized<float>& a) {
  const __m512 r = _mm512_rcp14_ps(a);
  const __mmask16 nonzero = _mm512_cmp_ps_mask(r, _mm512_setzero_ps(), _CMP_NEQ_UQ);
  const __m512 e = _mm512_fnmadd_ps(a, r, _mm512_set1_ps(1.f));  // 1 - a r
  return _mm512_maskz_fmadd_ps(nonzero, r, e, r);                 // r + r (1 - a r)
}
#elif defined(CPU_CAPABILITY_AVX2)
template <>
inline Vectorized<float> recip<float>(const Vectorized<float>& a) {
  const __m256 r = _mm256_rcp_ps(a);
  const __m256 nonzero = _mm256_cmp_ps(r, _mm256_setzero_ps(), _CMP_NEQ_UQ);
  const __m256 e = _mm256_fnmadd_ps(a, r, _mm256_set1_ps(1.f));  // 1 - a r
  return _mm256_and_ps(nonzero, _mm256_fmadd_ps(r, e, r));       // r + r (1 - a r)
}
#endif

// sigmoid(u) = 1 / (1 + exp(-u)); float: ATen's exp_u20, double: the 1-ulp exp
template <typename T>
inline Vectorized<T> sigmoid(const Vectorized<T>& u) {
  const Vectorized<T> one(static_cast<T>(1));
  if constexpr (std::is_same_v<T, float>) {
    return recip(one + u.neg().exp_u20());
  } else {
    return one / (one + u.neg().exp());
  }
}

inline void check_input(const at::Tensor& x, const char* op, int64_t dim) {
  TORCH_CHECK(x.device().is_cpu(), op, ": expected a CPU tensor, got ", x.device());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              ": expected float32 or float64, got ", x.scalar_type());
  if (dim > 0) {
    TORCH_CHECK(x.dim() == dim, op, ": expected a ", dim, "-D input, got ", x.dim(), "-D");
  } else {
    TORCH_CHECK(x.dim() >= 1 && x.size(-1) >= 1, op, ": needs at least one feature (last axis)");
  }
}

// a parameter of n values in x's dtype and device, contiguous
inline at::Tensor param(const at::Tensor& p, const at::Tensor& x, int64_t n, const char* op,
                 const char* name) {
  TORCH_CHECK(p.numel() == n, op, ": ", name, " must hold ", n, " values, got ", p.numel());
  return p.to(x.scalar_type()).contiguous();
}

inline at::Tensor grad_of(const at::Tensor& g, const at::Tensor& x) {
  if (!g.defined()) return at::zeros_like(x, at::MemoryFormat::Contiguous);
  TORCH_CHECK(g.sizes() == x.sizes(), "actlab_norm: grad must match the output's shape");
  return g.to(x.scalar_type()).contiguous();
}

inline void no_double_backward(const char* name) {
  TORCH_CHECK(!at::GradMode::is_enabled(), name,
              ": the native kernel has no second derivative (backward with create_graph=True); "
              "build the layer with fused=False for higher-order gradients");
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// the gradient of parameter p in its shape and dtype (undefined if not needed)
inline at::Tensor grad_as(const at::Tensor& g, const at::Tensor& p, bool needed) {
  return needed ? g.reshape(p.sizes()).to(p.scalar_type()) : at::Tensor();
}

}  // namespace actlab_norm
