// AF-KAN's phases from per-call Chebyshev series (the series path): float32, u = tanh(x) in
// [-1, 1] (the layer's default input_norm), func_norm "batch" or "none", at least
// kSeriesMinValues inputs; anything else takes the exact kernels (kan_af.cpp), and so does a
// call with a NaN input or with phases whose series do not converge (below).
//
// Every phase function f_j(u) = func(act(u - l_j), act(h_j - u)) depends on the scalar u alone,
// and so do the two contractions the layer needs, s0(u) = sum_j w_j f_j(u), s1(u) = sum_j f_j(u).
// For act SiLU or GELU these are analytic in a strip around [-1, 1] (SiLU's nearest poles lie pi
// off the real axis), so their Chebyshev series converge geometrically: with the default phases
// degree 16 leaves a relative error of 3e-10 (SiLU) / 9e-9 (GELU), degree 24 below 2e-14.
//
// Series (per call, in double): f_j, pa_j = f_a act'(u - l_j) and pb_j = f_b act'(h_j - u) at
// the kChebMax + 1 Chebyshev nodes give each function's coefficients up to degree kChebMax; a
// sum is cut at the smallest degree D whose dropped coefficients add up to at most kChebTol of
// the series' scale (sum |c_d|), and a series whose last coefficients are above that has not
// converged: the call takes the exact kernels.
//
// Forward (af_layer_fwd, kan_af.cpp): the tail evaluates s0 and s1 of every input as
// sum_d c_d T_d(u) (T_d by their recurrence, shared by both sums; four nodes interleaved) where
// it would read them, so they are never written (memory traffic, not arithmetic, bounds these
// passes: out of cache one thread moves ~12 GB/s here). AVX-512 and AVX2 builds evaluate the
// pieces instead (kan_af.h: per-cell polynomials fitted to the series here, piece_table, kept
// where they reproduce it within kPieceTol of its scale); once the min / max are known, pieces
// of the softmax's numerators E - 1 = expm1(e - c) and s1n stand in for s0's and s1's where the
// exponent's range allows (softmax_tables: no exp, max or scale per value). The min / max of f
// over the tensor are those of the exact values, from candidates (af_series_extremes, below): a
// table of f_j and f_j' on K + 1 knots (K: the op's `knots` at most; from the phases' own
// series) bounds every f_j on every cell of width 2 / K (from 512 cells only where a coarse
// table of K / 8 cells says the min / max can lie: two_level_flags); one pass over the inputs
// keeps those in cells that can reach the min / max, which are evaluated exactly with their
// partials; the ties (the pairs equal to the min or the max, with those partials) are saved for
// the backward. With a backward to come the forward fits the backward's series too
// (af_series(..., true)) and the layer op keeps them in its autograd context: one fit per step.
//
// Backward: the tail's backward evaluates s0, s1 again and, instead of writing gs0, gs1, adds
// du = (gs0 s0'(u) + gs1 s1'(u)) (1 - u^2) from the derivative series (or their pieces) and
// the moments M_d = sum gs T_d(u) (d <= Dm; T_d by T_d+1 = 2 u T_d - T_d-1, lane sums per row
// vector into double per chunk, chunks added in order: independent of the thread count). The
// phase gradients
//   dl_j = -sum gf pa_j(u),  dh_j = sum gf pb_j(u),  dw_j = sum gs0 f_j(u),  gf = gs0 w_j + gs1,
// are sums over inputs of a gradient times a function of u with the series sum_d p_d T_d(u), so
// each is sum_d p_d M_d (af_series_grads). Those series (pa_j, pb_j, f_j) are cut at kMomTol =
// 1e-7 of their scale, not kChebTol: what they drop is below the moments' own float32 sums
// (GELU at the default phases: Dm 15 instead of 18, ~2 % of a D 64 block step on an AVX2 CPU;
// the test errors against float64 moved by at most ~20 % of themselves, within their bound).
// The forward's ties share the min / max gradient (af_add_ties) with the partials the forward
// computed alongside their values. The tail's sums weighted by s0n (the low / high and the
// temperature gradients) come from the same moments (s0_sum), so the forward keeps no s0n.

#include "kan_af.h"

#include <atomic>
#include <memory>

namespace actlab_kan {

constexpr int64_t kChebMax = 32;      // the series' largest degree
constexpr double kChebTol = 1e-9;     // the dropped coefficients' share of the scale
constexpr double kMomTol = 1e-7;     // the same for the phase gradients' series (below)
constexpr double kPieceTol = 1e-8;    // a piece's largest miss of its series, of the scale
constexpr double kSlopeTol = 1e-6;    // the same for the slopes' pieces (degree kSlopeDeg)
// The softmax's pieces (softmax_tables) apply where the exponent's range over [-1, 1] is at most
// kSoftmaxRange (below).
constexpr double kSoftmaxRange = 2.0;
constexpr int64_t kSeriesGrain = 8192;  // inputs per parallel task of the candidate pass
constexpr int64_t kRangeStride = 8;     // u_range reads every 8th vector (a hint; see there)

using VF = Vectorized<float>;
using VI = Vectorized<int32_t>;
constexpr int64_t kS = VF::size();

void check_knots(int64_t knots, const char* op) {
  TORCH_CHECK(knots == 0 || (knots >= 16 && knots <= 32768), op,
              ": knots must be in 16 .. 32768 (or 0: the exact kernels), got ", knots);
}

bool af_series_applies(const at::Tensor& ut, int64_t mode, bool tanh, int64_t knots) {
  return knots > 0 && tanh && mode != 1 && ut.scalar_type() == at::kFloat &&
         ut.numel() >= kSeriesMinValues;
}

// f_j, pa_j, pb_j and f_j' = pa_j - pb_j of every phase j at the points u, (G, M) each (double);
// row(v, j)[m] is point m. (knot_table_series fills f and df alone: what the bounds use.)
struct PhaseTable {
  int64_t G = 0, M = 0, K = 0;  // K: cells, when the points are the knots -1 + 2 m / K
  std::vector<double> f, pa, pb, df;
  std::vector<int64_t> at;  // knots: point m is knot at[m] (empty: knot m)
  int64_t knot(int64_t m) const { return at.empty() ? m : at[m]; }
  const double* row(const std::vector<double>& v, int64_t j) const { return v.data() + j * M; }
};

PhaseTable phase_table(const at::Tensor& lo_p, const at::Tensor& hi_p, const std::vector<double>& u,
                       int64_t act, int64_t func) {
  using V = Vectorized<double>;
  PhaseTable T;
  T.G = lo_p.numel(), T.M = static_cast<int64_t>(u.size());
  std::vector<double> l(T.G), hh(T.G);  // the phases in double, without a conversion op
  AT_DISPATCH_FLOATING_TYPES(lo_p.scalar_type(), "phase_table", [&] {
    const auto lc = lo_p.contiguous(), hc = hi_p.contiguous();
    for (int64_t j = 0; j < T.G; ++j) {
      l[j] = static_cast<double>(lc.data_ptr<scalar_t>()[j]);
      hh[j] = static_cast<double>(hc.data_ptr<scalar_t>()[j]);
    }
  });
  const double *pl = l.data(), *ph = hh.data();
  std::vector<double> c;
  std::vector<char> ok;
  pair_consts(pl, ph, T.G, c, ok);
  T.f.resize(T.G * T.M), T.pa.resize(T.G * T.M), T.pb.resize(T.G * T.M), T.df.resize(T.G * T.M);
  for (int64_t j = 0; j < T.G; ++j) {
    for (int64_t m = 0; m < T.M; m += V::size()) {
      const int64_t cnt = std::min<int64_t>(V::size(), T.M - m);
      const V x = V::loadu(u.data() + m, cnt);
      V x1, x2, d1, d2, fa, fb;
      act_pair<double>(act, x - V(pl[j]), V(ph[j]) - x, c[j], ok[j], x1, x2, &d1, &d2);
      const V f = func_d<double>(func, x1, x2, &fa, &fb);
      f.store(T.f.data() + j * T.M + m, cnt);
      const V pa = fa * d1, pb = fb * d2;
      pa.store(T.pa.data() + j * T.M + m, cnt);
      pb.store(T.pb.data() + j * T.M + m, cnt);
      (pa - pb).store(T.df.data() + j * T.M + m, cnt);
    }
  }
  return T;
}

// The phases at the kChebMax + 1 Chebyshev nodes cos(pi (m + 1/2) / (kChebMax + 1)).
PhaseTable node_table(const at::Tensor& lo_p, const at::Tensor& hi_p, int64_t act, int64_t func) {
  const int64_t M = kChebMax + 1;
  std::vector<double> x(M);
  for (int64_t m = 0; m < M; ++m) x[m] = std::cos(M_PI * (static_cast<double>(m) + 0.5) / M);
  return phase_table(lo_p, hi_p, x, act, func);
}

// The phases at the K + 1 knots -1 + 2 k / K.
PhaseTable knot_table(const at::Tensor& lo_p, const at::Tensor& hi_p, int64_t K, int64_t act,
                      int64_t func) {
  std::vector<double> x(K + 1);
  for (int64_t k = 0; k <= K; ++k) x[k] = -1.0 + 2.0 * static_cast<double>(k) / K;
  PhaseTable T = phase_table(lo_p, hi_p, x, act, func);
  T.K = K;
  return T;
}

// A Chebyshev series on [-1, 1]: g(u) = sum_{d <= D} c_d T_d(u).
struct Series {
  std::array<double, kChebMax + 1> c{};  // a fixed array: ~40 series per call, no allocation
  double scale = 0.0;                    // sum |c_d|
};

// cos(pi d (m + 1/2) / M) at [m M + d] for d, m < M = kChebMax + 1 (built once).
const std::vector<double>& cheb_cosines() {
  static const std::vector<double> table = [] {
    const int64_t M = kChebMax + 1;
    std::vector<double> t(M * M);
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t d = 0; d < M; ++d) t[m * M + d] = std::cos(M_PI * d * (m + 0.5) / M);
    }
    return t;
  }();
  return table;
}

// The series of the function with values y at the nodes (y[m] at node m), up to kChebMax: each
// coefficient sums over the nodes in order; the loop runs over the degrees innermost (vectors).
Series fit(const double* y) {
  const int64_t M = kChebMax + 1;
  const std::vector<double>& cs = cheb_cosines();
  Series s;
  double* c = s.c.data();
  for (int64_t m = 0; m < M; ++m) {
    const double ym = y[m];
    const double* row = cs.data() + m * M;
    for (int64_t d = 0; d < M; ++d) c[d] += ym * row[d];
  }
  for (int64_t d = 0; d < M; ++d) {
    c[d] = (d == 0 ? 1.0 : 2.0) * c[d] / M;
    s.scale += std::abs(c[d]);
  }
  return s;
}

// The smallest degree whose dropped coefficients add up to at most kChebTol scale, or -1 when
// the last three coefficients alone are above that (not converged).
int64_t degree(const Series& s, double rel = kChebTol) {
  const double tol = rel * s.scale;
  double tail = 0.0;
  for (int64_t d = kChebMax; d >= kChebMax - 2; --d) tail += std::abs(s.c[d]);
  if (tail > tol) return -1;
  tail = 0.0;
  for (int64_t d = kChebMax; d > 0; --d) {
    tail += std::abs(s.c[d]);
    if (tail > tol) return d;
  }
  return 0;
}

// The derivative's series: c'_{d-1} = c'_{d+1} + 2 d c_d.
Series derivative(const Series& s) {
  Series r;
  for (int64_t d = kChebMax; d >= 1; --d) {
    r.c[d - 1] = (d + 1 <= kChebMax ? r.c[d + 1] : 0.0) + 2.0 * d * s.c[d];
  }
  r.c[0] *= 0.5;
  for (double v : r.c) r.scale += std::abs(v);
  return r;
}

// s0 = sum_j w_j f_j and s1 = sum_j f_j from the table's rows (values at its points).
void contractions(const PhaseTable& T, const float* w, std::vector<double>& y0,
                  std::vector<double>& y1) {
  y0.assign(T.M, 0.0), y1.assign(T.M, 0.0);
  for (int64_t j = 0; j < T.G; ++j) {
    const double* f = T.row(T.f, j);
    for (int64_t m = 0; m < T.M; ++m) y0[m] += static_cast<double>(w[j]) * f[m], y1[m] += f[m];
  }
}

// The values of the series c (degree D >= 1) at the n points x (T_d by their recurrence, in
// vectors).
void cheb_values(const double* c, int64_t D, const double* x, int64_t n, double* out) {
  using V = Vectorized<double>;
  for (int64_t m = 0; m < n; m += V::size()) {
    const int64_t cnt = std::min<int64_t>(V::size(), n - m);
    const V u = V::loadu(x + m, cnt), u2 = u + u;
    V tp(1.0), tc = u, acc = at::vec::fmadd(V(c[1]), u, V(c[0]));
    for (int64_t d = 2; d <= D; ++d) {
      const V tn = at::vec::fmsub(u2, tc, tp);
      tp = tc, tc = tn;
      acc = at::vec::fmadd(V(c[d]), tn, acc);
    }
    acc.store(out + m, cnt);
  }
}

// The pieces (kan_af.h) of the series s cut at degree D, as floats into out (P + 1 rows of
// kPieces, highest degree first): in each cell the interpolant at the P + 1 Chebyshev nodes of
// y, turned into powers of y. false when one misses the series by more than rel
// of its scale at y = -1, -1/2, 0, 1/2 or 1 (where the interpolation error peaks: the ends).
// map(v, n) may turn the series' values at the points into those of a function of them in place
// and return that function's scale (the tolerance's unit), or a negative number to give up.
template <int64_t P, typename Map>
bool piece_table(const Series& s, int64_t D, float* out, double rel, Map&& map) {
  if constexpr (kPieces == 0) {
    return false;
  } else {
    constexpr int64_t K = kPieces, M = P + 1, C = 5;
    // mono[d][q]: the coefficient of y^q in T_d(y)
    double mono[M][M] = {};
    mono[0][0] = 1.0;
    if (M > 1) mono[1][1] = 1.0;
    for (int64_t d = 2; d < M; ++d) {
      for (int64_t q = 0; q < M; ++q) {
        mono[d][q] = (q > 0 ? 2.0 * mono[d - 1][q - 1] : 0.0) - mono[d - 2][q];
      }
    }
    double yn[M], cs[M][M];  // the nodes and cos(pi d (m + 1/2) / M) at [d][m]
    for (int64_t m = 0; m < M; ++m) yn[m] = std::cos(M_PI * (m + 0.5) / M);
    for (int64_t d = 0; d < M; ++d) {
      for (int64_t m = 0; m < M; ++m) cs[d][m] = std::cos(M_PI * d * (m + 0.5) / M);
    }
    const double yc[C] = {-1.0, -0.5, 0.0, 0.5, 1.0};
    std::vector<double> x(K * (M + C)), v(K * (M + C));  // per cell: the nodes, the checks
    for (int64_t k = 0; k < K; ++k) {
      const double off = static_cast<double>(2 * k - K + 1);  // u = (y + off) / K
      for (int64_t m = 0; m < M; ++m) x[k * (M + C) + m] = (yn[m] + off) / K;
      for (int64_t m = 0; m < C; ++m) x[k * (M + C) + M + m] = (yc[m] + off) / K;
    }
    cheb_values(s.c.data(), D, x.data(), K * (M + C), v.data());
    const double scale = map(v.data(), K * (M + C));
    if (!(scale >= 0.0)) return false;
    const double tol = rel * scale;
    for (int64_t k = 0; k < K; ++k) {
      const double* vk = v.data() + k * (M + C);
      double b[M] = {};
      for (int64_t d = 0; d < M; ++d) {
        double a = 0.0;
        for (int64_t m = 0; m < M; ++m) a += vk[m] * cs[d][m];
        a *= (d == 0 ? 1.0 : 2.0) / M;
        for (int64_t q = 0; q < M; ++q) b[q] += a * mono[d][q];
      }
      for (int64_t m = 0; m < C; ++m) {
        double p = 0.0;
        for (int64_t q = P; q >= 0; --q) p = p * yc[m] + b[q];
        if (!(std::abs(p - vk[M + m]) <= tol)) return false;
      }
      for (int64_t q = 0; q < M; ++q) out[(P - q) * K + k] = static_cast<float>(b[q]);
    }
    return true;
  }
}

// The float coefficients of s0, s1 (and with slopes their derivatives) at one degree D: (2, D + 1)
// each, and their pieces (S.pt; empty where a piece misses its series); false when a series does
// not converge.
bool contraction_series(const PhaseTable& N, const float* w, bool slopes, AFSeries& S) {
  std::vector<double> y0, y1;
  contractions(N, w, y0, y1);
  Series s[2] = {fit(y0.data()), fit(y1.data())}, ds[2];
  int64_t D = 0;
  for (int q = 0; q < 2; ++q) {
    const int64_t d = degree(s[q]);
    if (d < 0) return false;
    D = std::max(D, d);
    if (slopes) {
      ds[q] = derivative(s[q]);
      if (degree(ds[q]) < 0) return false;
    }
  }
  D = std::max<int64_t>(D, 1);  // the evaluation starts at degree 1 (coefficients past: 0)
  S.D = S.Dd = D;
  S.cd.assign(2 * (D + 1), 0.0);  // in double: the softmax's pieces, the backward's s0 sums
  for (int q = 0; q < 2; ++q) std::copy_n(s[q].c.begin(), D + 1, S.cd.begin() + q * (D + 1));
  S.scale[0] = s[0].scale, S.scale[1] = s[1].scale;
  // the moments cover s0 to kMomTol of its scale (s0_sum), as the phase gradients' series
  if (slopes) S.Dm = degree(s[0], kMomTol);  // converged: it did at the stricter kChebTol
  auto& c = S.c;
  auto& dc = S.dc;
  c.assign(2 * (D + 1), 0.0f), dc.assign(2 * (D + 1), 0.0f);
  for (int q = 0; q < 2; ++q) {
    for (int64_t d = 0; d <= D; ++d) {
      c[q * (D + 1) + d] = static_cast<float>(s[q].c[d]);
      if (slopes) dc[q * (D + 1) + d] = static_cast<float>(ds[q].c[d]);
    }
  }
  if constexpr (kPieces > 0) {
    // the values' pieces, then the slopes': a miss drops that pair (the tail evaluates its
    // series), so the values take the same arithmetic with or without slopes
    constexpr int64_t T = AFSeries::kTable, TS = AFSeries::kSlopeTable;
    const int64_t nt = slopes ? 4 : 2;
    S.pt.assign(2 * T + (slopes ? 2 * TS : 0), 0.0f);
    for (int64_t q = 0; q < nt; ++q) {
      const auto same = [&](double*, int64_t) { return (q < 2 ? s[q] : ds[q - 2]).scale; };
      const bool ok = q < 2 ? piece_table<kPieceDeg>(s[q], D, S.pt.data() + q * T, kPieceTol, same)
                            : piece_table<kSlopeDeg>(ds[q - 2], D, S.pt.data() + 2 * T +
                                                     (q - 2) * TS, kSlopeTol, same);
      if (!ok) {
        S.pt.resize(q < 2 ? 0 : 2 * T);
        break;
      }
    }
  }
  return true;
}

// The knot table (f_j and f_j' at the K + 1 knots -1 + 2 k / K: what the bounds use) from their
// Chebyshev series, fitted on the node table N: ~2 G D multiply-adds per knot (one T_d
// recurrence serves 8 series) instead of 2 G act evaluations (double GELU's 1-ulp erf was ~a
// sixth of the min / max search). The series are cut at kChebTol of their scale, far inside the
// bounds' err (>= 1e-6 max |f|); a sign of f_j' the series gets wrong is one where f_j' is ~0,
// so the extremum it hides moves f by ~0 in that cell. nullopt when a series does not converge
// (narrow phases): then knot_table evaluates the phases themselves.
std::optional<PhaseTable> knot_table_series(const PhaseTable& N, int64_t K,
                                            std::vector<int64_t> at = {}) {
  using V = Vectorized<double>;
  constexpr int64_t L = V::size(), B = 8;  // B series per sweep: their sums stay in registers
  const int64_t G = N.G;
  std::vector<Series> ser;  // f_j and f_j' of each phase j
  ser.reserve(2 * G);
  int64_t D = 1;
  for (int64_t j = 0; j < G; ++j) {
    for (const auto* v : {&N.f, &N.df}) {
      ser.push_back(fit(N.row(*v, j)));
      const int64_t d = degree(ser.back());
      if (d < 0) return std::nullopt;
      D = std::max(D, d);
    }
  }
  PhaseTable T;
  T.G = G, T.M = at.empty() ? K + 1 : static_cast<int64_t>(at.size()), T.K = K;
  T.at = std::move(at);
  T.f.resize(G * T.M), T.df.resize(G * T.M);
  const int64_t Q = static_cast<int64_t>(ser.size());
  for (int64_t s0 = 0; s0 < Q; s0 += B) {
    const int64_t nb = std::min<int64_t>(B, Q - s0);
    double coef[B][kChebMax + 1] = {};  // zeros for the slots past Q
    for (int64_t b = 0; b < nb; ++b) {
      for (int64_t d = 0; d <= D; ++d) coef[b][d] = ser[s0 + b].c[d];
    }
    for (int64_t m = 0; m < T.M; m += L) {
      const int64_t cnt = std::min<int64_t>(L, T.M - m);
      double xs[L];
      for (int64_t q = 0; q < L; ++q) {
        const int64_t k = T.knot(std::min(m + q, T.M - 1));
        xs[q] = -1.0 + 2.0 * static_cast<double>(k) / static_cast<double>(K);
      }
      const V x = V::loadu(xs), x2 = x + x;
      V tp(1.0), tc = x, acc[B];  // T_0, T_1
      for (int64_t b = 0; b < B; ++b) acc[b] = at::vec::fmadd(V(coef[b][1]), x, V(coef[b][0]));
      for (int64_t d = 2; d <= D; ++d) {
        const V tn = at::vec::fmsub(x2, tc, tp);
        tp = tc, tc = tn;
        for (int64_t b = 0; b < B; ++b) acc[b] = at::vec::fmadd(V(coef[b][d]), tn, acc[b]);
      }
      for (int64_t b = 0; b < nb; ++b) {
        const int64_t q = s0 + b;  // series q: phase q / 2, f (even q) or f' (odd q)
        double* row = (q % 2 == 0 ? T.f.data() : T.df.data()) + (q / 2) * T.M;
        acc[b].store(row + m, cnt);
      }
    }
  }
  return T;
}

// The cell k (0 .. K - 1) of u in [-1, 1]: floor((u + 1) K / 2); NaN lanes get cell 0. Clamped
// before the conversion, whose truncation is then the floor (the clamped value is >= 0).
// (scale = K / 2, top = K - 1: a loop passes them hoisted)
inline VI cell_of(const VF& u, const VF& scale, const VF& top) {
  const VF kf = at::vec::clamp((u + VF(1.0f)) * scale, VF(0.0f), top);
  return at::vec::convert_to_int_of_same_size(VF::blendv(kf, VF(0.0f), kf.isnan()));
}
inline VI cell_of(const VF& u, int64_t K) {
  return cell_of(u, VF(0.5f * static_cast<float>(K)), VF(static_cast<float>(K - 1)));
}

// The bit mask of a vector's first c lanes.
inline int first_lanes(int64_t c) { return c >= kS ? (1 << kS) - 1 : (1 << c) - 1; }

// Whether any of the first c lanes of u is NaN.
inline bool any_nan(const VF& u, int64_t c) {
  return (~u.isnan().zero_mask() & first_lanes(c)) != 0;
}

// The table's bounds of each f_j on each cell, (G, K) each: its knot values, widened by
// h (|f_j'(u_k)| + |f_j'(u_k+1)|) where f_j' changes sign or is 0 there (f_j' is close to linear
// across a cell, so an extremum inside moves f_j by at most half that); err bounds how far the
// float32 values of the exact kernels may lie from the table's: 1e-6 max |f| here, raised by
// af_series_extremes to 4x the largest gap measured at the knots (float GELU's erf is good to
// 1.5e-7 absolute, which in its far tail is a large relative error). Vectors of cells; min and
// max as std::min / std::max (a NaN operand on the right is ignored), which the blends repeat.
struct CellBounds {
  std::vector<double> lower, upper;
  double err = 0.0;
};

using VD = Vectorized<double>;
constexpr int64_t kSD = VD::size();

// std::min(a, b) and std::max(a, b) of vectors: (b < a) ? b : a and (a < b) ? b : a.
inline VD min_std(const VD& a, const VD& b) { return VD::blendv(a, b, b < a); }
inline VD max_std(const VD& a, const VD& b) { return VD::blendv(a, b, a < b); }
// std::max of 0 and the lanes of v (the callers' lanes are >= 0: |.|).
inline double hmax_std(const VD& v) {
  double m[kSD], out = 0.0;
  v.store(m);
  for (int64_t q = 0; q < kSD; ++q) out = std::max(out, m[q]);
  return out;
}

// Bounds of the cells between consecutive points of T (cells, (G, M - 1); of width 2 / T.K):
// for a full table its K cells, for one of refined blocks (two_level_flags) also the spans
// between blocks, which its caller skips.
CellBounds cell_bounds(const PhaseTable& T) {
  const int64_t K = T.M - 1, G = T.G;  // K: here the cells of the table
  const VD h(2.0 / static_cast<double>(T.K)), zero(0.0);
  CellBounds B;
  B.lower.resize(G * K), B.upper.resize(G * K);
  VD fmax(0.0);
  for (int64_t j = 0; j < G; ++j) {
    const double *f = T.row(T.f, j), *df = T.row(T.df, j);
    for (int64_t k = 0; k < K; k += kSD) {
      const int64_t c = std::min<int64_t>(kSD, K - k);
      const VD d0 = VD::loadu(df + k, c), d1 = VD::loadu(df + k + 1, c);
      const VD f0 = VD::loadu(f + k, c), f1 = VD::loadu(f + k + 1, c);
      const VD turn = (d0 == zero) | (d1 == zero) | ((d0 > zero) ^ (d1 > zero));
      const VD slack = VD::blendv(zero, h * (d0.abs() + d1.abs()), turn);
      (min_std(f0, f1) - slack).store(B.lower.data() + j * K + k, c);
      (max_std(f0, f1) + slack).store(B.upper.data() + j * K + k, c);
      fmax = max_std(fmax, f0.abs());  // lanes past c: |0|, which changes nothing
    }
    fmax = max_std(fmax, VD(std::abs(f[K])));
  }
  B.err = 1e-6 * hmax_std(fmax) + static_cast<double>(std::numeric_limits<float>::min());
  return B;
}

// Which (cell, phase) pairs can hold a value within reach of lo_est / hi_est: flag (K, G) and
// per cell any (1.0f where some phase is flagged; floats, for a vector gather). A pair is
// flagged when its lower bound is <= near_lo or its upper bound >= near_hi (2 err + 1e-6 |est|
// inside the estimates); none is yet when built.
struct CellFlags {
  double lo_est = 0.0, hi_est = 0.0, near_lo = 0.0, near_hi = 0.0;
  int64_t G = 0;
  std::vector<char> flag;
  std::vector<float> any;
  std::vector<uint64_t> mask;  // G <= 64: each cell's flagged phases as bits
  CellFlags() = default;
  CellFlags(int64_t K, int64_t G_, double lo, double hi, double err)
      : lo_est(lo), hi_est(hi), near_lo(lo + 2.0 * err + 1e-6 * std::abs(lo)),
        near_hi(hi - 2.0 * err - 1e-6 * std::abs(hi)), G(G_), flag(K * G_, 0), any(K, 0.0f),
        mask(G_ <= 64 ? K : 0, 0) {}
  void set(int64_t k, int64_t j) {
    flag[k * G + j] = 1;
    any[k] = 1.0f;
    if (G <= 64) mask[k] |= uint64_t(1) << j;
  }
};

CellFlags cell_flags(const CellBounds& B, int64_t K, int64_t G, double lo_est, double hi_est) {
  CellFlags F(K, G, lo_est, hi_est, B.err);
  const VD near_lo(F.near_lo), near_hi(F.near_hi);
  for (int64_t j = 0; j < G; ++j) {
    for (int64_t k = 0; k < K; k += kSD) {
      const int64_t c = std::min<int64_t>(kSD, K - k);
      const VD hit = (VD::loadu(B.lower.data() + j * K + k, c) <= near_lo) |
                     (VD::loadu(B.upper.data() + j * K + k, c) >= near_hi);
      for (int set = ~hit.zero_mask() & first_lanes(c); set != 0; set &= set - 1) {
        F.set(k + __builtin_ctz(static_cast<unsigned>(set)), j);  // few: the flagged
      }
    }
  }
  return F;
}

// The inputs in flagged cells, ascending e: flat index, cell and value (kept here, so that the
// candidates' evaluation reads them in order instead of gathering them from the whole tensor).
struct Hits {
  std::vector<int64_t> e;
  std::vector<int32_t> k;
  std::vector<float> u;
  int64_t size() const { return static_cast<int64_t>(e.size()); }
  void clear() { e.clear(), k.clear(), u.clear(); }
  void append(const Hits& o) {
    e.insert(e.end(), o.e.begin(), o.e.end());
    k.insert(k.end(), o.k.begin(), o.k.end());
    u.insert(u.end(), o.u.begin(), o.u.end());
  }
};

// The hits of the vector at e (c lanes) with values u and cells k, given the cell flags any:
// one gather, then only the set lanes.
inline void collect_hits(const VF& u, const VI& k, const float* any, int64_t e, int64_t c,
                         Hits& hits) {
  int set = ~at::vec::gather<4>(any, k).zero_mask() & first_lanes(c);
  if (set == 0) return;
  int32_t kk[kS];
  float uu[kS];
  k.store(kk);
  u.store(uu);
  while (set != 0) {
    const int q = __builtin_ctz(static_cast<unsigned>(set));
    hits.e.push_back(e + q), hits.k.push_back(kk[q]), hits.u.push_back(uu[q]);
    set &= set - 1;
  }
}

// The hits of every input (ascending e), in parallel; false if an input is NaN. AVX-512 and
// AVX2 builds: hits_simd below; the portable build takes collect_hits (a gather of the flags,
// then only the set lanes).
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
#define ACTLAB_CELL_BITS 1
// The flags of K <= 1,024 cells as 1,024 bits: bit k % 32 of word k / 32 (K = 0: none).
inline std::array<uint32_t, 32> cell_words(const float* any, int64_t K) {
  std::array<uint32_t, 32> words{};
  for (int64_t q = 0; q < K; ++q) {
    if (any[q] != 0.0f) words[q >> 5] |= uint32_t(1) << (q & 31);
  }
  return words;
}
#if defined(CPU_CAPABILITY_AVX512)
// The words in two registers.
struct CellBits {
  __m512i lo, hi;
};
inline CellBits cell_bits(const uint32_t* w) {
  return {_mm512_loadu_si512(w), _mm512_loadu_si512(w + 16)};
}
// The lanes of k whose cell's bit is set: a permute picks each lane's word, a shift its bit.
inline uint32_t cell_test(const CellBits& b, const VI& kv) {
  const __m512i k = kv;
  const __m512i word = _mm512_permutex2var_epi32(b.lo, _mm512_srli_epi32(k, 5), b.hi);
  const __m512i bit = _mm512_srlv_epi32(word, _mm512_and_si512(k, _mm512_set1_epi32(31)));
  return _mm512_test_epi32_mask(bit, _mm512_set1_epi32(1));
}
// Packing a vector's set lanes to the front: vpcompressd / vcompressps in registers, stored
// whole (the memory form of the compress is several times slower).
struct Packer {
  __mmask16 m;
};
inline Packer packer(uint32_t set) { return {static_cast<__mmask16>(set)}; }
inline void pack_store(int32_t* dst, const VI& v, const Packer& p) {
  _mm512_storeu_si512(dst, _mm512_maskz_compress_epi32(p.m, v));
}
inline void pack_store(float* dst, const VF& v, const Packer& p) {
  _mm512_storeu_ps(dst, _mm512_maskz_compress_ps(p.m, v));
}
#else
// The words in four registers (AVX2 permutes pick from 8 words).
struct CellBits {
  __m256i r[4];
};
inline CellBits cell_bits(const uint32_t* w) {
  CellBits b;
  for (int q = 0; q < 4; ++q) {
    b.r[q] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 8 * q));
  }
  return b;
}
// Word w = k / 32 of each lane: four permutes (each reads w % 8) and two blends on bits 3 and
// 4 of w (moved to the sign bit, which blendv reads); then bit k % 32 shifted to the sign bit.
inline uint32_t cell_test(const CellBits& b, const VI& kv) {
  const __m256i k = kv;
  const __m256i w = _mm256_srli_epi32(k, 5);
  auto pick = [&](int q) { return _mm256_castsi256_ps(_mm256_permutevar8x32_epi32(b.r[q], w)); };
  const __m256 b3 = _mm256_castsi256_ps(_mm256_slli_epi32(w, 28));
  const __m256 b4 = _mm256_castsi256_ps(_mm256_slli_epi32(w, 27));
  const __m256 word = _mm256_blendv_ps(_mm256_blendv_ps(pick(0), pick(1), b3),
                                       _mm256_blendv_ps(pick(2), pick(3), b3), b4);
  const __m256i up =
      _mm256_sub_epi32(_mm256_set1_epi32(31), _mm256_and_si256(k, _mm256_set1_epi32(31)));
  return static_cast<uint32_t>(
      _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_sllv_epi32(_mm256_castps_si256(word), up))));
}
// Packing a vector's set lanes to the front: a permute by the lane indices of the mask (a
// table of 256 x 8), stored whole.
struct Packer {
  __m256i idx;
};
inline Packer packer(uint32_t set) {
  static const std::array<int32_t, 256 * 8> table = [] {
    std::array<int32_t, 256 * 8> t{};
    for (int m = 0; m < 256; ++m) {
      int q = 0;
      for (int l = 0; l < 8; ++l) {
        if ((m >> l) & 1) t[m * 8 + q++] = l;
      }
    }
    return t;
  }();
  return {_mm256_loadu_si256(reinterpret_cast<const __m256i*>(table.data() + set * 8))};
}
inline void pack_store(int32_t* dst, const VI& v, const Packer& p) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm256_permutevar8x32_epi32(v, p.idx));
}
inline void pack_store(float* dst, const VF& v, const Packer& p) {
  _mm256_storeu_ps(dst, _mm256_permutevar8x32_ps(v, p.idx));
}
#endif

// The lanes (of those in lanes) whose cell k is flagged: the bit table (bitmap), else a gather
// of the flags any.
inline uint32_t flagged(bool bitmap, const CellBits& bits, const float* any, const VI& k,
                        uint32_t lanes) {
  const uint32_t set = bitmap ? cell_test(bits, k)
                              : ~static_cast<uint32_t>(at::vec::gather<4>(any, k).zero_mask());
  return set & lanes;
}

// The set lanes of the vector at e (offsets e - e0, cells k, values u) packed into po, pk, pu
// at size; returns the new size.
inline int64_t pack_hits(uint32_t set, int64_t e, int64_t e0, const VI& k, const VF& u,
                         int32_t* po, int32_t* pk, float* pu, int64_t size) {
  const Packer p = packer(set);
  pack_store(po + size, VI::arange(0, 1) + VI(static_cast<int32_t>(e - e0)), p);
  pack_store(pk + size, k, p);
  pack_store(pu + size, u, p);
  return size + __builtin_popcount(set);
}

// Vectors v0 .. v1 (whole ones: v1 ends before the tensor's last partial vector) into po, pk,
// pu from size on, which have room for all their lanes; returns the new size. One loop per
// kind of flag test, its constants hoisted, nothing kept in memory across iterations.
template <bool kBits>
int64_t hits_run(const float* ut, int64_t v0, int64_t v1, int64_t e0, const float* any,
                 const CellBits& bits, const VF& scale, const VF& top, int32_t* po, int32_t* pk,
                 float* pu, int64_t size, uint32_t& nan) {
  const uint32_t all = static_cast<uint32_t>(first_lanes(kS));
  uint32_t bad = 0;
  for (int64_t v = v0; v < v1; ++v) {
    const VF u = VF::loadu(ut + v * kS);
    bad |= ~static_cast<uint32_t>(u.isnan().zero_mask());
    const VI k = cell_of(u, scale, top);
    size = pack_hits(flagged(kBits, bits, any, k, all), v * kS, e0, k, u, po, pk, pu, size);
  }
  nan |= bad & all;
  return size;
}

// One task's hits. For K <= 1,024 (the default) the flags are read per lane from CellBits (the
// gather they replace was about half of the pass with AVX-512; with AVX2 on a Zen 3 EPYC the
// gather and a scalar push per hit were ~55 % of the whole min / max search); finer cells keep
// the gather. Each vector's hits are packed in registers and stored whole into this thread's
// buffers (kept between calls), which are grown between blocks of vectors to hold a whole
// block; a partial last vector runs apart (masked). NaN lanes are gathered in a mask and tested
// once. Offsets are int32 from the task's first input (a task holds fewer than 2^31 inputs).
// Returns false on NaN.
bool hits_simd(const float* ut, int64_t n, int64_t v0, int64_t v1, const float* any, int64_t K,
               Hits& mine) {
  constexpr int64_t kBlock = 256;  // vectors between capacity checks
  const bool bitmap = K <= 1024;
  const auto words = cell_words(any, bitmap ? K : 0);
  const CellBits bits = cell_bits(words.data());
  const VF scale(0.5f * static_cast<float>(K)), top(static_cast<float>(K - 1));
  static thread_local std::vector<int32_t> off_buf, cell_buf;
  static thread_local std::vector<float> u_buf;
  int64_t size = 0;
  uint32_t nan = 0;
  const int64_t e0 = v0 * kS;
  const int64_t whole = std::min(v1, n / kS);  // vectors without a tail
  for (int64_t b = v0; b < v1; b += kBlock) {
    const int64_t b1 = std::min(v1, b + kBlock);
    const int64_t need = size + (b1 - b + 1) * kS;
    if (need > static_cast<int64_t>(off_buf.size())) {  // grows a few times per thread
      const int64_t cap = std::max<int64_t>(need, 2 * static_cast<int64_t>(off_buf.size()));
      off_buf.resize(cap), cell_buf.resize(cap), u_buf.resize(cap);
    }
    int32_t *po = off_buf.data(), *pk = cell_buf.data();
    float* pu = u_buf.data();
    const int64_t w1 = std::min(b1, whole);
    if (b < w1) {
      size = bitmap ? hits_run<true>(ut, b, w1, e0, any, bits, scale, top, po, pk, pu, size, nan)
                    : hits_run<false>(ut, b, w1, e0, any, bits, scale, top, po, pk, pu, size, nan);
    }
    if (w1 < b1) {  // the partial last vector
      const int64_t e = w1 * kS, c = n - e;
      const uint32_t lanes = static_cast<uint32_t>(first_lanes(c));
      const VF u = VF::loadu(ut + e, c);
      nan |= ~static_cast<uint32_t>(u.isnan().zero_mask()) & lanes;
      const VI k = cell_of(u, scale, top);
      size = pack_hits(flagged(bitmap, bits, any, k, lanes), e, e0, k, u, po, pk, pu, size);
    }
  }
  const int32_t *po = off_buf.data(), *pk = cell_buf.data();
  const float* pu = u_buf.data();
  mine.e.resize(size), mine.k.assign(pk, pk + size), mine.u.assign(pu, pu + size);
  for (int64_t q = 0; q < size; ++q) mine.e[q] = e0 + po[q];
  if (off_buf.size() > (size_t(1) << 20)) {  // a pathological call (most inputs hit): not kept
    std::vector<int32_t>().swap(off_buf), std::vector<int32_t>().swap(cell_buf);
    std::vector<float>().swap(u_buf);
  }
  return nan == 0;
}
#endif

bool hits_pass(const float* ut, int64_t n, int64_t K, const float* any, Hits& hits) {
  std::atomic<bool> nan{false};
  std::mutex mu;
  std::vector<std::pair<int64_t, Hits>> parts;  // per task, by first vector
  const int64_t vecs = (n + kS - 1) / kS;
  at::parallel_for(0, vecs, kSeriesGrain / kS, [&](int64_t v0, int64_t v1) {
    Hits mine;
    bool ok = true;
#if defined(ACTLAB_CELL_BITS)
    if ((v1 - v0) * kS < (int64_t(1) << 31)) {
      ok = hits_simd(ut, n, v0, v1, any, K, mine);
    } else
#endif
    {
      for (int64_t v = v0; v < v1; ++v) {
        const int64_t e = v * kS, cnt = std::min<int64_t>(kS, n - e);
        const VF u = VF::loadu(ut + e, cnt);
        ok = ok && !any_nan(u, cnt);
        collect_hits(u, cell_of(u, K), any, e, cnt, mine);
      }
    }
    if (!ok) nan = true;
    std::lock_guard<std::mutex> lock(mu);
    parts.emplace_back(v0, std::move(mine));
  });
  if (parts.size() == 1) {
    hits = std::move(parts[0].second);
  } else {
    std::sort(parts.begin(), parts.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    hits.clear();
    for (auto& p : parts) hits.append(p.second);
  }
  return !nan;
}

// The hits of the flagged cells in one more pass (the rare second look, below).
void scan_hits(const float* ut, int64_t n, int64_t K, const float* any, Hits& hits) {
  hits.clear();
  for (int64_t e = 0; e < n; e += kS) {
    const int64_t c = std::min<int64_t>(kS, n - e);
    const VF u = VF::loadu(ut + e, c);
    collect_hits(u, cell_of(u, K), any, e, c, hits);
  }
}

// The cells that hold an input (one scalar pass; the rare second look).
std::vector<char> occupied(const float* ut, int64_t n, int64_t K) {
  std::vector<char> occ(K, 0);
  int32_t kk[kS];
  for (int64_t e = 0; e < n; e += kS) {
    const int64_t c = std::min<int64_t>(kS, n - e);
    cell_of(VF::loadu(ut + e, c), K).store(kk);
    for (int64_t q = 0; q < c; ++q) occ[kk[q]] = 1;
  }
  return occ;
}

// The smallest and largest u of every stride-th vector (NaN lanes ignored: a NaN input leaves
// the series path anyway). af_series_extremes only takes the cells between them as hints (a
// narrower range costs a few more candidates, never a wrong min / max), so a sample does.
std::pair<float, float> u_range(const float* ut, int64_t n, int64_t stride) {
  const float inf = std::numeric_limits<float>::infinity();
  VF mn(inf), mx(-inf);
  for (int64_t e = 0; e < n; e += stride * kS) {
    const int64_t c = std::min<int64_t>(kS, n - e);
    const VF u = VF::loadu(ut + e, c);  // lanes past c: +-inf, so they change nothing
    mn = at::vec::minimum(mn, c >= kS ? u : VF::set(VF(inf), u, c));
    mx = at::vec::maximum(mx, c >= kS ? u : VF::set(VF(-inf), u, c));
  }
  float a[kS], b[kS];
  mn.store(a);
  mx.store(b);
  float lo = inf, hi = -inf;
  for (int64_t q = 0; q < kS; ++q) {
    if (!std::isnan(a[q])) lo = std::min(lo, a[q]);
    if (!std::isnan(b[q])) hi = std::max(hi, b[q]);
  }
  return {lo, hi};
}

// The exact f_j (and pa_j, pb_j if partials) of the n values u for every phase, in vectors of
// kS consecutive values (the same grouping every call: bit for bit the same results); visit(e, c,
// j, f, pa, pb) for the values e .. e + c - 1.
template <typename Fn>
void exact_phases(const float* u, int64_t n, const float* l, const float* h, int64_t G,
                  int64_t act, int64_t func, bool partials, Fn visit) {
  std::vector<float> cj;
  std::vector<char> ok;
  pair_consts(l, h, G, cj, ok);
  for (int64_t e = 0; e < n; e += kS) {
    const int64_t c = std::min<int64_t>(kS, n - e);
    const VF uv = VF::loadu(u + e, c);
    for (int64_t j = 0; j < G; ++j) {
      VF x1, x2, d1, d2, fa, fb;
      act_pair<float>(act, uv - VF(l[j]), VF(h[j]) - uv, cj[j], ok[j], x1, x2,
                      partials ? &d1 : nullptr, partials ? &d2 : nullptr);
      const VF f = func_d<float>(func, x1, x2, partials ? &fa : nullptr, partials ? &fb : nullptr);
      if (partials) {
        visit(e, c, j, f, fa * d1, fb * d2);
      } else {
        visit(e, c, j, f, f, f);
      }
    }
  }
}

// The largest |f_j(u_k) in float32 (the exact kernels' arithmetic) - f_j(u_k) in double| over
// the table's knots and phases.
double float_gap(const PhaseTable& T, const float* l, const float* h, int64_t act, int64_t func) {
  std::vector<float> uk(T.M);
  for (int64_t k = 0; k < T.M; ++k) {
    uk[k] = static_cast<float>(-1.0 + 2.0 * static_cast<double>(T.knot(k)) / T.K);
  }
  VD gap(0.0);  // std::max over the gaps, in double vectors (lanes past c: |0 - 0|)
  exact_phases(uk.data(), T.M, l, h, T.G, act, func, false,
               [&](int64_t e, int64_t c, int64_t j, const VF& f, const VF&, const VF&) {
                 float v[kS];
                 double dv[kS];
                 f.store(v);
                 for (int64_t q = 0; q < kS; ++q) dv[q] = static_cast<double>(v[q]);
                 const double* ref = T.row(T.f, j) + e;
                 for (int64_t q = 0; q < c; q += kSD) {
                   const int64_t cnt = std::min<int64_t>(kSD, c - q);
                   gap = max_std(gap, (VD::loadu(dv + q, cnt) - VD::loadu(ref + q, cnt)).abs());
                 }
               });
  return hmax_std(gap);
}

// The candidate (input, phase) pairs of the hits, grouped by phase (j ascending, then e
// ascending): a canonical order, so the ties below are always added in the same order. q: each
// pair's hit (its index in Hits), u: its input value (copied here, so that the evaluation reads
// its vectors in order); start: where phase j's pairs begin (G + 1). The buffers are left
// uninitialised (std::vector would zero them: that was most of this step's time).
struct Cands {
  std::vector<int64_t> start;
  std::unique_ptr<int32_t[]> q;
  std::unique_ptr<float[]> u;
  int64_t size() const { return start.back(); }
};

// The pairs, phase by phase: one pass over the hits per phase keeps those whose cell is flagged
// for it (AVX-512 / AVX2 with K <= 1,024 and G <= 64: the phase's flags as CellBits, built from the
// cells' phase masks, and compressed stores; else a gather of its flags). Hits number at most a
// few percent of the inputs.
Cands candidate_pairs(const Hits& H, const CellFlags& F, int64_t K, int64_t G) {
  Cands C;
  C.start.assign(G + 1, 0);
  const int64_t m = H.size();
  std::vector<int32_t> per_cell(K, 0);  // flagged phases per cell: the pairs' exact count
  for (int64_t k = 0; k < K; ++k) {
    if (G <= 64) {
      per_cell[k] = __builtin_popcountll(F.mask[k]);
    } else {
      for (int64_t j = 0; j < G; ++j) per_cell[k] += F.flag[k * G + j];
    }
  }
  int64_t total = 0;
  for (int64_t q = 0; q < m; ++q) total += per_cell[H.k[q]];
  C.q.reset(new int32_t[total + kS]);  // a vector spare: whole-vector stores
  C.u.reset(new float[total + kS]);
  int32_t* pq = C.q.get();
  float* pu = C.u.get();
  int64_t size = 0;
#if defined(ACTLAB_CELL_BITS)
  if (K <= 1024 && G <= 64) {
    std::vector<uint32_t> words(G * 32, 0);  // phase j's flags: words[32 j ..]
    for (int64_t k = 0; k < K; ++k) {
      for (uint64_t b = F.mask[k]; b != 0; b &= b - 1) {
        words[__builtin_ctzll(b) * 32 + (k >> 5)] |= uint32_t(1) << (k & 31);
      }
    }
    const VI iota = VI::arange(0, 1);
    const int64_t whole = m / kS * kS;  // whole vectors: plain loads (a load of c < kS lanes
                                        // goes through a stack copy: a store-forwarding stall)
    for (int64_t j = 0; j < G; ++j) {
      const CellBits bits = cell_bits(words.data() + 32 * j);
      auto one = [&](const VI& k, const VF& u, int64_t q, uint32_t lanes) {
        const uint32_t set = cell_test(bits, k) & lanes;
        const Packer p = packer(set);
        pack_store(pq + size, iota + VI(static_cast<int32_t>(q)), p);
        pack_store(pu + size, u, p);
        size += __builtin_popcount(set);
      };
      for (int64_t q = 0; q < whole; q += kS) {
        one(VI::loadu(H.k.data() + q), VF::loadu(H.u.data() + q), q,
            static_cast<uint32_t>(first_lanes(kS)));
      }
      if (whole < m) {  // lanes past m - whole: cell 0, masked off
        const int64_t c = m - whole;
        one(VI::loadu(H.k.data() + whole, c), VF::loadu(H.u.data() + whole, c), whole,
            static_cast<uint32_t>(first_lanes(c)));
      }
      C.start[j + 1] = size;
    }
    return C;
  }
#endif
  std::vector<float> col(K);
  for (int64_t j = 0; j < G; ++j) {
    for (int64_t k = 0; k < K; ++k) col[k] = F.flag[k * G + j] ? 1.0f : 0.0f;
    for (int64_t q = 0; q < m; q += kS) {
      const int64_t c = std::min<int64_t>(kS, m - q);
      const VI k = VI::loadu(H.k.data() + q, c);  // lanes past c: cell 0, masked off below
      for (int set = ~at::vec::gather<4>(col.data(), k).zero_mask() & first_lanes(c); set != 0;
           set &= set - 1) {
        const int64_t r = q + __builtin_ctz(static_cast<unsigned>(set));
        pq[size] = static_cast<int32_t>(r), pu[size] = H.u[r], ++size;
      }
    }
    C.start[j + 1] = size;
  }
  return C;
}

// The pairs as e G + j (int64; what the op af_series_extremes returns for the tests).
at::Tensor pair_codes(const Cands& C, const Hits& H, int64_t G) {
  auto out = at::empty({C.size()}, at::kLong);
  int64_t* po = out.data_ptr<int64_t>();
  for (int64_t j = 0; j < G; ++j) {
    for (int64_t q = C.start[j]; q < C.start[j + 1]; ++q) po[q] = H.e[C.q[q]] * G + j;
  }
  return out;
}

// The exact f, pa, pb of every candidate pair into f, pa, pb (in the candidates' order), phase by
// phase in vectors of kS of its inputs (the same vectors in every call: the same bits).
void eval_candidates(const Cands& C, int64_t G, const float* l, const float* h, int64_t act,
                     int64_t func, float* f, float* pa, float* pb) {
  for (int64_t j = 0; j < G; ++j) {
    const int64_t q0 = C.start[j], m = C.start[j + 1] - q0;
    exact_phases(C.u.get() + q0, m, l + j, h + j, 1, act, func, true,
                 [&](int64_t e, int64_t c, int64_t, const VF& fv, const VF& av, const VF& bv) {
                   fv.store(f + q0 + e, c);
                   av.store(pa + q0 + e, c);
                   bv.store(pb + q0 + e, c);
                 });
  }
}

// The smallest and largest of the n values f (candidate values: none is NaN, NaN inputs left
// before).
std::pair<float, float> min_max(const float* f, int64_t n) { return u_range(f, n, 1); }

// lo_est / hi_est over the cells ks .. ke (each flag set must contain the cells of every value
// within reach of lo, hi; see af_series_extremes); occ (the rare second look): only the cells
// that hold an input.
std::pair<double, double> estimates(const CellBounds& B, int64_t K, int64_t G, int64_t ks,
                                    int64_t ke, const char* occ) {
  const double inf = std::numeric_limits<double>::infinity();
  double lo = inf, hi = -inf;
  if (occ) {
    for (int64_t k = ks; k <= ke; ++k) {
      if (!occ[k]) continue;
      for (int64_t j = 0; j < G; ++j) {
        lo = std::min(lo, B.upper[j * K + k]);
        hi = std::max(hi, B.lower[j * K + k]);
      }
    }
    return {lo, hi};
  }
  VD vlo(inf), vhi(-inf);
  for (int64_t j = 0; j < G; ++j) {
    for (int64_t k = ks; k <= ke; k += kSD) {
      const int64_t c = std::min<int64_t>(kSD, ke + 1 - k);
      const VD up = VD::loadu(B.upper.data() + j * K + k, c);
      const VD lw = VD::loadu(B.lower.data() + j * K + k, c);
      vlo = min_std(vlo, c >= kSD ? up : VD::set(VD(inf), up, c));
      vhi = max_std(vhi, c >= kSD ? lw : VD::set(VD(-inf), lw, c));
    }
  }
  double a[kSD], b[kSD];
  vlo.store(a);
  vhi.store(b);
  for (int64_t q = 0; q < kSD; ++q) lo = std::min(lo, a[q]), hi = std::max(hi, b[q]);
  return {lo, hi};
}

std::optional<AFSeries> af_series(const at::Tensor& lo_p, const at::Tensor& hi_p,
                                  const at::Tensor& w, int64_t act, int64_t func, bool backward) {
  const auto lc = lo_p.contiguous(), hc = hi_p.contiguous(), wc = w.contiguous();
  auto nodes = std::make_shared<const PhaseTable>(node_table(lc, hc, act, func));
  const PhaseTable& N = *nodes;
  AFSeries S;
  if (!contraction_series(N, wc.data_ptr<float>(), backward, S)) return std::nullopt;
  S.nodes = std::move(nodes);
  if (!backward) return S;
  S.backward = true;
  const int64_t G = N.G;
  std::vector<Series> ser;
  ser.reserve(3 * G);
  for (int64_t j = 0; j < G; ++j) {
    for (const auto* v : {&N.pa, &N.pb, &N.f}) {
      ser.push_back(fit(N.row(*v, j)));
      const int64_t d = degree(ser.back(), kMomTol);
      if (d < 0) return std::nullopt;
      S.Dm = std::max(S.Dm, d);
    }
  }
  const int64_t D1 = S.Dm + 1;  // (S.Dm started at s0's degree: contraction_series)
  S.pa.resize(G * D1), S.pb.resize(G * D1), S.pf.resize(G * D1);
  for (int64_t j = 0; j < G; ++j) {
    for (int64_t d = 0; d < D1; ++d) {
      S.pa[j * D1 + d] = ser[3 * j].c[d];
      S.pb[j * D1 + d] = ser[3 * j + 1].c[d];
      S.pf[j * D1 + d] = ser[3 * j + 2].c[d];
    }
  }
  return S;
}

double s0_sum(const AFSeries& S, const std::vector<double>& M0) {
  TORCH_CHECK(M0.size() == static_cast<size_t>(S.Dm + 1) && S.backward,
              "af_kan_layer: the moments do not match the series");
  // s0's coefficients past Dm are below kMomTol of its scale (af_series). The constant terms
  // (c0_0 - lo_cw) M0_0 are left out: M0_0 = sum gs0n / span is 0 but for rounding (the softmax's
  // gs0n sum to 0 over each row's nodes, as its a sum to 1), and c0_0 can be large against s0's
  // variation (a peaked f): with them the low / high gradients' errors grew ~3x in the accuracy
  // cases; without, C = sum gs0n (s0n - const), the softmax's own shift invariance.
  double C = 0.0;
  for (int64_t d = std::min(S.D, S.Dm); d >= 1; --d) C += S.cd[d] * M0[d];
  return C;
}

bool softmax_tables(const AFSeries& S, const SoftmaxScale& q, float* out) {
  if constexpr (kPieces == 0) {
    return false;
  } else {
    Series s[2];
    for (int k = 0; k < 2; ++k) {
      std::copy_n(S.cd.begin() + k * (S.D + 1), S.D + 1, s[k].c.begin());
      s[k].scale = S.scale[k];
    }
    const double il = 1.0 / q.span;
    // s0 -> E - 1 = expm1(e - c), e = (s0n + b) / t, c the middle of e's range at the points.
    // Pieces of E itself (~1) missed it by a constant per cell: its constant coefficient's
    // float rounding (~3e-8 of E, the same for every input of a cell, so it does not average
    // out: the low / high gradients' errors grew ~3x in the accuracy cases). E - 1 is small
    // where e's range is (|E - 1| <= e^(R / 2) - 1, R <= kSoftmaxRange), its coefficients'
    // rounding with it: the tail adds the 1 (rounded once per value). Within kPieceTol of
    // max |E - 1|: at R = 2 <= 4.6e-8 of each E (>= e^-1), at R = 0.2 (the default phases,
    // T = sqrt(in)) ~1e-9.
    const auto expo = [&](double* v, int64_t n) {
      double hi = -std::numeric_limits<double>::infinity(), lo = -hi;
      for (int64_t m = 0; m < n; ++m) {
        v[m] = ((v[m] - q.lo * q.cw) * il + q.b) * q.it;
        hi = std::max(hi, v[m]), lo = std::min(lo, v[m]);
      }
      if (!(hi - lo <= kSoftmaxRange)) return -1.0;  // (NaN: no)
      const double c = 0.5 * (hi + lo);
      double big = 0.0;
      for (int64_t m = 0; m < n; ++m) {
        v[m] = std::expm1(v[m] - c);
        big = std::max(big, std::abs(v[m]));
      }
      return std::max(big, 1e-6);  // (a flat E: its pieces within 1e-14)
    };
    const auto scaled = [&](double* v, int64_t n) {  // s1 -> s1n
      for (int64_t m = 0; m < n; ++m) v[m] = (v[m] - q.lo * static_cast<double>(q.G)) * il;
      return S.scale[1] * il;
    };
    constexpr int64_t T = AFSeries::kTable;
    return piece_table<kPieceDeg>(s[0], S.D, out, kPieceTol, expo) &&
           piece_table<kPieceDeg>(s[1], S.D, out + T, kPieceTol, scaled);
  }
}

// The cell flags of the two-level table (af_series_extremes): a coarse table of K / kRefine
// cells, whose bounds flag the coarse cells that can reach the min / max, then the K-cell
// table's knots inside those alone (kRefine + 1 per flagged coarse cell), whose bounds flag the
// fine cells. err is twice the coarse table's (1e-6 max |f|, 4x its largest float gap), and
// the fine knots must stay within it (else nullopt: the caller takes the whole fine table).
// lo_est = min(the fine estimate, the coarse one) (hi_est likewise): an unrefined coarse cell's
// values lie above lo_est0 + err >= lo_est + err, a refined but unflagged fine pair's above
// lower - err > lo_est + err, so af_series_extremes' acceptance test holds as for one level.
// ks, ke: fine cells. Against one level at K = 1,024 (inputs tanh(1.2 N(0, 1)), default
// phases): 129 coarse knots, 32 of 128 coarse cells refined (288 fine knots instead of 1,025),
// 42 fine cells flagged instead of 36; the op 148 -> 131 us at 137,088 inputs, 105 -> 85 us at
// 69,632 (GELU; best of 7 x 100 calls).
constexpr int64_t kRefine = 8;
std::optional<std::pair<CellFlags, double>> two_level_flags(const PhaseTable& nodes, int64_t K,
                                                            int64_t ks, int64_t ke,
                                                            const float* pl, const float* ph,
                                                            int64_t act, int64_t func) {
  const int64_t K0 = K / kRefine, G = nodes.G;
  std::optional<PhaseTable> T0 = knot_table_series(nodes, K0);
  if (!T0) return std::nullopt;
  CellBounds B0 = cell_bounds(*T0);
  const double err = 2.0 * std::max(B0.err, 4.0 * float_gap(*T0, pl, ph, act, func));
  B0.err = err;
  const auto [le0, he0] = estimates(B0, K0, G, ks / kRefine, ke / kRefine, nullptr);
  const CellFlags F0 = cell_flags(B0, K0, G, le0, he0);
  std::vector<int64_t> coarse, at;  // the flagged coarse cells; their fine knots, in blocks
  for (int64_t c = 0; c < K0; ++c) {
    if (F0.any[c] == 0.0f) continue;
    coarse.push_back(c);
    for (int64_t s = 0; s <= kRefine; ++s) at.push_back(c * kRefine + s);
  }
  if (coarse.empty()) return std::nullopt;
  std::optional<PhaseTable> T = knot_table_series(nodes, K, std::move(at));
  if (!T) return std::nullopt;
  const CellBounds B = cell_bounds(*T);  // (G, M - 1): cell r (kRefine + 1) + s is fine cell
                                         // coarse[r] kRefine + s for s < kRefine (s = kRefine:
                                         // a span between blocks, skipped)
  if (B.err > err || 4.0 * float_gap(*T, pl, ph, act, func) > err) return std::nullopt;
  const int64_t cells = T->M - 1;
  const double inf = std::numeric_limits<double>::infinity();
  double lo = inf, hi = -inf;
  for (int64_t r = 0; r < static_cast<int64_t>(coarse.size()); ++r) {
    for (int64_t s = 0; s < kRefine; ++s) {
      const int64_t k = coarse[r] * kRefine + s, q = r * (kRefine + 1) + s;
      if (k < ks || k > ke) continue;
      for (int64_t j = 0; j < G; ++j) {
        lo = std::min(lo, B.upper[j * cells + q]);
        hi = std::max(hi, B.lower[j * cells + q]);
      }
    }
  }
  CellFlags F(K, G, std::min(lo, le0), std::max(hi, he0), err);
  for (int64_t r = 0; r < static_cast<int64_t>(coarse.size()); ++r) {
    for (int64_t s = 0; s < kRefine; ++s) {
      const int64_t k = coarse[r] * kRefine + s, q = r * (kRefine + 1) + s;
      for (int64_t j = 0; j < G; ++j) {
        if (B.lower[j * cells + q] <= F.near_lo || B.upper[j * cells + q] >= F.near_hi) {
          F.set(k, j);
        }
      }
    }
  }
  return std::make_pair(std::move(F), err);
}

// The min / max candidates: with lo_est (hi_est) the smallest upper (largest lower) table bound
// over the cells between the smallest and the largest input, the pairs whose bounds come within
// 2 err + 1e-6 |est| of them are flagged, and one pass over the inputs keeps those in flagged
// cells; their exact values give lo_c, hi_c. If lo_c <= lo_est + err, every unflagged value
// (> lower - err > lo_est + err) is above lo_c, so lo = lo_c (likewise hi). Otherwise (a cell
// that reaches lo_est holds no input) the estimates are taken over the occupied cells alone,
// which some input does reach, and one more pass collects the hits. The first flags come from
// the two-level table where it applies (two_level_flags), else from the whole K-cell table;
// the second look always takes the whole table's bounds.
std::optional<AFExtremes> af_series_extremes(const at::Tensor& ut, const at::Tensor& lo_p,
                                             const at::Tensor& hi_p, int64_t act, int64_t func,
                                             int64_t knots, bool want_cand,
                                             const AFSeries* S) {
  const int64_t n = ut.numel(), G = lo_p.numel();  // knots: checked by the ops (check_knots)
  const auto lc = lo_p.contiguous(), hc = hi_p.contiguous();
  const float* pu = ut.data_ptr<float>();
  const float *pl = lc.data_ptr<float>(), *ph = hc.data_ptr<float>();
  // cells: knots at most, n / 64 (at least 256) below: the table costs G (K + 1) exact
  // evaluations, and coarser cells only add candidates where there are few inputs anyway. The
  // bounds assume f_j' turns at most once in a cell, and nearly linearly: a cell is at most an
  // eighth of the narrowest phase |h_j - l_j| wide (f_j's extrema lie about half a phase
  // apart), which may raise K; phases too narrow for 32,768 cells take the exact kernels.
  double wmin = std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < G; ++j) {
    wmin = std::min(wmin, std::abs(static_cast<double>(ph[j]) - static_cast<double>(pl[j])));
  }
  const double need = 16.0 / wmin;  // cells of width 2 / K <= wmin / 8
  if (!(need <= 32768.0)) return std::nullopt;
  const int64_t K = std::max(std::min(knots, std::max<int64_t>(256, n / 64)),
                             static_cast<int64_t>(std::ceil(need)));
  PhaseTable own;  // the nodes, unless the call's series brought them
  const PhaseTable* nodes = S && S->nodes ? S->nodes.get() : &(own = node_table(lc, hc, act, func));
  const auto [umin, umax] = u_range(pu, n, kRangeStride);
  const float ends[2] = {umin, umax};
  int32_t ce[kS];
  cell_of(VF::loadu(ends, 2), K).store(ce);  // the cells of the smallest and largest input
  const bool some = umin <= umax;  // false only if every sampled input is NaN
  const int64_t ks = some ? ce[0] : 0, ke = some ? ce[1] : K - 1;
  // the whole table (built when the two-level one does not apply or its test fails)
  std::optional<PhaseTable> T;
  CellBounds B;
  auto whole = [&]() {
    std::optional<PhaseTable> Ts = knot_table_series(*nodes, K);
    T = Ts ? std::move(*Ts) : knot_table(lc, hc, K, act, func);
    B = cell_bounds(*T);
    B.err = std::max(B.err, 4.0 * float_gap(*T, pl, ph, act, func));
    const auto [le, he] = estimates(B, K, G, ks, ke, nullptr);
    return cell_flags(B, K, G, le, he);
  };
  std::optional<std::pair<CellFlags, double>> two;
  // (K >= 512: at K = 256, 10,900 inputs, the coarse table saved less than it cost: 30 vs 33 us)
  if (K % kRefine == 0 && static_cast<double>(K / kRefine) >= need && K / kRefine >= 64) {
    two = two_level_flags(*nodes, K, ks, ke, pl, ph, act, func);
  }
  CellFlags F = two ? std::move(two->first) : whole();
  const double err = two ? two->second : B.err;
  Hits hits;
  if (!hits_pass(pu, n, K, F.any.data(), hits)) return std::nullopt;
  std::vector<float> fv, pav, pbv;  // every candidate's f and partials, for the ties below
  auto extremes = [&](const Cands& C) {
    const int64_t m = C.size();
    fv.resize(m), pav.resize(m), pbv.resize(m);
    eval_candidates(C, G, pl, ph, act, func, fv.data(), pav.data(), pbv.data());
    return min_max(fv.data(), m);
  };
  Cands C = candidate_pairs(hits, F, K, G);
  auto [l0, h0] = extremes(C);
  if (!(l0 <= F.lo_est + err && h0 >= F.hi_est - err)) {  // the second look
    // (on the whole table's bounds; where the two-level test failed, so did the whole
    // table's in 1,500 fuzzed calls of 132: it goes straight here)
    if (two) whole();
    const std::vector<char> occ = occupied(pu, n, K);
    auto [le2, he2] = estimates(B, K, G, 0, K - 1, occ.data());
    F = cell_flags(B, K, G, le2, he2);
    scan_hits(pu, n, K, F.any.data(), hits);
    C = candidate_pairs(hits, F, K, G);
    std::tie(l0, h0) = extremes(C);
  }
  // the ties, in the candidates' order (their partials computed with their values: the backward
  // shares glo / ghi among them without evaluating anything); a vector compare finds them
  std::vector<int64_t> tp;
  std::vector<float> tv;
  const VF vl(l0), vh(h0);
  for (int64_t j = 0; j < G; ++j) {
    for (int64_t q = C.start[j]; q < C.start[j + 1]; q += kS) {
      const int64_t c = std::min<int64_t>(kS, C.start[j + 1] - q);
      const VF f = VF::loadu(fv.data() + q, c);
      const int lo_set = f.eq(vl).zero_mask(), hi_set = f.eq(vh).zero_mask();  // bits: not equal
      int set = ~(lo_set & hi_set) & first_lanes(c);
      for (; set != 0; set &= set - 1) {
        const int r = __builtin_ctz(static_cast<unsigned>(set));
        const int which = ((lo_set >> r) & 1 ? 0 : 1) | ((hi_set >> r) & 1 ? 0 : 2);
        tp.push_back(hits.e[C.q[q + r]] * G + j);
        tv.insert(tv.end(), {static_cast<float>(which), pav[q + r], pbv[q + r]});
      }
    }
  }
  const int64_t m = static_cast<int64_t>(tp.size());
  auto tie_pairs = at::empty({m}, at::kLong), tie_vals = at::empty({m, 3}, at::kFloat);
  std::copy(tp.begin(), tp.end(), tie_pairs.data_ptr<int64_t>());
  std::copy(tv.begin(), tv.end(), tie_vals.data_ptr<float>());
  return AFExtremes{want_cand ? pair_codes(C, hits, G) : at::Tensor(), l0, h0, tie_pairs,
                    tie_vals};
}

std::vector<at::Tensor> af_series_grads(const at::Tensor& ut, const at::Tensor& w, int64_t act,
                                        int64_t func, int64_t mode, const AFSeries& S,
                                        const std::vector<double>& M0,
                                        const std::vector<double>& M1,
                                        const std::optional<at::Tensor>& glo_,
                                        const std::optional<at::Tensor>& ghi_,
                                        const at::Tensor& tie_pairs, const at::Tensor& tie_vals,
                                        float* pg, bool gut_rows) {
  const int64_t G = w.numel(), D1 = S.Dm + 1;
  const AFArgs A{ut.size(0), ut.size(1), G, act, func, mode, true};
  const auto wc = w.contiguous();
  const float* pw = wc.data_ptr<float>();
  const float* pu = ut.data_ptr<float>();
  std::vector<double> a(G, 0.0), b(G, 0.0), cw(G, 0.0);  // sum gf pa, sum gf pb, sum gs0 f
  for (int64_t j = 0; j < G; ++j) {
    const double wj = static_cast<double>(pw[j]);
    for (int64_t d = 0; d < D1; ++d) {
      const double gm = wj * M0[d] + M1[d];
      a[j] += gm * S.pa[j * D1 + d];
      b[j] += gm * S.pb[j * D1 + d];
      cw[j] += M0[d] * S.pf[j * D1 + d];
    }
  }
  const bool ties = mode == 0 && ((glo_.has_value() && glo_->defined()) ||
                                  (ghi_.has_value() && ghi_->defined()));
  if (ties && tie_pairs.numel() > 0) {
    auto given = [&](const std::optional<at::Tensor>& g) {
      return g.has_value() && g->defined() ? g->contiguous() : at::zeros({1}, ut.options());
    };
    const auto glo = given(glo_), ghi = given(ghi_);
    const int64_t* pc = tie_pairs.data_ptr<int64_t>();
    const float* pv = tie_vals.data_ptr<float>();
    std::vector<std::vector<Tie<float>>> tied(1);
    for (int64_t q = 0; q < tie_pairs.numel(); ++q) {
      const int64_t e = pc[q] / G;
      tied[0].push_back({e / A.N, e % A.N, pc[q] % G, static_cast<int>(pv[3 * q]),
                         pv[3 * q + 1], pv[3 * q + 2]});
    }
    af_add_ties<float>(tied, pu, glo.data_ptr<float>(), ghi.data_ptr<float>(), pg, a, b, A,
                       gut_rows);
  }
  auto opts = ut.options();
  at::Tensor gl = at::empty({G}, opts), gh = at::empty({G}, opts), gw = at::empty({G}, opts);
  for (int64_t j = 0; j < G; ++j) {
    gl.data_ptr<float>()[j] = static_cast<float>(-a[j]);
    gh.data_ptr<float>()[j] = static_cast<float>(b[j]);
    gw.data_ptr<float>()[j] = static_cast<float>(cw[j]);
  }
  return {gl, gh, gw};
}

// The op af_series_extremes (for tests): [candidates, lo, hi, tie_pairs, tie_vals] of ut (in, N),
// float32 in [-1, 1] (AFExtremes); an error for a NaN input or phases too narrow for the cells.
std::vector<at::Tensor> af_series_extremes_op(const at::Tensor& ut, const at::Tensor& lo_p,
                                              const at::Tensor& hi_p, int64_t act, int64_t func,
                                              int64_t knots) {
  check_ut(ut, "af_series_extremes");
  TORCH_CHECK(ut.scalar_type() == at::kFloat, "af_series_extremes: expected float32");
  TORCH_CHECK(act >= 0 && act <= 1 && func >= 0 && func <= 6,
              "af_series_extremes: act 0..1, func 0..6");
  TORCH_CHECK(knots >= 16 && knots <= 32768,
              "af_series_extremes: knots must be in 16 .. 32768, got ", knots);
  check_like(lo_p, ut, {lo_p.numel()}, "af_series_extremes", "low");
  check_like(hi_p, ut, {lo_p.numel()}, "af_series_extremes", "high");
  auto ex = af_series_extremes(ut, lo_p, hi_p, act, func, knots, true);
  TORCH_CHECK(ex.has_value(), "af_series_extremes: a NaN input, or phases too narrow");
  auto opts = ut.options();
  return {ex->cand, scalar_like({}, ex->lo, opts), scalar_like({}, ex->hi, opts), ex->tie_pairs,
          ex->tie_vals};
}

// The info ops' argument checks (op: the name in the messages).
void check_series_args(const at::Tensor& lo_p, const at::Tensor& hi_p, const at::Tensor& w,
                       int64_t act, int64_t func, const char* op) {
  TORCH_CHECK(lo_p.scalar_type() == at::kFloat && lo_p.device().is_cpu(), op,
              ": expected float32 CPU phases");
  check_like(hi_p, lo_p, {lo_p.numel()}, op, "high");
  check_like(w, lo_p, {lo_p.numel()}, op, "w");
  TORCH_CHECK(act >= 0 && act <= 1 && func >= 0 && func <= 6, op, ": act 0..1, func 0..6");
}

std::vector<int64_t> af_series_info_op(const at::Tensor& lo_p, const at::Tensor& hi_p,
                                       const at::Tensor& w, int64_t act, int64_t func,
                                       bool backward) {
  check_series_args(lo_p, hi_p, w, act, func, "af_series_info");
  const auto S = af_series(lo_p, hi_p, w, act, func, backward);
  if (!S) return {-1, -1, -1, 0, kPieces};
  const int64_t tables = S->piece_slopes() ? 4 : S->pieces() ? 2 : 0;
  return {S->D, S->Dd, S->Dm, tables, kPieces};
}

bool af_softmax_info_op(const at::Tensor& lo_p, const at::Tensor& hi_p, const at::Tensor& w,
                        int64_t act, int64_t func, int64_t mode, double lo, double hi, double b,
                        double temperature) {
  check_series_args(lo_p, hi_p, w, act, func, "af_softmax_info");
  TORCH_CHECK(mode == 0 || mode == 2, "af_softmax_info: mode 0 (batch) or 2 (none)");
  const auto S = af_series(lo_p, hi_p, w, act, func, false);
  if (!S) return false;
  const auto wc = w.contiguous();
  const float cw = weight_sum(wc.data_ptr<float>(), wc.numel());
  const float it = inv_temperature(static_cast<float>(temperature));
  std::vector<float> out(2 * AFSeries::kTable);
  return softmax_tables(*S, softmax_scale(mode, static_cast<float>(lo), static_cast<float>(hi), cw,
                                          static_cast<float>(b), it, lo_p.numel()),
                        out.data());
}

}  // namespace actlab_kan
