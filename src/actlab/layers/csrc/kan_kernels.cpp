// actlab KAN kernels: the basis expansion of ReLU-KAN, S-KAN and AF-KAN fused with its backward.
//
// A KAN layer is y = W vec(B(u)) + b with u = tanh(x) (or x) of shape (N, in) and a basis of G
// functions per input node, vec(B) of shape (N, in G), feature i G + j = function j of node i.
// Here the basis is computed in the transposed layout Bt = vec(B)^T, (in G, N) contiguous: for
// a fixed (node, function) the N values are one contiguous row, so the kernels run along N in
// vector lanes with the node's constants (phases, knots, centres) broadcast, and the GEMMs
// read Bt^T through their transpose flags (no copy):
//
//   forward    ut = u^T (in, N);  Bt = basis(ut);  y^T = W Bt + b                (one GEMM)
//   backward   gBt = W^T gy^T (in G, N)                                          (one GEMM)
//              one pass over (ut, gBt): Bt again (for dW), du, and the basis-parameter sums
//              dW = (Bt gy)^T,  db = sum_n gy                                     (one GEMM)
//
// Only ut (in, N) is saved: the expanded basis is never kept between forward and backward.
// With tanh, du/dx = 1 - u^2 is applied in the same pass. The input gradient comes back as
// the (N, in) view of the (in, N) result, which is what the layer below needs for its own
// gBt GEMM (a layer that feeds another reads gy^T contiguously).
//
// ReLU-KAN (Qiu et al. 2024, arXiv 2406.02075), per node i and function j with phases l, h:
//   a = max(u - l, 0), b = max(h - u, 0), c = 4 / (h - l)^2, r = a b c, R = r^2
//   dR/du = 2 r c (b - a),  dR/dl = 2 r (2 r / (h - l) - c b),  dR/dh = 2 r (c a - 2 r / (h - l))
//
// S-KAN (Yang et al. 2024, arXiv 2408.08338): phi_j(u_i) = sum_p alpha_ip B^p_j(u_i) over a pool
// of spaces (0 bspline, 1 rbf, 2 chebyshev, 3 relu with the fixed grid phases), as in
// actlab/layers/s_kan.py: B-splines by the Cox-de Boor recurrence on uniform knots (derivative
// (B_j,k-1 - B_j+1,k-1) / h from its last level), rbf exp(-((u - c_j) / w)^2), Chebyshev by
// T_j+1 = 2 u T_j - T_j-1 (T'_j+1 = 2 T_j + 2 u T'_j - T'_j-1).
//   du_i = sum_j g_ij sum_p alpha_ip B^p_j'(u_i),  dalpha_ip = sum_n sum_j g_ij B^p_j(u_i)
// A space with alpha_ip = 0 is skipped unless dalpha is needed (a pruned S-KAN: one space per
// node, alpha one-hot, evaluates only that space).
//
// Every formula is written in the operation order of the torch path (the plain twin), so NaN
// and inf propagate as there (max propagates NaN, 0 * inf = NaN), except that divisions by
// constants are multiplications by their reciprocals and float32 rbf uses exp_u20 (both within
// float rounding of the twin). Knots and centres are built with the same ATen calls as the
// torch path (arange, linspace), so interval tests agree.
//
// AF-KAN (Ta et al. 2025, arXiv 2503.06112): see the AF-KAN section below; the kernel returns
// the two contractions over G and the min / max of f, never f itself.
//
// Threads: at::parallel_for over nodes; a node's rows, gradients and parameter sums are
// computed by one thread in a fixed order (per-lane sums flushed into double every kFlush
// vectors), so results do not depend on the number of threads.
//
// Built and loaded at run time by actlab/layers/_kan_native.py (actlab._ext), registered as
// torch.ops.actlab_kan.*: the basis kernels (relu_basis_t, relu_basis_t_bwd, s_basis_t,
// s_basis_t_bwd, af_reduce_t), the differentiable ops (relu_kan_layer, s_kan_layer,
// af_kan_reduce: torch::autograd::Function in C++, no Python per call), all_finite (the
// per-forward parameter check in one call) and isa.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
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

namespace {

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

int64_t grain_nodes(int64_t per_node) { return std::max<int64_t>(1, kGrainValues / std::max<int64_t>(per_node, 1)); }

void check_ut(const at::Tensor& ut, const char* op) {
  TORCH_CHECK(ut.device().is_cpu(), op, ": expected CPU tensors, got ", ut.device());
  TORCH_CHECK(ut.scalar_type() == at::kFloat || ut.scalar_type() == at::kDouble, op,
              ": expected float32 or float64, got ", ut.scalar_type());
  TORCH_CHECK(ut.dim() == 2 && ut.is_contiguous(), op, ": ut must be a contiguous (in, N) tensor");
}

void check_like(const at::Tensor& t, const at::Tensor& ut, at::IntArrayRef shape, const char* op,
                const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == ut.scalar_type(), op, ": ", name,
              " must be a CPU tensor of ", ut.scalar_type());
  TORCH_CHECK(t.sizes() == shape, op, ": ", name, " must have shape ", shape, ", got ", t.sizes());
}

// ----------------------------------------------------------------------------- ReLU-KAN
// Bt (in G, N) from ut (in, N) and the phases low, high (in, G).
template <typename T>
void relu_fwd_kernel(const T* ut, const T* lo, const T* hi, T* bt, int64_t nin, int64_t G,
                     int64_t N) {
  using V = Vectorized<T>;
  constexpr int64_t S = V::size();
  at::parallel_for(0, nin, grain_nodes(G * N), [&](int64_t i0, int64_t i1) {
    const V zero(T(0));
    for (int64_t i = i0; i < i1; ++i) {
      const T* u = ut + i * N;
      for (int64_t j = 0; j < G; ++j) {
        const int64_t f = i * G + j;
        const T w = hi[f] - lo[f];
        const V vl(lo[f]), vh(hi[f]), vc(T(4) / (w * w));
        T* out = bt + f * N;
        int64_t n = 0;
        for (; n + S <= N; n += S) {
          const V x = V::loadu(u + n);
          const V r = at::vec::maximum(x - vl, zero) * at::vec::maximum(vh - x, zero) * vc;
          (r * r).store(out + n);
        }
        if (n < N) {
          const V x = V::loadu(u + n, N - n);
          const V r = at::vec::maximum(x - vl, zero) * at::vec::maximum(vh - x, zero) * vc;
          (r * r).store(out + n, N - n);
        }
      }
    }
  });
}

// One pass: Bt again (if bt), gut = du (times 1 - u^2 with tanh; if gut), and the phase sums
// glo, ghi (in, G) (if glo).
template <typename T>
void relu_bwd_kernel(const T* ut, const T* gbt, const T* lo, const T* hi, T* bt, T* gut, T* glo,
                     T* ghi, bool tanh, int64_t nin, int64_t G, int64_t N) {
  using V = Vectorized<T>;
  constexpr int64_t S = V::size();
  at::parallel_for(0, nin, grain_nodes(G * N), [&](int64_t i0, int64_t i1) {
    const V zero(T(0)), two(T(2)), one(T(1));
    std::vector<LaneSum<T>> sl(glo ? G : 0), sh(glo ? G : 0);
    std::vector<V> vl(G), vh(G), vc(G), vt(G);  // the node's phases, 4 / w^2, 2 / w
    for (int64_t i = i0; i < i1; ++i) {
      const T* u = ut + i * N;
      for (int64_t j = 0; j < G; ++j) {
        const T w = hi[i * G + j] - lo[i * G + j];
        vl[j] = V(lo[i * G + j]);
        vh[j] = V(hi[i * G + j]);
        vc[j] = V(T(4) / (w * w));
        vt[j] = V(T(2) / w);
      }
      for (auto& s : sl) s = LaneSum<T>();
      for (auto& s : sh) s = LaneSum<T>();
      for (int64_t n = 0; n < N; n += S) {
        const int64_t c = std::min<int64_t>(S, N - n);
        const V x = V::loadu(u + n, c);
        V du(T(0));
        for (int64_t j = 0; j < G; ++j) {
          const int64_t f = i * G + j;
          const V a = at::vec::maximum(x - vl[j], zero), b = at::vec::maximum(vh[j] - x, zero);
          const V r = a * b * vc[j];
          if (bt) (r * r).store(bt + f * N + n, c);
          const V g2r = two * V::loadu(gbt + f * N + n, c) * r;  // dL/dR dR/dr
          if (gut) du = du + g2r * vc[j] * (b - a);
          if (glo) {
            const V t = r * vt[j];
            sl[j].add(head(g2r * (t - vc[j] * b), c));
            sh[j].add(head(g2r * (vc[j] * a - t), c));
          }
        }
        if (gut) {
          if (tanh) du = du * (one - x * x);
          du.store(gut + i * N + n, c);
        }
      }
      if (glo) {
        for (int64_t j = 0; j < G; ++j) {
          glo[i * G + j] = static_cast<T>(sl[j].value());
          ghi[i * G + j] = static_cast<T>(sh[j].value());
        }
      }
    }
  });
}

void check_phases(const at::Tensor& ut, const at::Tensor& lo, const at::Tensor& hi, const char* op) {
  TORCH_CHECK(lo.dim() == 2 && lo.size(0) == ut.size(0) && lo.is_contiguous() && hi.is_contiguous(),
              op, ": low and high must be contiguous (in, G) tensors with in = ", ut.size(0));
  check_like(lo, ut, lo.sizes(), op, "low");
  check_like(hi, ut, lo.sizes(), op, "high");
}

at::Tensor relu_basis_t(const at::Tensor& ut, const at::Tensor& lo, const at::Tensor& hi) {
  check_ut(ut, "relu_basis_t");
  check_phases(ut, lo, hi, "relu_basis_t");
  const int64_t nin = ut.size(0), N = ut.size(1), G = lo.size(1);
  auto bt = at::empty({nin * G, N}, ut.options());
  AT_DISPATCH_FLOATING_TYPES(ut.scalar_type(), "relu_basis_t", [&] {
    relu_fwd_kernel<scalar_t>(ut.data_ptr<scalar_t>(), lo.data_ptr<scalar_t>(),
                              hi.data_ptr<scalar_t>(), bt.data_ptr<scalar_t>(), nin, G, N);
  });
  return bt;
}

// (bt, gut, glo, ghi); each undefined unless asked for.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> relu_basis_t_bwd(
    const at::Tensor& ut, const at::Tensor& gbt_, const at::Tensor& lo, const at::Tensor& hi,
    bool tanh, bool need_basis, bool need_u, bool need_phases) {
  check_ut(ut, "relu_basis_t_bwd");
  check_phases(ut, lo, hi, "relu_basis_t_bwd");
  const int64_t nin = ut.size(0), N = ut.size(1), G = lo.size(1);
  check_like(gbt_, ut, {nin * G, N}, "relu_basis_t_bwd", "the basis gradient");
  auto gbt = gbt_.contiguous();
  at::Tensor bt, gut, glo, ghi;
  if (need_basis) bt = at::empty({nin * G, N}, ut.options());
  if (need_u) gut = at::empty({nin, N}, ut.options());
  if (need_phases) {
    glo = at::empty({nin, G}, ut.options());
    ghi = at::empty({nin, G}, ut.options());
  }
  AT_DISPATCH_FLOATING_TYPES(ut.scalar_type(), "relu_basis_t_bwd", [&] {
    auto ptr = [](at::Tensor& t) { return t.defined() ? t.data_ptr<scalar_t>() : nullptr; };
    relu_bwd_kernel<scalar_t>(ut.data_ptr<scalar_t>(), gbt.data_ptr<scalar_t>(),
                              lo.data_ptr<scalar_t>(), hi.data_ptr<scalar_t>(), ptr(bt), ptr(gut),
                              ptr(glo), ptr(ghi), tanh, nin, G, N);
  });
  return {bt, gut, glo, ghi};
}

// ----------------------------------------------------------------------------- S-KAN spaces
// The constants of the pool for one (grid, k, dtype), built with the torch path's own ops.
template <typename T>
struct Pool {
  int64_t grid, k, G;
  std::vector<T> knots;      // grid + 2k + 1 uniform knots (bspline)
  std::vector<T> inv_ph;     // 1 / (p h) for p = 1 .. k (the torch path divides by p h)
  std::vector<T> centres;    // G rbf centres (linspace)
  T rbf_inv_w;               // 1 / rbf width (the torch path divides by the width)
  std::vector<T> rlo, rhi, rc;  // relu phases (G) and 4 / (high - low)^2
  Pool(int64_t grid_, int64_t k_, at::ScalarType dt) : grid(grid_), k(k_), G(grid_ + k_) {
    const double h = 2.0 / static_cast<double>(grid);
    auto kn = (at::arange(grid + 2 * k + 1, at::TensorOptions().dtype(dt)) - static_cast<double>(k)) * h - 1.0;
    // the torch path: -1.0 + (arange - k) * h; addition is commutative in IEEE arithmetic
    kn = kn.contiguous();
    knots.assign(kn.data_ptr<T>(), kn.data_ptr<T>() + kn.numel());
    inv_ph.resize(std::max<int64_t>(k + 1, 2));
    for (int64_t p = 1; p < static_cast<int64_t>(inv_ph.size()); ++p) {
      inv_ph[p] = static_cast<T>(1.0 / (static_cast<double>(p) * h));
    }
    auto ce = at::linspace(-1.0, 1.0, G, at::TensorOptions().dtype(dt)).contiguous();
    centres.assign(ce.data_ptr<T>(), ce.data_ptr<T>() + G);
    rbf_inv_w = static_cast<T>(1.0 / (G > 1 ? 2.0 / static_cast<double>(G - 1) : 2.0));
    rlo.resize(G);
    rhi.resize(G);
    rc.resize(G);
    for (int64_t j = 0; j < G; ++j) {  // grid_phases: float64, then cast
      const double l = -1.0 + static_cast<double>(j - k) * h;
      rlo[j] = static_cast<T>(l);
      rhi[j] = static_cast<T>(l + static_cast<double>(k + 1) * h);
      const T w = rhi[j] - rlo[j];
      rc[j] = T(4) / (w * w);
    }
  }
};

// exp(-v) for v >= 0: float uses ATen's exp_u20 (20 ulp, ~2x faster than the 1-ulp exp; the
// rbf values enter sums with other spaces' values), double the 1-ulp exp.
template <typename T>
inline Vectorized<T> exp_neg(const Vectorized<T>& v) {
  if constexpr (std::is_same_v<T, float>) {
    return v.neg().exp_u20();
  } else {
    return v.neg().exp();
  }
}

// The G values (and derivatives, if D) of space sp at x, into B[0..G) (and D[0..G)).
// tmp: scratch of grid + 2k vectors. B-splines and rbf multiply by 1 / (p h) and 1 / w where
// the torch path divides (within an ulp; a division costs several multiplications here).
// GRID, KK > 0: the grid and order fixed at compile time (the default 5, 3: loops of constant
// length the compiler unrolls and keeps in registers); 0: read from P.
template <typename T, int GRID = 0, int KK = 0>
inline void space_values(int64_t sp, const Pool<T>& P, const Vectorized<T>& x, Vectorized<T>* B,
                         Vectorized<T>* D, Vectorized<T>* tmp) {
  using V = Vectorized<T>;
  const int64_t K = GRID ? KK : P.k;
  const int64_t G = GRID ? GRID + KK : P.G;
  switch (sp) {
    case kBspline: {
      const int64_t m = G + K;  // order-0 functions: grid + 2k
      for (int64_t j = 0; j < m; ++j) tmp[j] = x.ge(V(P.knots[j])) * x.lt(V(P.knots[j + 1]));
      for (int64_t p = 1; p <= K; ++p) {
        if (D && p == K) {  // uniform knots: B'_j,k = (B_j,k-1 - B_j+1,k-1) / h
          const V inv_h(P.inv_ph[1]);
          for (int64_t j = 0; j < G; ++j) D[j] = (tmp[j] - tmp[j + 1]) * inv_h;
        }
        const V inv(P.inv_ph[p]);
        for (int64_t j = 0; j < m - p; ++j) {
          const V lft = (x - V(P.knots[j])) * inv, rgt = (V(P.knots[j + p + 1]) - x) * inv;
          tmp[j] = lft * tmp[j] + rgt * tmp[j + 1];
        }
      }
      for (int64_t j = 0; j < G; ++j) B[j] = tmp[j];
      if (D && P.k == 0) {  // piecewise constant: no derivative (the torch path has no graph)
        for (int64_t j = 0; j < G; ++j) D[j] = V(T(0));
      }
      break;
    }
    case kRbf: {
      const V inv_w(P.rbf_inv_w), dz(T(-2) * P.rbf_inv_w);
      for (int64_t j = 0; j < G; ++j) {
        const V z = (x - V(P.centres[j])) * inv_w;
        B[j] = exp_neg(z * z);
        if (D) D[j] = z * dz * B[j];
      }
      break;
    }
    case kChebyshev: {
      B[0] = V(T(1));
      if (D) D[0] = V(T(0));
      if (G > 1) {
        B[1] = x;
        if (D) D[1] = V(T(1));
      }
      const V x2 = V(T(2)) * x;
      for (int64_t j = 2; j < G; ++j) {
        B[j] = x2 * B[j - 1] - B[j - 2];
        if (D) D[j] = V(T(2)) * B[j - 1] + x2 * D[j - 1] - D[j - 2];
      }
      break;
    }
    default: {  // relu, fixed phases
      const V zero(T(0));
      for (int64_t j = 0; j < G; ++j) {
        const V vc(P.rc[j]);
        const V a = at::vec::maximum(x - V(P.rlo[j]), zero), b = at::vec::maximum(V(P.rhi[j]) - x, zero);
        const V r = a * b * vc;
        B[j] = r * r;
        if (D) D[j] = V(T(2)) * r * vc * (b - a);
      }
    }
  }
}

// phit (in G, N) = sum_p alpha_ip B^p(ut_i) for every node (spaces with alpha = 0 skipped);
// backward (gbt given): phit again (if phit), gut, galpha (in, P).
template <typename T, int GRID = 0, int KK = 0>
void s_kernel(const T* ut, const T* alpha, const std::vector<int64_t>& spaces, const Pool<T>& P,
              const T* gbt, T* phit, T* gut, T* galpha, bool tanh, int64_t nin, int64_t N) {
  using V = Vectorized<T>;
  constexpr int64_t S = V::size();
  const int64_t G = GRID ? GRID + KK : P.G, np = static_cast<int64_t>(spaces.size());
  const int64_t scratch = P.grid + 2 * P.k;
  constexpr int64_t kFixed = GRID ? GRID + 2 * KK : 1;  // compile-time sizes when fixed
  at::parallel_for(0, nin, grain_nodes(G * N * np), [&](int64_t i0, int64_t i1) {
    std::vector<V> Bv(GRID ? 0 : G), Dv(GRID ? 0 : G), tv(GRID ? 0 : scratch), av(GRID ? 0 : G);
    std::vector<V> gvv(GRID ? 0 : G);
    V Bf[kFixed], Df[kFixed], tf[kFixed], af[kFixed], gf[kFixed];
    V* gv = GRID ? gf : gvv.data();
    V* B = GRID ? Bf : Bv.data();
    V* D = GRID ? Df : Dv.data();
    V* tmp = GRID ? tf : tv.data();
    V* acc = GRID ? af : av.data();
    std::vector<LaneSum<T>> sa(galpha ? np : 0);
    const bool deriv = gut != nullptr;
    const V one(T(1));
    for (int64_t i = i0; i < i1; ++i) {
      const T* u = ut + i * N;
      for (auto& s : sa) s = LaneSum<T>();
      for (int64_t n = 0; n < N; n += S) {
        const int64_t c = std::min<int64_t>(S, N - n);
        const V x = V::loadu(u + n, c);
        V du(T(0));
        bool first = true;
        if (gbt) {  // the basis gradient of this node and rows, loaded once for all spaces
          for (int64_t j = 0; j < G; ++j) gv[j] = V::loadu(gbt + (i * G + j) * N + n, c);
        }
        for (int64_t p = 0; p < np; ++p) {
          const T a = alpha[i * np + p];
          if (a == T(0) && !galpha) continue;
          space_values<T, GRID, KK>(spaces[p], P, x, B, deriv ? D : nullptr, tmp);
          const V va(a);
          for (int64_t j = 0; j < G; ++j) {  // phi = phi + B alpha (the torch path's order)
            acc[j] = first ? B[j] * va : acc[j] + B[j] * va;
          }
          first = false;
          if (gbt) {
            V ga(T(0)), gd(T(0));
            for (int64_t j = 0; j < G; ++j) {
              if (deriv) gd = gd + gv[j] * D[j];
              if (galpha) ga = ga + gv[j] * B[j];
            }
            if (deriv) du = du + va * gd;  // alpha_ip sum_j g_j B^p_j'
            if (galpha) sa[p].add(head(ga, c));
          }
        }
        if (phit) {
          for (int64_t j = 0; j < G; ++j) {
            (first ? V(T(0)) : acc[j]).store(phit + (i * G + j) * N + n, c);
          }
        }
        if (deriv) {
          if (tanh) du = du * (one - x * x);
          du.store(gut + i * N + n, c);
        }
      }
      for (int64_t p = 0; p < static_cast<int64_t>(sa.size()); ++p) {
        galpha[i * np + p] = static_cast<T>(sa[p].value());
      }
    }
  });
}

std::vector<int64_t> check_pool(const at::Tensor& ut, const at::Tensor& alpha,
                                at::IntArrayRef spaces, int64_t grid, int64_t k, const char* op) {
  TORCH_CHECK(grid >= 1 && k >= 0, op, ": grid must be >= 1 and k >= 0, got ", grid, ", ", k);
  TORCH_CHECK(!spaces.empty(), op, ": give at least one space");
  for (auto s : spaces) TORCH_CHECK(s >= 0 && s <= 3, op, ": space codes are 0..3, got ", s);
  check_like(alpha, ut, {ut.size(0), static_cast<int64_t>(spaces.size())}, op, "alpha");
  return std::vector<int64_t>(spaces.begin(), spaces.end());
}

// The pool of one (grid, k, dtype), built once per process (its ATen calls cost ~15 us, more
// than the kernel on small inputs).
template <typename T>
const Pool<T>& pool_of(int64_t grid, int64_t k, at::ScalarType dt) {
  static std::mutex mu;
  static std::map<std::pair<int64_t, int64_t>, std::unique_ptr<Pool<T>>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[{grid, k}];
  if (!slot) slot = std::make_unique<Pool<T>>(grid, k, dt);
  return *slot;
}

at::Tensor s_basis_t(const at::Tensor& ut, const at::Tensor& alpha_, at::IntArrayRef spaces,
                     int64_t grid, int64_t k) {
  check_ut(ut, "s_basis_t");
  auto sp = check_pool(ut, alpha_, spaces, grid, k, "s_basis_t");
  auto alpha = alpha_.contiguous();
  const int64_t nin = ut.size(0), N = ut.size(1), G = grid + k;
  auto phit = at::empty({nin * G, N}, ut.options());
  AT_DISPATCH_FLOATING_TYPES(ut.scalar_type(), "s_basis_t", [&] {
    const auto& P = pool_of<scalar_t>(grid, k, ut.scalar_type());
    auto run = grid == 5 && k == 3 ? s_kernel<scalar_t, 5, 3> : s_kernel<scalar_t>;
    run(ut.data_ptr<scalar_t>(), alpha.data_ptr<scalar_t>(), sp, P, nullptr,
        phit.data_ptr<scalar_t>(), nullptr, nullptr, false, nin, N);
  });
  return phit;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> s_basis_t_bwd(
    const at::Tensor& ut, const at::Tensor& gbt_, const at::Tensor& alpha_, at::IntArrayRef spaces,
    int64_t grid, int64_t k, bool tanh, bool need_basis, bool need_u, bool need_alpha) {
  check_ut(ut, "s_basis_t_bwd");
  auto sp = check_pool(ut, alpha_, spaces, grid, k, "s_basis_t_bwd");
  auto alpha = alpha_.contiguous();
  const int64_t nin = ut.size(0), N = ut.size(1), G = grid + k;
  check_like(gbt_, ut, {nin * G, N}, "s_basis_t_bwd", "the basis gradient");
  auto gbt = gbt_.contiguous();
  at::Tensor phit, gut, galpha;
  if (need_basis) phit = at::empty({nin * G, N}, ut.options());
  if (need_u) gut = at::empty({nin, N}, ut.options());
  if (need_alpha) galpha = at::empty(alpha.sizes(), ut.options());
  AT_DISPATCH_FLOATING_TYPES(ut.scalar_type(), "s_basis_t_bwd", [&] {
    auto ptr = [](at::Tensor& t) { return t.defined() ? t.data_ptr<scalar_t>() : nullptr; };
    const auto& P = pool_of<scalar_t>(grid, k, ut.scalar_type());
    auto run = grid == 5 && k == 3 ? s_kernel<scalar_t, 5, 3> : s_kernel<scalar_t>;
    run(ut.data_ptr<scalar_t>(), alpha.data_ptr<scalar_t>(), sp, P,
                       gbt.data_ptr<scalar_t>(), ptr(phit), ptr(gut), ptr(galpha), tanh, nin, N);
  });
  return {phit, gut, galpha};
}

// ----------------------------------------------------------------------------- AF-KAN
// Per node i and function j: x1 = act(u - l_j), x2 = act(h_j - u), f = func(x1, x2); the
// kernel returns the two contractions over j, s0 = sum_j f w_j and s1 = sum_j f (in, N), and
// the min / max of f over the whole tensor (mode 0, "batch") or over each row's (in, G)
// values (mode 1, "sample"; mode 2: none) -- f itself, (N, in, G), is never written.
// Backward, given gs0, gs1, glo, ghi: gf = gs0 w_j + gs1 + glo [f = lo] / #lo + ghi [f = hi] / #hi
// (the ties share the min / max gradient evenly, as torch's amin / amax), then
//   du = sum_j gf (f_a act'(u - l_j) - f_b act'(h_j - u)),  dl_j = -sum gf f_a act'(u - l_j),
//   dh_j = sum gf f_b act'(h_j - u),  dw_j = sum gs0 f.
// The tie counts #lo, #hi are kept by the forward pass (per lane while it runs the extremes),
// so the backward is one pass. Rows run in fixed chunks of kChunk (parallel over chunks; per-chunk parameter
// sums added in chunk order): results do not depend on the thread count.
constexpr int64_t kChunk = 256;

enum Act : int64_t { kSilu = 0, kGelu = 1 };

// act(v) and act'(v) in the operation order of ATen's vectorised kernels.
template <typename T>
inline void act_d(int64_t act, const Vectorized<T>& v, Vectorized<T>& y, Vectorized<T>* d) {
  using V = Vectorized<T>;
  if (act == kSilu) {  // v / (1 + exp(-v)); silu' = s (1 + v (1 - s)), s = sigmoid(v)
    const V e1 = V(T(1)) + v.neg().exp();
    y = v / e1;
    if (d) {
      const V sg = V(T(1)) / e1;
      *d = sg * (V(T(1)) + v * (V(T(1)) - sg));
    }
  } else {  // v Phi(v); gelu' = Phi + v phi
    const V phi_c(T(0.3989422804014327)), half(T(0.5));
    const V cdf = half * (V(T(1)) + (v * V(T(0.7071067811865476))).erf());
    y = v * cdf;
    if (d) *d = cdf + v * phi_c * (v * v * V(T(-0.5))).exp();
  }
}

// f = func(a, b) and its partials fa, fb (if fa).
template <typename T>
inline Vectorized<T> func_d(int64_t func, const Vectorized<T>& a, const Vectorized<T>& b,
                            Vectorized<T>* fa, Vectorized<T>* fb) {
  using V = Vectorized<T>;
  const V one(T(1)), two(T(2)), three(T(3));
  switch (func) {
    case 0: {  // quad1 (a b)^2
      const V ab = a * b;
      if (fa) *fa = two * ab * b, *fb = two * ab * a;
      return ab * ab;
    }
    case 1:  // quad2 a b + a^2 + b^2
      if (fa) *fa = b + two * a, *fb = a + two * b;
      return a * b + a * a + b * b;
    case 2:  // sum
      if (fa) *fa = one, *fb = one;
      return a + b;
    case 3:  // prod
      if (fa) *fa = b, *fb = a;
      return a * b;
    case 4:  // sum_prod a + b + a b
      if (fa) *fa = one + b, *fb = one + a;
      return a + b + a * b;
    case 5: {  // cubic1 (a + b)(a^2 + b^2)
      const V s = a + b, q = a * a + b * b;
      if (fa) *fa = q + s * two * a, *fb = q + s * two * b;
      return s * q;
    }
    default: {  // cubic2 (a b)^3
      const V ab = a * b;
      if (fa) *fa = three * ab * ab * b, *fb = three * ab * ab * a;
      return ab * ab * ab;
    }
  }
}

struct AFArgs {
  int64_t nin, N, G, act, func, mode;
  bool tanh;
};

// A running minimum (or maximum) with the count of values equal to it. NaN propagates (and
// then nothing counts), as in amin / amax.
template <typename T>
struct Extreme {
  double m, c = 0.0;
  void merge(T v, double cnt, bool is_min) {
    if (std::isnan(m)) return;
    if (std::isnan(static_cast<double>(v))) {
      m = static_cast<double>(v), c = 0.0;
    } else if (is_min ? v < m : v > m) {
      m = static_cast<double>(v), c = cnt;
    } else if (v == m) {
      c += cnt;
    }
  }
};

// Forward: s0t, s1t (in, N); the min / max of f with their tie counts per row (mode 1: rmin,
// rmax, rcmin, rcmax, N values each) or per chunk (cmin, cmax: kChunk rows each).
template <typename T>
void af_fwd_kernel(const T* ut, const T* lo_p, const T* hi_p, const T* w, T* s0t, T* s1t, T* rmin,
                   T* rmax, double* rcmin, double* rcmax, std::vector<Extreme<T>>& cmin,
                   std::vector<Extreme<T>>& cmax, const AFArgs& A) {
  using V = Vectorized<T>;
  constexpr int64_t S = V::size();
  const int64_t chunks = (A.N + kChunk - 1) / kChunk;
  const T inf = std::numeric_limits<T>::infinity();
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    const V one(T(1));
    for (int64_t ch = c0; ch < c1; ++ch) {
      Extreme<T> emn{static_cast<double>(inf)}, emx{static_cast<double>(-inf)};
      const int64_t n1 = std::min(A.N, (ch + 1) * kChunk);
      for (int64_t n = ch * kChunk; n < n1; n += S) {
        const int64_t c = std::min<int64_t>(S, n1 - n);
        V rmn(inf), rmx(-inf), cmn(T(0)), cmx(T(0));  // per row (lane): extremes and ties
        for (int64_t i = 0; i < A.nin; ++i) {
          const V u = V::loadu(ut + i * A.N + n, c);
          V s0(T(0)), s1(T(0));
          for (int64_t j = 0; j < A.G; ++j) {
            V x1, x2;
            act_d<T>(A.act, u - V(lo_p[j]), x1, nullptr);
            act_d<T>(A.act, V(hi_p[j]) - u, x2, nullptr);
            const V f = func_d<T>(A.func, x1, x2, nullptr, nullptr);
            s0 = s0 + f * V(w[j]);
            s1 = s1 + f;
            if (A.mode != 2) {  // counts of a row stay below 2^24 (in G values) in float
              cmn = V::blendv(cmn + f.eq(rmn), one, f < rmn);
              cmx = V::blendv(cmx + f.eq(rmx), one, f > rmx);
              rmn = at::vec::minimum(rmn, f);
              rmx = at::vec::maximum(rmx, f);
            }
          }
          s0.store(s0t + i * A.N + n, c);
          s1.store(s1t + i * A.N + n, c);
        }
        if (A.mode == 2) continue;
        T a[S], b[S], ca[S], cb[S];
        rmn.store(a);
        rmx.store(b);
        cmn.store(ca);
        cmx.store(cb);
        for (int64_t l = 0; l < c; ++l) {
          if (A.mode == 1) {
            rmin[n + l] = a[l], rmax[n + l] = b[l];
            rcmin[n + l] = ca[l], rcmax[n + l] = cb[l];
          } else {
            emn.merge(a[l], ca[l], true);
            emx.merge(b[l], cb[l], false);
          }
        }
      }
      cmin[ch] = emn;
      cmax[ch] = emx;
    }
  });
}

// Backward. lo / hi: 1 value (mode 0) or N (mode 1); glo / ghi likewise (null: no min / max
// gradient). Outputs gut (in, N) (if gut) and per-chunk sums of dl, dh, dw (3 G per chunk).
template <typename T>
void af_bwd_kernel(const T* ut, const T* l_p, const T* h_p, const T* w, const T* gs0t,
                   const T* gs1t, const T* lo, const T* hi, const double* nlo, const double* nhi,
                   const T* glo, const T* ghi, T* gut, std::vector<double>& part, const AFArgs& A) {
  using V = Vectorized<T>;
  constexpr int64_t S = V::size();
  const int64_t G = A.G, chunks = (A.N + kChunk - 1) / kChunk;
  const bool ties = glo != nullptr;
  auto lim = [&](const T* p, int64_t n, int64_t c) {
    return A.mode == 1 ? V::loadu(p + n, c) : V(p[0]);
  };
  // the min / max gradient per tie: glo / #lo (per row in mode 1)
  const int64_t rows = A.mode == 1 ? A.N : 1;
  std::vector<T> slo(ties ? rows : 0), shi(slo.size());
  for (size_t r = 0; r < slo.size(); ++r) {
    slo[r] = static_cast<T>(static_cast<double>(glo[r]) / std::max(nlo[r], 1.0));
    shi[r] = static_cast<T>(static_cast<double>(ghi[r]) / std::max(nhi[r], 1.0));
  }
  part.assign(chunks * 3 * G, 0.0);
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    std::vector<LaneSum<T>> sums(3 * G);
    for (int64_t ch = c0; ch < c1; ++ch) {
      for (auto& x : sums) x = LaneSum<T>();
      const int64_t n1 = std::min(A.N, (ch + 1) * kChunk);
      for (int64_t n = ch * kChunk; n < n1; n += S) {
        const int64_t c = std::min<int64_t>(S, n1 - n);
        V vlo(T(0)), vhi(T(0)), tlo(T(0)), thi(T(0));
        if (ties) {
          vlo = lim(lo, n, c), vhi = lim(hi, n, c);
          tlo = A.mode == 1 ? V::loadu(slo.data() + n, c) : V(slo[0]);
          thi = A.mode == 1 ? V::loadu(shi.data() + n, c) : V(shi[0]);
        }
        for (int64_t i = 0; i < A.nin; ++i) {
          const V u = V::loadu(ut + i * A.N + n, c);
          const V g0 = V::loadu(gs0t + i * A.N + n, c), g1 = V::loadu(gs1t + i * A.N + n, c);
          V du(T(0));
          for (int64_t j = 0; j < G; ++j) {
            V x1, x2, d1, d2, fa, fb;
            act_d<T>(A.act, u - V(l_p[j]), x1, &d1);
            act_d<T>(A.act, V(h_p[j]) - u, x2, &d2);
            const V f = func_d<T>(A.func, x1, x2, &fa, &fb);
            V gf = g0 * V(w[j]) + g1;
            if (ties) gf = gf + f.eq(vlo) * tlo + f.eq(vhi) * thi;
            const V ga = gf * fa * d1, gb = gf * fb * d2;
            du = du + ga - gb;
            sums[j].add(head(ga, c));
            sums[G + j].add(head(gb, c));
            sums[2 * G + j].add(head(g0 * f, c));
          }
          if (gut) {
            if (A.tanh) du = du * (V(T(1)) - u * u);
            du.store(gut + i * A.N + n, c);
          }
        }
      }
      for (int64_t q = 0; q < 3 * G; ++q) part[ch * 3 * G + q] = sums[q].value();
    }
  });
}

// (s0t, s1t, lo, hi, #lo, #hi) of ut (in, N) with phases low, high (G) and attention weights
// w (G); lo, hi and the tie counts (float64) are scalars (mode 0, 2) or (N,) (mode 1).
std::vector<at::Tensor> af_reduce_t(const at::Tensor& ut, const at::Tensor& lo_p,
                                    const at::Tensor& hi_p, const at::Tensor& w, int64_t act,
                                    int64_t func, int64_t mode) {
  check_ut(ut, "af_reduce_t");
  TORCH_CHECK(act >= 0 && act <= 1 && func >= 0 && func <= 6 && mode >= 0 && mode <= 2,
              "af_reduce_t: act 0..1, func 0..6, mode 0..2");
  const int64_t G = lo_p.numel();
  check_like(lo_p, ut, {G}, "af_reduce_t", "low");
  check_like(hi_p, ut, {G}, "af_reduce_t", "high");
  check_like(w, ut, {G}, "af_reduce_t", "w");
  const AFArgs A{ut.size(0), ut.size(1), G, act, func, mode, false};
  auto s0t = at::empty_like(ut), s1t = at::empty_like(ut);
  at::Tensor lo = mode == 1 ? at::empty({A.N}, ut.options()) : at::zeros({}, ut.options());
  at::Tensor hi = at::empty_like(lo);
  auto dopt = ut.options().dtype(at::kDouble);
  at::Tensor nlo = mode == 1 ? at::empty({A.N}, dopt) : at::zeros({}, dopt);
  at::Tensor nhi = at::empty_like(nlo);
  AT_DISPATCH_FLOATING_TYPES(ut.scalar_type(), "af_reduce_t", [&] {
    const int64_t chunks = (A.N + kChunk - 1) / kChunk;
    std::vector<Extreme<scalar_t>> cmin(chunks), cmax(chunks);
    const bool rows = mode == 1;
    af_fwd_kernel<scalar_t>(
        ut.data_ptr<scalar_t>(), lo_p.contiguous().data_ptr<scalar_t>(),
        hi_p.contiguous().data_ptr<scalar_t>(), w.contiguous().data_ptr<scalar_t>(),
        s0t.data_ptr<scalar_t>(), s1t.data_ptr<scalar_t>(), rows ? lo.data_ptr<scalar_t>() : nullptr,
        rows ? hi.data_ptr<scalar_t>() : nullptr, rows ? nlo.data_ptr<double>() : nullptr,
        rows ? nhi.data_ptr<double>() : nullptr, cmin, cmax, A);
    if (mode == 0) {  // the chunks' extremes merged in chunk order
      const double inf = std::numeric_limits<double>::infinity();
      Extreme<scalar_t> emn{inf}, emx{-inf};
      for (int64_t ch = 0; ch < chunks; ++ch) {
        emn.merge(static_cast<scalar_t>(cmin[ch].m), cmin[ch].c, true);
        emx.merge(static_cast<scalar_t>(cmax[ch].m), cmax[ch].c, false);
      }
      lo.fill_(emn.m);
      hi.fill_(emx.m);
      nlo.fill_(emn.c);
      nhi.fill_(emx.c);
    }
  });
  return {s0t, s1t, lo, hi, nlo, nhi};
}

// (gut, glow, ghigh, gw); gut undefined unless need_u.
std::vector<at::Tensor> af_reduce_t_bwd(const at::Tensor& ut, const at::Tensor& lo_p,
                                        const at::Tensor& hi_p, const at::Tensor& w, int64_t act,
                                        int64_t func, int64_t mode, const at::Tensor& gs0t_,
                                        const at::Tensor& gs1t_, const at::Tensor& lo,
                                        const at::Tensor& hi, const at::Tensor& nlo_,
                                        const at::Tensor& nhi_, const std::optional<at::Tensor>& glo_,
                                        const std::optional<at::Tensor>& ghi_, bool tanh,
                                        bool need_u) {
  check_ut(ut, "af_reduce_t_bwd");
  const int64_t G = lo_p.numel();
  const AFArgs A{ut.size(0), ut.size(1), G, act, func, mode, tanh};
  check_like(gs0t_, ut, ut.sizes(), "af_reduce_t_bwd", "gs0");
  check_like(gs1t_, ut, ut.sizes(), "af_reduce_t_bwd", "gs1");
  auto gs0t = gs0t_.contiguous(), gs1t = gs1t_.contiguous();
  const bool ties = mode != 2 && ((glo_.has_value() && glo_->defined()) || (ghi_.has_value() && ghi_->defined()));
  at::Tensor glo, ghi;
  if (ties) {
    glo = glo_.has_value() && glo_->defined() ? glo_->contiguous() : at::zeros_like(lo);
    ghi = ghi_.has_value() && ghi_->defined() ? ghi_->contiguous() : at::zeros_like(hi);
  }
  at::Tensor gut = need_u ? at::empty_like(ut) : at::Tensor();
  auto opts = ut.options();
  at::Tensor gl = at::empty({G}, opts), gh = at::empty({G}, opts), gw = at::empty({G}, opts);
  AT_DISPATCH_FLOATING_TYPES(ut.scalar_type(), "af_reduce_t_bwd", [&] {
    std::vector<double> part;
    auto lc = lo.contiguous(), hc = hi.contiguous();
    auto nlo = nlo_.to(at::kDouble).contiguous(), nhi = nhi_.to(at::kDouble).contiguous();
    af_bwd_kernel<scalar_t>(ut.data_ptr<scalar_t>(), lo_p.contiguous().data_ptr<scalar_t>(),
                            hi_p.contiguous().data_ptr<scalar_t>(), w.contiguous().data_ptr<scalar_t>(),
                            gs0t.data_ptr<scalar_t>(), gs1t.data_ptr<scalar_t>(),
                            lc.data_ptr<scalar_t>(), hc.data_ptr<scalar_t>(),
                            nlo.data_ptr<double>(), nhi.data_ptr<double>(),
                            ties ? glo.data_ptr<scalar_t>() : nullptr,
                            ties ? ghi.data_ptr<scalar_t>() : nullptr,
                            need_u ? gut.data_ptr<scalar_t>() : nullptr, part, A);
    const int64_t chunks = (A.N + kChunk - 1) / kChunk;
    auto* pl = gl.data_ptr<scalar_t>();
    auto* ph = gh.data_ptr<scalar_t>();
    auto* pw = gw.data_ptr<scalar_t>();
    for (int64_t j = 0; j < G; ++j) {
      double a = 0.0, b = 0.0, c = 0.0;
      for (int64_t ch = 0; ch < chunks; ++ch) {
        a += part[ch * 3 * G + j];
        b += part[ch * 3 * G + G + j];
        c += part[ch * 3 * G + 2 * G + j];
      }
      pl[j] = static_cast<scalar_t>(-a);  // d(u - l)/dl = -1
      ph[j] = static_cast<scalar_t>(b);
      pw[j] = static_cast<scalar_t>(c);
    }
  });
  return {gut, gl, gh, gw};
}

// ----------------------------------------------------------------------------- layers
// ut = (tanh of) x^T as (in, N) contiguous; x (..., in).
at::Tensor transposed_input(const at::Tensor& x, bool tanh) {
  TORCH_CHECK(x.dim() >= 1, "kan layer: expected an input of shape (..., in)");
  auto xt = x.reshape({-1, x.size(-1)}).t();  // (in, N) view
  if (!tanh) return xt.contiguous();  // may be x itself (in or N is 1): only ever read
  auto ut = at::empty(xt.sizes(), x.options());
  at::tanh_out(ut, xt);  // one pass, never in place on x
  return ut;
}

// y (..., out) = Bt^T W^T + b, computed as y^T = W Bt + b (MKL is fastest on these operands
// as they lie). y is a tensor of its own (never a view: autograd allows in-place changes of a
// custom Function's output only then). out_t: y keeps the (out, N) memory of y^T (strides 1
// along the rows, N along out; what the next KAN layer reads without a copy), else y is
// contiguous (one copy).
at::Tensor project(const at::Tensor& bt, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                   const at::Tensor& x, bool out_t) {
  TORCH_CHECK(w.dim() == 2 && w.size(1) == bt.size(0), "kan layer: weight must be (out, ",
              bt.size(0), "), got ", w.sizes());
  const int64_t out = w.size(0), N = bt.size(1);
  auto shape = x.sizes().vec();
  shape.back() = out;
  const bool has_bias = bias.has_value() && bias->defined();
  if (out_t) {
    std::vector<int64_t> strides(shape.size());
    strides.back() = std::max<int64_t>(N, 1);
    int64_t unit = 1;  // the leading axes: row-major over the N rows
    for (int64_t d = static_cast<int64_t>(shape.size()) - 2; d >= 0; --d) {
      strides[d] = unit;
      unit *= std::max<int64_t>(shape[d], 1);
    }
    auto y = at::empty_strided(shape, strides, bt.options());
    auto yt = y.as_strided({out, N}, {std::max<int64_t>(N, 1), 1});  // (out, N) target
    if (has_bias) {
      at::addmm_out(yt, bias->unsqueeze(1), w, bt);
    } else {
      at::mm_out(yt, w, bt);
    }
    return y;
  }
  at::Tensor yt = has_bias ? at::addmm(bias->unsqueeze(1), w, bt) : at::mm(w, bt);  // (out, N)
  auto y = at::empty(shape, bt.options());
  y.view({N, out}).copy_(yt.t());
  return y;
}

// The kernels have no second derivative: refuse a backward that would record one.
void no_double_backward(const char* name) {
  TORCH_CHECK(!at::GradMode::is_enabled(), name,
              ": the native kernel has no second derivative (backward with create_graph=True); "
              "build the layer with fused=False (its torch path) for that");
}

at::Tensor relu_kan_layer_plain(const at::Tensor& x, const at::Tensor& lo, const at::Tensor& hi,
                                const at::Tensor& w, const std::optional<at::Tensor>& bias,
                                bool tanh, bool out_t) {
  auto ut = transposed_input(x, tanh);
  return project(relu_basis_t(ut, lo, hi), w, bias, x, out_t);
}

at::Tensor s_kan_layer_plain(const at::Tensor& x, const at::Tensor& alpha, at::IntArrayRef spaces,
                             int64_t grid, int64_t k, const at::Tensor& w,
                             const std::optional<at::Tensor>& bias, bool tanh, bool out_t) {
  auto ut = transposed_input(x, tanh);
  return project(s_basis_t(ut, alpha, spaces, grid, k), w, bias, x, out_t);
}

// The weight and bias gradients and the input gradient's (..., in) view of gut (in, N).
void finish_grads(variable_list& out, const at::Tensor& gy2, const at::Tensor& bt,
                  const at::Tensor& gut, AutogradContext* ctx, size_t w_edge, size_t w_slot,
                  bool has_bias, const std::vector<int64_t>& xshape) {
  if (gut.defined()) out[0] = gut.t().reshape(xshape);
  if (ctx->needs_input_grad(w_edge)) out[w_slot] = at::mm(bt, gy2).t().contiguous();  // (out, in G)
  if (has_bias && ctx->needs_input_grad(w_edge + 1)) out[w_slot + 1] = gy2.sum(0);
}

struct ReLUKANFunction : public torch::autograd::Function<ReLUKANFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& lo,
                            const at::Tensor& hi, const at::Tensor& w,
                            const std::optional<at::Tensor>& bias, bool tanh, bool out_t) {
    auto ut = transposed_input(x, tanh);
    ctx->save_for_backward({ut, lo, hi, w});
    ctx->saved_data["tanh"] = tanh;
    ctx->saved_data["bias"] = bias.has_value() && bias->defined();
    ctx->saved_data["xshape"] = x.sizes().vec();
    return project(relu_basis_t(ut, lo, hi), w, bias, x, out_t);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    no_double_backward("relu_kan");
    auto saved = ctx->get_saved_variables();
    const auto &ut = saved[0], &lo = saved[1], &hi = saved[2], &w = saved[3];
    const bool has_bias = ctx->saved_data["bias"].toBool();
    variable_list out(7);
    if (!grads[0].defined()) return out;
    auto gy2 = grads[0].reshape({-1, w.size(0)});  // (N, out)
    auto gbt = at::mm(w.t(), gy2.t());              // (in G, N)
    const bool need_w = ctx->needs_input_grad(3);
    auto [bt, gut, glo, ghi] = relu_basis_t_bwd(
        ut, gbt, lo, hi, ctx->saved_data["tanh"].toBool(), need_w, ctx->needs_input_grad(0),
        ctx->needs_input_grad(1) || ctx->needs_input_grad(2));
    if (ctx->needs_input_grad(1)) out[1] = glo;
    if (ctx->needs_input_grad(2)) out[2] = ghi;
    finish_grads(out, gy2, bt, gut, ctx, 3, 3, has_bias, ctx->saved_data["xshape"].toIntVector());
    return out;
  }
};

struct SKANFunction : public torch::autograd::Function<SKANFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& alpha,
                            const at::Tensor& w, const std::optional<at::Tensor>& bias,
                            std::vector<int64_t> spaces, int64_t grid, int64_t k, bool tanh,
                            bool out_t) {
    auto ut = transposed_input(x, tanh);
    ctx->save_for_backward({ut, alpha, w});
    ctx->saved_data["tanh"] = tanh;
    ctx->saved_data["bias"] = bias.has_value() && bias->defined();
    ctx->saved_data["xshape"] = x.sizes().vec();
    ctx->saved_data["spaces"] = spaces;
    ctx->saved_data["grid"] = grid;
    ctx->saved_data["k"] = k;
    return project(s_basis_t(ut, alpha, spaces, grid, k), w, bias, x, out_t);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    no_double_backward("s_kan");
    auto saved = ctx->get_saved_variables();
    const auto &ut = saved[0], &alpha = saved[1], &w = saved[2];
    const bool has_bias = ctx->saved_data["bias"].toBool();
    variable_list out(9);
    if (!grads[0].defined()) return out;
    // edges: x 0, alpha 1, w 2, bias 3 (if given)
    const bool need_w = ctx->needs_input_grad(2);
    auto gy2 = grads[0].reshape({-1, w.size(0)});
    auto gbt = at::mm(w.t(), gy2.t());
    auto spaces = ctx->saved_data["spaces"].toIntVector();
    auto [phit, gut, galpha] = s_basis_t_bwd(
        ut, gbt, alpha, spaces, ctx->saved_data["grid"].toInt(), ctx->saved_data["k"].toInt(),
        ctx->saved_data["tanh"].toBool(), need_w, ctx->needs_input_grad(0),
        ctx->needs_input_grad(1));
    if (ctx->needs_input_grad(1)) out[1] = galpha;
    finish_grads(out, gy2, phit, gut, ctx, 2, 2, has_bias, ctx->saved_data["xshape"].toIntVector());
    return out;
  }
};

// AF-KAN's basis reduction as a differentiable op: x (..., in) -> s0, s1 (..., in), lo, hi (mode 0: scalars; mode 1: (...); mode 2: unused zeros).
std::vector<at::Tensor> af_outputs(const std::vector<at::Tensor>& r, const at::Tensor& x,
                                   int64_t mode) {
  auto lead = x.sizes().vec();
  lead.pop_back();
  // contiguous (N, in) tensors of their own (not views: in-place changes stay allowed); the
  // softmax and LayerNorm over `in` that follow need that layout
  auto own = [&](const at::Tensor& t) {
    auto y = at::empty(x.sizes(), t.options());
    y.view({t.size(1), t.size(0)}).copy_(t.t());
    return y;
  };
  return {own(r[0]), own(r[1]), mode == 1 ? r[2].view(lead).clone() : r[2],
          mode == 1 ? r[3].view(lead).clone() : r[3]};
}

std::vector<at::Tensor> af_kan_reduce_plain(const at::Tensor& x, const at::Tensor& lo_p,
                                            const at::Tensor& hi_p, const at::Tensor& w,
                                            int64_t act, int64_t func, int64_t mode, bool tanh) {
  auto ut = transposed_input(x, tanh);
  return af_outputs(af_reduce_t(ut, lo_p, hi_p, w, act, func, mode), x, mode);
}

struct AFKANFunction : public torch::autograd::Function<AFKANFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& lo_p,
                               const at::Tensor& hi_p, const at::Tensor& w, int64_t act,
                               int64_t func, int64_t mode, bool tanh) {
    auto ut = transposed_input(x, tanh);
    auto r = af_reduce_t(ut, lo_p, hi_p, w, act, func, mode);
    ctx->save_for_backward({ut, lo_p, hi_p, w, r[2], r[3], r[4], r[5]});
    ctx->saved_data["act"] = act;
    ctx->saved_data["func"] = func;
    ctx->saved_data["mode"] = mode;
    ctx->saved_data["tanh"] = tanh;
    ctx->saved_data["xshape"] = x.sizes().vec();
    if (mode == 2) ctx->mark_non_differentiable({r[2], r[3]});
    return af_outputs(r, x, mode);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    no_double_backward("af_kan");
    auto sv = ctx->get_saved_variables();
    const int64_t mode = ctx->saved_data["mode"].toInt();
    const auto xshape = ctx->saved_data["xshape"].toIntVector();
    const int64_t nin = sv[0].size(0), N = sv[0].size(1);
    auto gsum = [&](const at::Tensor& g) {  // (in, N) of a (..., in) gradient, zeros if none
      return g.defined() ? g.reshape({N, nin}).t() : at::zeros({nin, N}, sv[0].options());
    };
    std::optional<at::Tensor> glo, ghi;
    if (mode != 2 && grads[2].defined()) glo = grads[2].reshape({-1});
    if (mode != 2 && grads[3].defined()) ghi = grads[3].reshape({-1});
    auto r = af_reduce_t_bwd(sv[0], sv[1], sv[2], sv[3], ctx->saved_data["act"].toInt(),
                             ctx->saved_data["func"].toInt(), mode, gsum(grads[0]),
                             gsum(grads[1]), sv[4].reshape({-1}), sv[5].reshape({-1}),
                             sv[6].reshape({-1}), sv[7].reshape({-1}), glo, ghi,
                             ctx->saved_data["tanh"].toBool(), ctx->needs_input_grad(0));
    variable_list out(8);
    if (ctx->needs_input_grad(0)) out[0] = r[0].t().reshape(xshape);
    if (ctx->needs_input_grad(1)) out[1] = r[1];
    if (ctx->needs_input_grad(2)) out[2] = r[2];
    if (ctx->needs_input_grad(3)) out[3] = r[3];
    return out;
  }
};

std::vector<at::Tensor> af_kan_reduce_autograd(const at::Tensor& x, const at::Tensor& lo_p,
                                               const at::Tensor& hi_p, const at::Tensor& w,
                                               int64_t act, int64_t func, int64_t mode, bool tanh) {
  return AFKANFunction::apply(x, lo_p, hi_p, w, act, func, mode, tanh);
}

at::Tensor relu_kan_layer_autograd(const at::Tensor& x, const at::Tensor& lo, const at::Tensor& hi,
                                   const at::Tensor& w, const std::optional<at::Tensor>& bias,
                                   bool tanh, bool out_t) {
  return ReLUKANFunction::apply(x, lo, hi, w, bias, tanh, out_t);
}

at::Tensor s_kan_layer_autograd(const at::Tensor& x, const at::Tensor& alpha,
                                at::IntArrayRef spaces, int64_t grid, int64_t k,
                                const at::Tensor& w, const std::optional<at::Tensor>& bias,
                                bool tanh, bool out_t) {
  return SKANFunction::apply(x, alpha, w, bias, spaces.vec(), grid, k, tanh, out_t);
}

// Whether every value of every tensor is finite: sum(v * 0) is 0 unless some v is inf or NaN.
// CPU float32 / float64 tensors (others: checked by ATen's isfinite). One call for a module's
// parameters, where one isfinite + all per parameter costs ~5 us each.
bool all_finite(at::TensorList ts) {
  for (const auto& t0 : ts) {
    TORCH_CHECK(t0.device().is_cpu(), "all_finite: expected CPU tensors, got ", t0.device());
    if (t0.scalar_type() != at::kFloat && t0.scalar_type() != at::kDouble) {
      if (!at::isfinite(t0).all().item<bool>()) return false;
      continue;
    }
    const auto t = t0.contiguous();
    bool ok = true;
    AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "all_finite", [&] {
      using V = Vectorized<scalar_t>;
      constexpr int64_t S = V::size();
      const scalar_t* p = t.data_ptr<scalar_t>();
      const int64_t n = t.numel();
      const V zero(scalar_t(0));
      V acc(scalar_t(0));
      int64_t i = 0;
      for (; i + S <= n; i += S) acc = acc + V::loadu(p + i) * zero;
      if (i < n) acc = acc + V::loadu(p + i, n - i) * zero;
      ok = hsum(acc) == scalar_t(0);
    });
    if (!ok) return false;
  }
  return true;
}

std::string isa() {
#if defined(CPU_CAPABILITY_AVX512)
  return "AVX512";
#elif defined(CPU_CAPABILITY_AVX2)
  return "AVX2";
#else
  return "DEFAULT";
#endif
}

}  // namespace

TORCH_LIBRARY(actlab_kan, m) {
  m.def("relu_basis_t(Tensor ut, Tensor low, Tensor high) -> Tensor");
  m.def(
      "relu_basis_t_bwd(Tensor ut, Tensor gbt, Tensor low, Tensor high, bool tanh, "
      "bool need_basis, bool need_u, bool need_phases) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("s_basis_t(Tensor ut, Tensor alpha, int[] spaces, int grid, int k) -> Tensor");
  m.def(
      "s_basis_t_bwd(Tensor ut, Tensor gbt, Tensor alpha, int[] spaces, int grid, int k, "
      "bool tanh, bool need_basis, bool need_u, bool need_alpha) -> (Tensor, Tensor, Tensor)");
  m.def(
      "relu_kan_layer(Tensor x, Tensor low, Tensor high, Tensor weight, Tensor? bias, "
      "bool tanh, bool out_t=False) -> Tensor");
  m.def(
      "s_kan_layer(Tensor x, Tensor alpha, int[] spaces, int grid, int k, Tensor weight, "
      "Tensor? bias, bool tanh, bool out_t=False) -> Tensor");
  m.def(
      "af_reduce_t(Tensor ut, Tensor low, Tensor high, Tensor w, int act, int func, int mode) "
      "-> Tensor[]");
  m.def(
      "af_kan_reduce(Tensor x, Tensor low, Tensor high, Tensor w, int act, int func, int mode, "
      "bool tanh) -> Tensor[]");
  m.def("all_finite(Tensor[] tensors) -> bool");
  m.def("isa() -> str", isa);
}

TORCH_LIBRARY_IMPL(actlab_kan, CPU, m) {
  m.impl("relu_basis_t", relu_basis_t);
  m.impl("relu_basis_t_bwd", relu_basis_t_bwd);
  m.impl("s_basis_t", s_basis_t);
  m.impl("s_basis_t_bwd", s_basis_t_bwd);
  m.impl("relu_kan_layer", relu_kan_layer_plain);
  m.impl("s_kan_layer", s_kan_layer_plain);
  m.impl("af_reduce_t", af_reduce_t);
  m.impl("af_kan_reduce", af_kan_reduce_plain);
  m.impl("all_finite", all_finite);
}

TORCH_LIBRARY_IMPL(actlab_kan, Autograd, m) {
  m.impl("relu_kan_layer", relu_kan_layer_autograd);
  m.impl("s_kan_layer", s_kan_layer_autograd);
  m.impl("af_kan_reduce", af_kan_reduce_autograd);
}
