// ReLU-KAN and S-KAN: the basis kernels in the (in G, N) layout and the differentiable layer
// ops (forward: basis + one GEMM; backward: one GEMM, one kernel pass, one GEMM). Formulas
// and layout: kan_kernels.cpp.

#include "kan_common.h"

namespace actlab_kan {

// ----------------------------------------------------------------------------- ReLU-KAN
// Bt (in G, N) from ut (in, N) and the phases low, high (in, G), nodes i0 .. i1. The row loops
// here and below are functions of their arguments, not parallel lambdas' bodies: a lambda's
// captures by reference are reloaded from memory after every store (see s_rows).
template <typename T>
void relu_fwd_rows(int64_t i0, int64_t i1, const T* ut, const T* lo, const T* hi, T* bt,
                   int64_t G, int64_t N) {
  using V = Vectorized<T>;
  constexpr int64_t S = V::size();
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
        const V r = at::vec::clamp_min(x - vl, zero) * at::vec::clamp_min(vh - x, zero) * vc;
        (r * r).store(out + n);
      }
      if (n < N) {
        const V x = V::loadu(u + n, N - n);
        const V r = at::vec::clamp_min(x - vl, zero) * at::vec::clamp_min(vh - x, zero) * vc;
        (r * r).store(out + n, N - n);
      }
    }
  }
}

template <typename T>
void relu_fwd_kernel(const T* ut, const T* lo, const T* hi, T* bt, int64_t nin, int64_t G,
                     int64_t N) {
  at::parallel_for(0, nin, grain_nodes(G * N), [&](int64_t i0, int64_t i1) {
    relu_fwd_rows<T>(i0, i1, ut, lo, hi, bt, G, N);
  });
}

// One pass: Bt again (if bt), gut = du (times 1 - u^2 with tanh; if gut), and the phase sums
// glo, ghi (in, G) (if glo).
template <typename T>
void relu_bwd_rows(int64_t i0, int64_t i1, const T* ut, const T* gbt, const T* lo, const T* hi,
                   T* bt, T* gut, T* glo, T* ghi, bool tanh, int64_t G, int64_t N) {
  using V = Vectorized<T>;
  constexpr int64_t S = V::size();
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
        const V a = at::vec::clamp_min(x - vl[j], zero), b = at::vec::clamp_min(vh[j] - x, zero);
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
}

template <typename T>
void relu_bwd_kernel(const T* ut, const T* gbt, const T* lo, const T* hi, T* bt, T* gut, T* glo,
                     T* ghi, bool tanh, int64_t nin, int64_t G, int64_t N) {
  at::parallel_for(0, nin, grain_nodes(G * N), [&](int64_t i0, int64_t i1) {
    relu_bwd_rows<T>(i0, i1, ut, gbt, lo, hi, bt, gut, glo, ghi, tanh, G, N);
  });
}

void check_phases(const at::Tensor& ut, const at::Tensor& lo, const at::Tensor& hi, const char* op) {
  TORCH_CHECK(lo.dim() == 2 && lo.size(0) == ut.size(0) && lo.is_contiguous() && hi.is_contiguous(),
              op, ": low and high must be contiguous (in, G) tensors with in = ", ut.size(0));
  check_like(lo, ut, lo.sizes(), op, "low");
  check_like(hi, ut, lo.sizes(), op, "high");
}

// ws: the result in the per-thread scratch (slot 0; the layer ops, whose GEMM consumes it)
at::Tensor relu_basis_impl(const at::Tensor& ut, const at::Tensor& lo, const at::Tensor& hi,
                           bool ws) {
  check_ut(ut, "relu_basis_t");
  check_phases(ut, lo, hi, "relu_basis_t");
  const int64_t nin = ut.size(0), N = ut.size(1), G = lo.size(1);
  auto bt = ws ? scratch(0, {nin * G, N}, ut) : at::empty({nin * G, N}, ut.options());
  AT_DISPATCH_FLOATING_TYPES(ut.scalar_type(), "relu_basis_t", [&] {
    relu_fwd_kernel<scalar_t>(ut.data_ptr<scalar_t>(), lo.data_ptr<scalar_t>(),
                              hi.data_ptr<scalar_t>(), bt.data_ptr<scalar_t>(), nin, G, N);
  });
  return bt;
}

at::Tensor relu_basis_t(const at::Tensor& ut, const at::Tensor& lo, const at::Tensor& hi) {
  return relu_basis_impl(ut, lo, hi, false);
}

// (bt, gut, glo, ghi); each undefined unless asked for. ws: bt in the scratch (slot 1).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> relu_basis_bwd_impl(
    const at::Tensor& ut, const at::Tensor& gbt_, const at::Tensor& lo, const at::Tensor& hi,
    bool tanh, bool need_basis, bool need_u, bool need_phases, bool ws) {
  check_ut(ut, "relu_basis_t_bwd");
  check_phases(ut, lo, hi, "relu_basis_t_bwd");
  const int64_t nin = ut.size(0), N = ut.size(1), G = lo.size(1);
  check_like(gbt_, ut, {nin * G, N}, "relu_basis_t_bwd", "the basis gradient");
  auto gbt = gbt_.contiguous();
  at::Tensor bt, gut, glo, ghi;
  if (need_basis) bt = ws ? scratch(1, {nin * G, N}, ut) : at::empty({nin * G, N}, ut.options());
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

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> relu_basis_t_bwd(
    const at::Tensor& ut, const at::Tensor& gbt, const at::Tensor& lo, const at::Tensor& hi,
    bool tanh, bool need_basis, bool need_u, bool need_phases) {
  return relu_basis_bwd_impl(ut, gbt, lo, hi, tanh, need_basis, need_u, need_phases, false);
}

// ----------------------------------------------------------------------------- S-KAN spaces
// The constants of the pool for one (grid, k, dtype), built with the torch path's own ops.
template <typename T>
struct Pool {
  int64_t grid, k, G;
  std::vector<T> knots;      // grid + 2k + 1 uniform knots (bspline)
  std::vector<T> inv_ph;     // 1 / (p h) for p = 1 .. k (the torch path divides by p h)
  T h;                       // the knot spacing 2 / grid
  std::vector<T> centres;    // G rbf centres (linspace)
  T rbf_inv_w;               // 1 / rbf width (the torch path divides by the width)
  std::vector<T> rbf_q;      // exp(-(2 i + 1)), i = 0 .. G / 2: the rbf recurrence's steps
  std::vector<T> rlo, rhi, rc;  // relu phases (G) and 4 / (high - low)^2
  Pool(int64_t grid_, int64_t k_, at::ScalarType dt) : grid(grid_), k(k_), G(grid_ + k_) {
    const double h = 2.0 / static_cast<double>(grid);
    this->h = static_cast<T>(h);
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
    rbf_q.resize(G / 2 + 1);
    for (size_t i = 0; i < rbf_q.size(); ++i) rbf_q[i] = static_cast<T>(std::exp(-(2.0 * i + 1.0)));
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

// The spaces hand each function's value B_j (and derivative D_j, with DERIV) to emit(j, B_j,
// D_j) as soon as it is computed, in whatever order suits the space (rbf goes outwards from its
// middle centre), instead of writing arrays B[0..G), D[0..G) for the caller to read back: the
// caller accumulates on the spot, so the values stay in registers (the arrays were spilled to
// the stack and reloaded, ~2 memory operations per value).

// The G Gaussians exp(-z_j^2), z_j = (x - c_j) / w, from three exponentials instead of G: the
// centres are uniform with spacing w, so z_j = z_m - (j - m) around the middle centre m = G / 2
// and B_j+1 = B_j R exp(-(2 (j - m) + 1)), B_j-1 = B_j / R exp(-(2 (m - j) + 1)) with
// R = exp(2 z_m). B_m and R take fast_exp (inline; the 1-ulp exp is a library call that cost
// a sixth of the pool's kernel time). Each step's rounding adds about an ulp. Measured against
// float64 Gaussians on [-1, 1], float32, G = 8 (16): max abs error 1.3e-6 (3.4e-6), max
// relative 6.0e-6 (1.4e-5) at the smallest values; the 1-ulp exp gave 0.9e-6 (2.7e-6) and
// 5.8e-6 (1.4e-5). Used when every
// lane has |z_m| <= 8 (inputs within about G / 2 + 8 widths of the middle: every tanh-normalised
// input; NaN lanes propagate through B_m), so nothing overflows or underflows early; returns
// false (nothing emitted) otherwise, and the caller evaluates each Gaussian directly.
template <typename T, bool DERIV, typename Emit>
inline bool rbf_chain(const Pool<T>& P, const Vectorized<T>& x, int64_t G, Emit&& emit) {
  using V = Vectorized<T>;
  if (G < 3) return false;
  const int64_t m = G / 2;
  const V inv_w(P.rbf_inv_w), dz(T(-2) * P.rbf_inv_w);
  const V zm = (x - V(P.centres[m])) * inv_w;
  if ((zm.abs() > V(T(8))).zero_mask() != (1 << V::size()) - 1) return false;
  auto put = [&](int64_t j, const V& b) {  // D_j = -2 z_j / w B_j, as the direct formula
    emit(j, b, DERIV ? (x - V(P.centres[j])) * inv_w * dz * b : b);
  };
  const V Bm = fast_exp((zm * zm).neg());
  const V R = fast_exp(zm + zm), Ri = V(T(1)) / R;
  put(m, Bm);
  V bj = Bm;
  for (int64_t j = m; j + 1 < G; ++j) put(j + 1, bj = bj * (R * V(P.rbf_q[j - m])));
  bj = Bm;
  for (int64_t j = m; j > 0; --j) put(j - 1, bj = bj * (Ri * V(P.rbf_q[m - j])));
  return true;
}

// Uniform cubic B-splines in closed form: B_j is the cardinal cubic B-spline centred on knot
// j + 2, a function of r = |t|, t = (x - knot_j+2) / h, with a = max(2 - r, 0):
//   B_j  = 2/3 - r^2 (1 - r/2)   for r < 1,   a^3 / 6 otherwise (0 from r = 2 on)
//   B_j' = sign(t) r (3r/2 - 2) / h   for r < 1,   -sign(t) a^2 / (2 h) otherwise
// (the Cox-de Boor recurrence's values, rounded differently; both pieces stay below 1 in
// magnitude before the constant, so rounding errors stay at a few 1e-8). ~14 vector operations
// per function and 5 more for its derivative, where locating x's interval and blending the four
// pieces into each B_j cost ~35. NaN and +-inf give NaN, as the recurrence (0 * inf) does.
template <typename T, bool DERIV, typename Emit>
inline void bspline_cubic(const Pool<T>& P, const Vectorized<T>& x, int64_t G, Emit&& emit) {
  using V = Vectorized<T>;
  const V zero(T(0)), one(T(1)), two(T(2)), half(T(0.5)), three_half(T(1.5));
  const V sixth(T(1) / T(6)), two_thirds(T(2) / T(3));
  const V inv_h(P.inv_ph[1]), sign_bit(T(-0.0));
  const V nanx = x - x;  // 0, or NaN for NaN / inf inputs
  for (int64_t j = 0; j < G; ++j) {
    const V t = (x - V(P.knots[j + 2])) * inv_h;  // signed distance to the centre, in knots
    const V r = t.abs();
    const V a = at::vec::clamp_min(two - r, zero), a2 = a * a;
    const V inner = r < one;  // all bits set where r < 1 (clear for NaN)
    const V r2 = r * r;
    const V b = V::blendv(a2 * a * sixth, two_thirds - r2 * (one - half * r), inner) + nanx;
    if constexpr (DERIV) {
      const V dr = V::blendv(-(half * a2), r * (three_half * r - two), inner);  // dB / dr
      emit(j, b, ((dr * inv_h) ^ (t & sign_bit)) + nanx);
    } else {
      emit(j, b, b);
    }
  }
}

// Every value (and derivative, with DERIV) of space sp at x, handed to emit(j, B_j, D_j) (D_j
// unspecified without DERIV). tmp, dtmp: scratch of grid + 2k vectors (the B-spline recurrence
// of orders other than 3). B-splines and rbf multiply by 1 / (p h) and 1 / w where the torch
// path divides (within an ulp; a division costs several multiplications here).
// GRID, KK > 0: the grid and order fixed at compile time (the default 5, 3: loops of constant
// length the compiler unrolls and keeps in registers); 0: read from P.
template <typename T, int GRID, int KK, bool DERIV, typename Emit>
inline void space_emit(int64_t sp, const Pool<T>& P, const Vectorized<T>& x, Vectorized<T>* tmp,
                       Vectorized<T>* dtmp, Emit&& emit) {
  using V = Vectorized<T>;
  const int64_t K = GRID ? KK : P.k;
  const int64_t G = GRID ? GRID + KK : P.G;
  switch (sp) {
    case kBspline: {
      if constexpr (KK == 3) {  // cubic on uniform knots: closed form (bspline_cubic)
        bspline_cubic<T, DERIV>(P, x, G, emit);
        break;
      }
      const int64_t m = G + K;  // order-0 functions: grid + 2k
      for (int64_t j = 0; j < m; ++j) tmp[j] = x.ge(V(P.knots[j])) * x.lt(V(P.knots[j + 1]));
      for (int64_t p = 1; p <= K; ++p) {
        if (DERIV && p == K) {  // uniform knots: B'_j,k = (B_j,k-1 - B_j+1,k-1) / h
          const V inv_h(P.inv_ph[1]);
          for (int64_t j = 0; j < G; ++j) dtmp[j] = (tmp[j] - tmp[j + 1]) * inv_h;
        }
        const V inv(P.inv_ph[p]);
        for (int64_t j = 0; j < m - p; ++j) {
          const V lft = (x - V(P.knots[j])) * inv, rgt = (V(P.knots[j + p + 1]) - x) * inv;
          tmp[j] = lft * tmp[j] + rgt * tmp[j + 1];
        }
      }
      for (int64_t j = 0; j < G; ++j) {
        // piecewise constant (k = 0): no derivative (the torch path has no graph)
        emit(j, tmp[j], DERIV && K > 0 ? dtmp[j] : V(T(0)));
      }
      break;
    }
    case kRbf: {
      if (!rbf_chain<T, DERIV>(P, x, G, emit)) {
        const V inv_w(P.rbf_inv_w), dz(T(-2) * P.rbf_inv_w);
        for (int64_t j = 0; j < G; ++j) {
          const V z = (x - V(P.centres[j])) * inv_w;
          const V b = fast_exp((z * z).neg());  // 20 ulp in float: enters sums with other spaces
          emit(j, b, DERIV ? (x - V(P.centres[j])) * inv_w * dz * b : b);
        }
      }
      break;
    }
    case kChebyshev: {
      V tp(T(1)), dp(T(0));  // T_0, T_0'
      emit(0, tp, dp);
      if (G > 1) {
        V tc = x, dc(T(1));  // T_1, T_1'
        emit(1, tc, dc);
        const V x2 = V(T(2)) * x;
        for (int64_t j = 2; j < G; ++j) {
          const V tn = x2 * tc - tp;
          if constexpr (DERIV) {
            const V dn = V(T(2)) * tc + x2 * dc - dp;
            dp = dc, dc = dn;
          }
          tp = tc, tc = tn;
          emit(j, tc, dc);
        }
      }
      break;
    }
    default: {  // relu, fixed phases
      const V zero(T(0));
      for (int64_t j = 0; j < G; ++j) {
        const V vc(P.rc[j]);
        const V a = at::vec::clamp_min(x - V(P.rlo[j]), zero);
        const V b = at::vec::clamp_min(V(P.rhi[j]) - x, zero);
        const V r = a * b * vc;
        emit(j, r * r, DERIV ? V(T(2)) * r * vc * (b - a) : r);
      }
    }
  }
}

// phit (in G, N) = sum_p alpha_ip B^p(ut_i) for nodes i0 .. i1 (spaces with alpha = 0
// skipped); backward (gbt given): phit again (if phit), gut, galpha (in, P). A function, not the
// body of the parallel lambda: its arguments are values the kernel's stores cannot alias, where
// a lambda's captures by reference would be reloaded from memory after every store (measured:
// the single-space forward at half the speed of the ReLU-KAN kernel on the same formula).
template <typename T, int GRID, int KK, bool BWD, bool DERIV>
void s_rows(int64_t i0, int64_t i1, const T* ut, const T* alpha, const int64_t* spaces,
            int64_t np, const Pool<T>& P, const T* gbt, T* phit, T* gut, T* galpha, bool tanh,
            int64_t N) {
  using V = Vectorized<T>;
  constexpr int64_t S = V::size();
  const int64_t G = GRID ? GRID + KK : P.G;
  const int64_t scratch = P.grid + 2 * P.k;
  constexpr int64_t kFixed = GRID ? GRID + 2 * KK : 1;  // compile-time sizes when fixed
  std::vector<V> tv(GRID ? 0 : scratch), dv(GRID ? 0 : scratch), av(GRID ? 0 : G);
  std::vector<V> gvv(GRID ? 0 : G);
  V tf[kFixed], df[kFixed], af[kFixed], gf[kFixed];
  V* gv = GRID ? gf : gvv.data();
  V* tmp = GRID ? tf : tv.data();
  V* dtmp = GRID ? df : dv.data();
  V* acc = GRID ? af : av.data();
  std::vector<LaneSum<T>> sa(galpha ? np : 0);
  const V one(T(1));
  for (int64_t i = i0; i < i1; ++i) {
    const T* u = ut + i * N;
    for (auto& s : sa) s = LaneSum<T>();
    for (int64_t n = 0; n < N; n += S) {
      const int64_t c = std::min<int64_t>(S, N - n);
      const V x = V::loadu(u + n, c);
      V du(T(0));
      bool first = true;
      if constexpr (BWD) {  // the basis gradient of this node and rows, loaded once for all spaces
        for (int64_t j = 0; j < G; ++j) gv[j] = V::loadu(gbt + (i * G + j) * N + n, c);
      }
      for (int64_t p = 0; p < np; ++p) {
        const T a = alpha[i * np + p];
        if (a == T(0) && !galpha) continue;
        const V va(a);
        const bool f0 = first;
        V ga(T(0)), gd(T(0));
        space_emit<T, GRID, KK, DERIV>(spaces[p], P, x, tmp, dtmp,
                                       [&](int64_t j, const V& b, const V& d) {
          if (!BWD || phit) acc[j] = f0 ? b * va : acc[j] + b * va;  // phi += B alpha (torch's order)
          if constexpr (BWD) {
            if constexpr (DERIV) gd = gd + gv[j] * d;
            if (galpha) ga = ga + gv[j] * b;
          }
        });
        first = false;
        if constexpr (BWD) {
          if constexpr (DERIV) du = du + va * gd;  // alpha_ip sum_j g_j B^p_j'
          if (galpha) sa[p].add(head(ga, c));
        }
      }
      if (phit) {
        for (int64_t j = 0; j < G; ++j) {
          (first ? V(T(0)) : acc[j]).store(phit + (i * G + j) * N + n, c);
        }
      }
      if constexpr (DERIV) {
        if (tanh) du = du * (one - x * x);
        du.store(gut + i * N + n, c);
      }
    }
    for (int64_t p = 0; p < static_cast<int64_t>(sa.size()); ++p) {
      galpha[i * np + p] = static_cast<T>(sa[p].value());
    }
  }
}

template <typename T, int GRID = 0, int KK = 0>
void s_kernel(const T* ut, const T* alpha, const std::vector<int64_t>& spaces, const Pool<T>& P,
              const T* gbt, T* phit, T* gut, T* galpha, bool tanh, int64_t nin, int64_t N) {
  const int64_t G = GRID ? GRID + KK : P.G, np = static_cast<int64_t>(spaces.size());
  const int64_t* sp = spaces.data();
  TORCH_CHECK(gbt || !gut, "s_kan kernel: the input gradient needs the basis gradient");
  auto rows = !gbt ? s_rows<T, GRID, KK, false, false>
              : gut ? s_rows<T, GRID, KK, true, true>
                    : s_rows<T, GRID, KK, true, false>;
  at::parallel_for(0, nin, grain_nodes(G * N * np), [&](int64_t i0, int64_t i1) {
    rows(i0, i1, ut, alpha, sp, np, P, gbt, phit, gut, galpha, tanh, N);
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

at::Tensor s_basis_impl(const at::Tensor& ut, const at::Tensor& alpha_, at::IntArrayRef spaces,
                        int64_t grid, int64_t k, bool ws) {
  check_ut(ut, "s_basis_t");
  auto sp = check_pool(ut, alpha_, spaces, grid, k, "s_basis_t");
  auto alpha = alpha_.contiguous();
  const int64_t nin = ut.size(0), N = ut.size(1), G = grid + k;
  auto phit = ws ? scratch(0, {nin * G, N}, ut) : at::empty({nin * G, N}, ut.options());
  AT_DISPATCH_FLOATING_TYPES(ut.scalar_type(), "s_basis_t", [&] {
    const auto& P = pool_of<scalar_t>(grid, k, ut.scalar_type());
    auto run = grid == 5 && k == 3 ? s_kernel<scalar_t, 5, 3> : s_kernel<scalar_t>;
    run(ut.data_ptr<scalar_t>(), alpha.data_ptr<scalar_t>(), sp, P, nullptr,
        phit.data_ptr<scalar_t>(), nullptr, nullptr, false, nin, N);
  });
  return phit;
}

at::Tensor s_basis_t(const at::Tensor& ut, const at::Tensor& alpha, at::IntArrayRef spaces,
                     int64_t grid, int64_t k) {
  return s_basis_impl(ut, alpha, spaces, grid, k, false);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> s_basis_bwd_impl(
    const at::Tensor& ut, const at::Tensor& gbt_, const at::Tensor& alpha_, at::IntArrayRef spaces,
    int64_t grid, int64_t k, bool tanh, bool need_basis, bool need_u, bool need_alpha, bool ws) {
  check_ut(ut, "s_basis_t_bwd");
  auto sp = check_pool(ut, alpha_, spaces, grid, k, "s_basis_t_bwd");
  auto alpha = alpha_.contiguous();
  const int64_t nin = ut.size(0), N = ut.size(1), G = grid + k;
  check_like(gbt_, ut, {nin * G, N}, "s_basis_t_bwd", "the basis gradient");
  auto gbt = gbt_.contiguous();
  at::Tensor phit, gut, galpha;
  if (need_basis) {
    phit = ws ? scratch(1, {nin * G, N}, ut) : at::empty({nin * G, N}, ut.options());
  }
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

std::tuple<at::Tensor, at::Tensor, at::Tensor> s_basis_t_bwd(
    const at::Tensor& ut, const at::Tensor& gbt, const at::Tensor& alpha, at::IntArrayRef spaces,
    int64_t grid, int64_t k, bool tanh, bool need_basis, bool need_u, bool need_alpha) {
  return s_basis_bwd_impl(ut, gbt, alpha, spaces, grid, k, tanh, need_basis, need_u, need_alpha,
                          false);
}

at::Tensor relu_kan_layer_plain(const at::Tensor& x, const at::Tensor& lo, const at::Tensor& hi,
                                const at::Tensor& w, const std::optional<at::Tensor>& bias,
                                bool tanh, bool out_t) {
  auto ut = transposed_input(x, tanh);
  return project(relu_basis_impl(ut, lo, hi, true), w, bias, x, out_t);
}

// tau > 0: `alpha` holds the mixing logits and the weights are softmax(logits / tau) over
// the spaces (the full and selective phases), computed here instead of as torch ops: a few
// values per node, where each ATen call costs microseconds. As softmax: (logits / tau) rounded
// to the dtype, minus the row's maximum, exp, over the row's sum.
at::Tensor mixing(const at::Tensor& alpha, double tau) {
  if (!(tau > 0)) return alpha;
  const auto a = alpha.contiguous();
  auto out = at::empty_like(a);
  const int64_t rows = a.size(0), P = a.size(1);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "s_kan mixing", [&] {
    const scalar_t* pa = a.data_ptr<scalar_t>();
    scalar_t* po = out.data_ptr<scalar_t>();
    const scalar_t t = static_cast<scalar_t>(tau);
    for (int64_t i = 0; i < rows; ++i) {
      scalar_t m = -std::numeric_limits<scalar_t>::infinity();
      for (int64_t p = 0; p < P; ++p) m = std::max(m, pa[i * P + p] / t);
      scalar_t sum = 0;
      for (int64_t p = 0; p < P; ++p) sum += (po[i * P + p] = std::exp(pa[i * P + p] / t - m));
      for (int64_t p = 0; p < P; ++p) po[i * P + p] /= sum;
    }
  });
  return out;
}

// The mixing's backward: dlogits = w (dw - sum_p w dw) / tau per node (w: the weights).
at::Tensor mixing_grad(const at::Tensor& w, const at::Tensor& gw, double tau) {
  if (!(tau > 0)) return gw;
  const auto wc = w.contiguous(), gc = gw.contiguous();
  auto out = at::empty_like(wc);
  const int64_t rows = wc.size(0), P = wc.size(1);
  AT_DISPATCH_FLOATING_TYPES(wc.scalar_type(), "s_kan mixing grad", [&] {
    const scalar_t *pw = wc.data_ptr<scalar_t>(), *pg = gc.data_ptr<scalar_t>();
    scalar_t* po = out.data_ptr<scalar_t>();
    const scalar_t t = static_cast<scalar_t>(tau);
    for (int64_t i = 0; i < rows; ++i) {
      scalar_t dot = 0;
      for (int64_t p = 0; p < P; ++p) dot += pw[i * P + p] * pg[i * P + p];
      for (int64_t p = 0; p < P; ++p) po[i * P + p] = pw[i * P + p] * (pg[i * P + p] - dot) / t;
    }
  });
  return out;
}

// clock, chosen, prune_at: the schedule (autograd only; ignored here, where no backward runs)
at::Tensor s_kan_layer_plain(const at::Tensor& x, const at::Tensor& alpha, at::IntArrayRef spaces,
                             int64_t grid, int64_t k, const at::Tensor& w,
                             const std::optional<at::Tensor>& bias, bool tanh, bool out_t,
                             double tau, const std::optional<at::Tensor>& /*clock*/,
                             const std::optional<at::Tensor>& /*chosen*/, int64_t /*prune_at*/) {
  auto ut = transposed_input(x, tanh);
  return project(s_basis_impl(ut, mixing(alpha, tau), spaces, grid, k, true), w, bias, x, out_t);
}

// The weight and bias gradients and the input gradient's (..., in) view of gut (in, N).
void finish_grads(variable_list& out, const at::Tensor& gy2, const at::Tensor& bt,
                  const at::Tensor& gut, AutogradContext* ctx, size_t w_edge, size_t w_slot,
                  bool has_bias, const std::vector<int64_t>& xshape) {
  if (gut.defined()) out[0] = gut.t().reshape(xshape);
  if (ctx->needs_input_grad(w_edge)) out[w_slot] = weight_grad(bt, gy2);  // (out, in G)
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
    return project(relu_basis_impl(ut, lo, hi, true), w, bias, x, out_t);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    no_double_backward("relu_kan");
    auto saved = ctx->get_saved_variables();
    const auto &ut = saved[0], &lo = saved[1], &hi = saved[2], &w = saved[3];
    const bool has_bias = ctx->saved_data["bias"].toBool();
    variable_list out(7);
    if (!grads[0].defined()) return out;
    auto gy2 = grads[0].reshape({-1, w.size(0)});  // (N, out)
    auto gbt = scratch(2, {w.size(1), gy2.size(0)}, ut);
    gemm_out(gbt, w.t(), gy2.t());  // (in G, N)
    const bool need_w = ctx->needs_input_grad(3);
    auto [bt, gut, glo, ghi] = relu_basis_bwd_impl(
        ut, gbt, lo, hi, ctx->saved_data["tanh"].toBool(), need_w, ctx->needs_input_grad(0),
        ctx->needs_input_grad(1) || ctx->needs_input_grad(2), true);
    if (ctx->needs_input_grad(1)) out[1] = glo;
    if (ctx->needs_input_grad(2)) out[2] = ghi;
    finish_grads(out, gy2, bt, gut, ctx, 3, 3, has_bias, ctx->saved_data["xshape"].toIntVector());
    return out;
  }
};

// The schedule's clock (SKANLayer.step, given while the layer trains unpruned): each backward
// pass through the layer adds one, and the pass that brings it to prune_at (>= 0) prunes, chosen =
// argmax of the logits (alpha, with tau > 0), as SKANLayer.prune, before any optimizer step.
// In C++ rather than a Python tensor hook (which, with its registration, cost ~60 us per layer
// and step).
void tick_schedule(AutogradContext* ctx) {
  auto it = ctx->saved_data.find("clock");
  if (it == ctx->saved_data.end()) return;
  at::NoGradGuard no_grad;
  auto clock = it->second.toTensor();
  clock.add_(1);
  const int64_t prune_at = ctx->saved_data["prune_at"].toInt();
  if (prune_at >= 0 && *clock.data_ptr<int64_t>() >= prune_at) {  // an int64 CPU scalar
    auto chosen = ctx->saved_data["chosen"].toTensor();
    chosen.copy_(ctx->saved_data["logits"].toTensor().argmax(-1));
  }
}

struct SKANFunction : public torch::autograd::Function<SKANFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& alpha,
                            const at::Tensor& w, const std::optional<at::Tensor>& bias,
                            std::vector<int64_t> spaces, int64_t grid, int64_t k, bool tanh,
                            bool out_t, double tau, const std::optional<at::Tensor>& clock,
                            const std::optional<at::Tensor>& chosen, int64_t prune_at) {
    auto ut = transposed_input(x, tanh);
    const auto mix = mixing(alpha, tau);  // (in, P)
    if (clock.has_value() && clock->defined()) {
      TORCH_CHECK(clock->numel() == 1 && clock->scalar_type() == at::kLong,
                  "s_kan_layer: clock must be an int64 scalar tensor");
      TORCH_CHECK(prune_at < 0 || (tau > 0 && chosen.has_value() && chosen->defined() &&
                                    chosen->scalar_type() == at::kLong &&
                                    chosen->numel() == alpha.size(0)),
                  "s_kan_layer: pruning at the clock needs tau > 0 (alpha: the logits) and an "
                  "int64 chosen tensor with one entry per input");
      ctx->saved_data["clock"] = *clock;
      ctx->saved_data["prune_at"] = prune_at;
      if (prune_at >= 0) {
        ctx->saved_data["chosen"] = *chosen;
        ctx->saved_data["logits"] = alpha;
      }
    }
    ctx->save_for_backward({ut, mix, w});
    ctx->saved_data["tau"] = tau;
    ctx->saved_data["tanh"] = tanh;
    ctx->saved_data["bias"] = bias.has_value() && bias->defined();
    ctx->saved_data["xshape"] = x.sizes().vec();
    ctx->saved_data["spaces"] = spaces;
    ctx->saved_data["grid"] = grid;
    ctx->saved_data["k"] = k;
    return project(s_basis_impl(ut, mix, spaces, grid, k, true), w, bias, x, out_t);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    no_double_backward("s_kan");
    auto saved = ctx->get_saved_variables();
    const auto &ut = saved[0], &alpha = saved[1], &w = saved[2];
    const bool has_bias = ctx->saved_data["bias"].toBool();
    variable_list out(13);
    if (!grads[0].defined()) return out;
    tick_schedule(ctx);
    // edges: x 0, alpha 1, w 2, bias 3 (if given)
    const bool need_w = ctx->needs_input_grad(2);
    auto gy2 = grads[0].reshape({-1, w.size(0)});
    auto gbt = scratch(2, {w.size(1), gy2.size(0)}, ut);
    gemm_out(gbt, w.t(), gy2.t());  // (in G, N)
    auto spaces = ctx->saved_data["spaces"].toIntVector();
    auto [phit, gut, galpha] = s_basis_bwd_impl(
        ut, gbt, alpha, spaces, ctx->saved_data["grid"].toInt(), ctx->saved_data["k"].toInt(),
        ctx->saved_data["tanh"].toBool(), need_w, ctx->needs_input_grad(0),
        ctx->needs_input_grad(1), true);
    if (ctx->needs_input_grad(1)) {
      const double tau = ctx->saved_data["tau"].toDouble();
      // softmax's backward: dlogits = alpha (dalpha - sum_p alpha dalpha) / tau
      out[1] = mixing_grad(alpha, galpha, tau);
    }
    finish_grads(out, gy2, phit, gut, ctx, 2, 2, has_bias, ctx->saved_data["xshape"].toIntVector());
    return out;
  }
};

at::Tensor relu_kan_layer_autograd(const at::Tensor& x, const at::Tensor& lo, const at::Tensor& hi,
                                   const at::Tensor& w, const std::optional<at::Tensor>& bias,
                                   bool tanh, bool out_t) {
  return ReLUKANFunction::apply(x, lo, hi, w, bias, tanh, out_t);
}

at::Tensor s_kan_layer_autograd(const at::Tensor& x, const at::Tensor& alpha,
                                at::IntArrayRef spaces, int64_t grid, int64_t k,
                                const at::Tensor& w, const std::optional<at::Tensor>& bias,
                                bool tanh, bool out_t, double tau,
                                const std::optional<at::Tensor>& clock,
                                const std::optional<at::Tensor>& chosen, int64_t prune_at) {
  return SKANFunction::apply(x, alpha, w, bias, spaces.vec(), grid, k, tanh, out_t, tau, clock,
                             chosen, prune_at);
}

}  // namespace actlab_kan
