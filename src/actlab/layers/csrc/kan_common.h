// Shared by the KAN kernel sources (kan_kernels.cpp: design notes, layer plumbing, op
// registration; kan_relu_s.cpp: ReLU-KAN and S-KAN; kan_af.cpp: AF-KAN): vector helpers,
// checks and the op entry points.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

namespace actlab_kan {

using at::vec::Vectorized;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kGrainValues = 16384;  // basis values per parallel task, at least
constexpr int64_t kFlush = 64;           // vectors summed in lanes before adding to double

enum Space : int64_t { kBspline = 0, kRbf = 1, kChebyshev = 2, kRelu = 3 };

// ----------------------------------------------------------------------------- helpers
template <typename T>
T hsum(const Vectorized<T>& v) {
  T lanes[Vectorized<T>::size()];
  v.store(lanes);
  T s = T(0);
  for (int64_t l = 0; l < Vectorized<T>::size(); ++l) s += lanes[l];
  return s;
}

// A sum over N in vector lanes, added to a double every kFlush vectors (fixed order).
template <typename T>
struct LaneSum {
  Vectorized<T> acc{T(0)};
  double total = 0.0;
  int64_t count = 0;
  void add(const Vectorized<T>& v) {
    acc = acc + v;
    if (++count == kFlush) flush();
  }
  void flush() {
    total += static_cast<double>(hsum(acc));
    acc = Vectorized<T>(T(0));
    count = 0;
  }
  double value() {
    flush();
    return total;
  }
};

// Zero the lanes at and past c (a partial last vector): masked loads fill them with 0, but a
// product of those zeros with a finite constant need not be 0 (rbf: exp(-c^2) != 0).
template <typename T>
inline Vectorized<T> head(const Vectorized<T>& v, int64_t c) {
  if (c >= Vectorized<T>::size()) return v;
  return Vectorized<T>::set(Vectorized<T>(T(0)), v, c);
}

// exp and 1 / d for the KAN kernels. float on AVX2 / AVX-512: ATen's exp_u20 (range
// reduction and a degree-5 polynomial, <= 20 ulp, about twice as fast as the 1-ulp exp; inputs
// below ln(FLT_MIN) give 0, inputs above ln(FLT_MAX) are clamped there; NaN stays NaN) and the
// hardware reciprocal estimate with one Newton step (about 1 ulp; d must be finite and nonzero:
// callers bound it); double and the portable build: exp() and 1 / d.
template <typename T>
inline Vectorized<T> fast_exp(const Vectorized<T>& v) {
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
  if constexpr (std::is_same_v<T, float>) return Vectorized<T>::blendv(v.exp_u20(), v, v.isnan());
#endif
  return v.exp();
}

template <typename T>
inline Vectorized<T> fast_rcp(const Vectorized<T>& d) {
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (std::is_same_v<T, float>) {
    const __m512 x = _mm512_rcp14_ps(d);  // 14 bits, then x (2 - d x)
    return _mm512_mul_ps(x, _mm512_fnmadd_ps(d, x, _mm512_set1_ps(2.0f)));
  }
#elif defined(CPU_CAPABILITY_AVX2)
  if constexpr (std::is_same_v<T, float>) {
    const __m256 x = _mm256_rcp_ps(d);  // 12 bits, then x (2 - d x)
    return _mm256_mul_ps(x, _mm256_fnmadd_ps(d, x, _mm256_set1_ps(2.0f)));
  }
#endif
  return Vectorized<T>(T(1)) / d;
}

// tanh of float vectors for the KAN layers' input_norm="tanh": on |x| < 1 the odd series
// |x| + |x|^3 P(x^2), P of degree 6 fitted here (minimax-weighted least squares on Chebyshev
// nodes, relative error 4.6e-9 in double); above, 1 - 2 / (exp(2 |x|) + 1) with fast_exp and
// fast_rcp (from |x| = 1 on, their errors reach tanh damped ~3x), |x| capped at 9.5 (tanh
// rounds to 1 in float from 9.01 on); then x's sign bit. NaN stays NaN, -0 stays -0. At most
// 1.23 ulp over every float32 in 2^-12 .. 10 (measured, AVX2). Measured alternatives: the
// branch point at 0.625 with a degree-4 P: 2.19 ulp (enough to move AF-KAN's float32 outputs
// in the layer matrix's 1e-5 test past it), 1.33 with the 1-ulp exp and a true division
// (~35 % slower); SLEEF's 1-ulp tanh ~2x this cost, MKL's (ATen's op) on AMD its SSE kernel.
// The tests: tests/layers/test_kan_native.py.
inline Vectorized<float> fast_tanh(const Vectorized<float>& x) {
  using V = Vectorized<float>;
  const V sign = x & V(-0.0f), a = x.abs(), z = a * a;
  V p = at::vec::fmadd(V(-0.00035845203092f), z, V(0.00230136467144f));
  p = at::vec::fmadd(p, z, V(-0.00794610660523f));
  p = at::vec::fmadd(p, z, V(0.0214866567403f));
  p = at::vec::fmadd(p, z, V(-0.0538798011839f));
  p = at::vec::fmadd(p, z, V(0.133323445916f));
  p = at::vec::fmadd(p, z, V(-0.333332955837f));
  const V small = at::vec::fmadd(a * z, p, a);
  const V in = a < V(1.0f);  // (NaN: false)
  if (in.zero_mask() == 0) return small | sign;  // every lane below 1: no exp (bit-identical)
  const V e = fast_exp(at::vec::minimum(a, V(9.5f)) * V(2.0f));
  const V big = V(1.0f) - V(2.0f) * fast_rcp(e + V(1.0f));
  const V r = V::blendv(big, small, in) | sign;
  return V::blendv(r, x, x.isnan());
}

inline int64_t grain_nodes(int64_t per_node) { return std::max<int64_t>(1, kGrainValues / std::max<int64_t>(per_node, 1)); }

inline void check_ut(const at::Tensor& ut, const char* op) {
  TORCH_CHECK(ut.device().is_cpu(), op, ": expected CPU tensors, got ", ut.device());
  TORCH_CHECK(ut.scalar_type() == at::kFloat || ut.scalar_type() == at::kDouble, op,
              ": expected float32 or float64, got ", ut.scalar_type());
  TORCH_CHECK(ut.dim() == 2 && ut.is_contiguous(), op, ": ut must be a contiguous (in, N) tensor");
}

inline void check_like(const at::Tensor& t, const at::Tensor& ut, at::IntArrayRef shape, const char* op,
                const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == ut.scalar_type(), op, ": ", name,
              " must be a CPU tensor of ", ut.scalar_type());
  TORCH_CHECK(t.sizes() == shape, op, ": ", name, " must have shape ", shape, ", got ", t.sizes());
}

// A tensor of `shape` (one element) holding v, and the value of a one-element float / double
// tensor: an allocation and a store, no at::full / item() op dispatch (a few us each, ~20 per
// AF-KAN step).
inline at::Tensor scalar_like(at::IntArrayRef shape, double v, const at::TensorOptions& opts) {
  auto t = at::empty(shape, opts);
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "scalar_like",
                             [&] { *t.data_ptr<scalar_t>() = static_cast<scalar_t>(v); });
  return t;
}
inline double scalar_value(const at::Tensor& t) {
  double v = 0.0;
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "scalar_value",
                             [&] { v = static_cast<double>(*t.data_ptr<scalar_t>()); });
  return v;
}

// ----------------------------------------------------------------------------- layer plumbing
// (kan_kernels.cpp)
at::Tensor transposed_input(const at::Tensor& x, bool tanh);
at::Tensor project(const at::Tensor& bt, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                   const at::Tensor& x, bool out_t);
void no_double_backward(const char* name);
constexpr int kScratchSlots = 5;
constexpr int64_t kScratchMax = int64_t(64) << 20;  // bytes per slot kept between calls
at::Tensor scratch(int slot, at::IntArrayRef shape, const at::Tensor& like);
// A fresh tensor of shape (like's dtype, CPU) from a pool of recycled blocks: for buffers an op
// keeps for its backward (see kan_kernels.cpp).
at::Tensor kept_tensor(at::IntArrayRef shape, const at::Tensor& like);
// The weight gradient (out, in) = gy^T bt^T of a layer y = bt^T W^T, bt (in, N), gy (N, out).
at::Tensor weight_grad(const at::Tensor& bt, const at::Tensor& gy);
// c = a b (+ add, broadcast to c) into c (M, N), a (M, K), b (K, N), any strides, one dtype:
// products of at most kSmallGemm multiply-adds (float / double) run as one serial loop of
// ours, larger ones through at::mm_out / at::addmm_out (see kan_kernels.cpp).
constexpr int64_t kSmallGemm = int64_t(1) << 15;
void gemm_out(const at::Tensor& c, const at::Tensor& a, const at::Tensor& b,
              const at::Tensor* add = nullptr);

// ----------------------------------------------------------------------------- ops
// ReLU-KAN and S-KAN (kan_relu_s.cpp)
at::Tensor relu_basis_t(const at::Tensor& ut, const at::Tensor& lo, const at::Tensor& hi);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> relu_basis_t_bwd(
    const at::Tensor& ut, const at::Tensor& gbt, const at::Tensor& lo, const at::Tensor& hi,
    bool tanh, bool need_basis, bool need_u, bool need_phases);
at::Tensor s_basis_t(const at::Tensor& ut, const at::Tensor& alpha, at::IntArrayRef spaces,
                     int64_t grid, int64_t k);
std::tuple<at::Tensor, at::Tensor, at::Tensor> s_basis_t_bwd(
    const at::Tensor& ut, const at::Tensor& gbt, const at::Tensor& alpha, at::IntArrayRef spaces,
    int64_t grid, int64_t k, bool tanh, bool need_basis, bool need_u, bool need_alpha);
at::Tensor relu_kan_layer_plain(const at::Tensor& x, const at::Tensor& lo, const at::Tensor& hi,
                                const at::Tensor& w, const std::optional<at::Tensor>& bias,
                                bool tanh, bool out_t);
at::Tensor s_kan_layer_plain(const at::Tensor& x, const at::Tensor& alpha, at::IntArrayRef spaces,
                             int64_t grid, int64_t k, const at::Tensor& w,
                             const std::optional<at::Tensor>& bias, bool tanh, bool out_t,
                             double tau, const std::optional<at::Tensor>& clock,
                             const std::optional<at::Tensor>& chosen, int64_t prune_at);
at::Tensor relu_kan_layer_autograd(const at::Tensor& x, const at::Tensor& lo, const at::Tensor& hi,
                                   const at::Tensor& w, const std::optional<at::Tensor>& bias,
                                   bool tanh, bool out_t);
at::Tensor s_kan_layer_autograd(const at::Tensor& x, const at::Tensor& alpha,
                                at::IntArrayRef spaces, int64_t grid, int64_t k,
                                const at::Tensor& w, const std::optional<at::Tensor>& bias,
                                bool tanh, bool out_t, double tau,
                                const std::optional<at::Tensor>& clock,
                                const std::optional<at::Tensor>& chosen, int64_t prune_at);
// AF-KAN (kan_af.cpp)
std::vector<at::Tensor> af_reduce_t(const at::Tensor& ut, const at::Tensor& lo_p,
                                    const at::Tensor& hi_p, const at::Tensor& w, int64_t act,
                                    int64_t func, int64_t mode);
std::vector<at::Tensor> af_kan_reduce_plain(const at::Tensor& x, const at::Tensor& lo_p,
                                            const at::Tensor& hi_p, const at::Tensor& w,
                                            int64_t act, int64_t func, int64_t mode, bool tanh);
std::vector<at::Tensor> af_kan_reduce_autograd(const at::Tensor& x, const at::Tensor& lo_p,
                                               const at::Tensor& hi_p, const at::Tensor& w,
                                               int64_t act, int64_t func, int64_t mode, bool tanh);
at::Tensor af_kan_layer_plain(const at::Tensor& x, const at::Tensor& lo_p, const at::Tensor& hi_p,
                              const at::Tensor& w, const at::Tensor& b, const at::Tensor& temp,
                              const at::Tensor& weight, const std::optional<at::Tensor>& gam,
                              const std::optional<at::Tensor>& bet, int64_t act, int64_t func,
                              int64_t mode, bool tanh, double eps, int64_t knots, bool out_t);
std::vector<at::Tensor> af_series_extremes_op(const at::Tensor& ut, const at::Tensor& lo_p,
                                              const at::Tensor& hi_p, int64_t act, int64_t func,
                                              int64_t knots);
// [D, Dd, Dm, piece tables (0, 2 or 4), cells per table (kPieces)] of one call's series; D = -1
// when they do not converge (for tests).
std::vector<int64_t> af_series_info_op(const at::Tensor& lo_p, const at::Tensor& hi_p,
                                       const at::Tensor& w, int64_t act, int64_t func,
                                       bool backward);
// Whether a call's softmax takes its pieces (softmax_tables) at these min / max (lo, hi), b and
// temperature (mode 0 "batch", 2 "none"): what the layer op decides, for tests.
bool af_softmax_info_op(const at::Tensor& lo_p, const at::Tensor& hi_p, const at::Tensor& w,
                        int64_t act, int64_t func, int64_t mode, double lo, double hi, double b,
                        double temperature);
at::Tensor af_kan_layer_autograd(const at::Tensor& x, const at::Tensor& lo_p,
                                 const at::Tensor& hi_p, const at::Tensor& w, const at::Tensor& b,
                                 const at::Tensor& temp, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& gam,
                                 const std::optional<at::Tensor>& bet, int64_t act, int64_t func,
                                 int64_t mode, bool tanh, double eps, int64_t knots,
                                 bool out_t);

}  // namespace actlab_kan
