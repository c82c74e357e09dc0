// AF-KAN phase arithmetic shared by the exact kernels (kan_af.cpp) and the table-driven
// ones (kan_af_series.cpp): the acts, the phase pairs, the combinations, the ties.
#pragma once
#include "kan_common.h"

namespace actlab_kan {

// Rows per chunk: the unit of parallel work and of the ordered per-chunk sums. 64: a D 64
// block's 1,088 rows make 17 tasks (256 made 5: two threads split them 3 : 2, and no more
// than 5 threads ever had work).
constexpr int64_t kChunk = 64;

enum Act : int64_t { kSilu = 0, kGelu = 1 };

// act(v) and act'(v) in the operation order of ATen's vectorised kernels (the tail's act).
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

// float erf by Abramowitz-Stegun 7.1.26 (|error| < 1.5e-7; the formula ATen's AVX2 / AVX-512
// float erf evaluates), returning exp(-z^2) too: erf(z) = 1 - t P(t) exp(-z^2), t = 1 / (1 +
// p |z|). GELU's derivative needs phi(v) = exp(-v^2 / 2) / sqrt(2 pi), and with z = v / sqrt(2)
// that is the same exponential: one exp per GELU value and derivative instead of two.
inline Vectorized<float> erf_exp(const Vectorized<float>& z, Vectorized<float>& ez) {
  using V = Vectorized<float>;
  const V one(1.0f);
  const V t = fast_rcp(V(0.3275911f) * at::vec::minimum(z.abs(), V(1e18f)) + one);  // finite
  V r = V(1.061405429f) * t + V(-1.453152027f);
  r = r * t + V(1.421413741f);
  r = r * t + V(-0.284496736f);
  r = r * t + V(0.254829592f);
  ez = fast_exp((z * z).neg());
  const V e = one - r * t * ez;  // erf(|z|)
  return V::blendv(e, e.neg(), z < V(0.0f));
}

// The tail's act(q) (and act'(q) if d): float takes erf_exp for GELU and the fast exp and
// reciprocal for SiLU (exp(-q) capped at exp(80), where q sigmoid(q) is below 1e-33 anyway);
// double act_d. q is finite or NaN here (the normalised z with finite parameters; NaN stays).
template <typename T>
inline void tail_act(int64_t act, const Vectorized<T>& q, Vectorized<T>& y, Vectorized<T>* d) {
  if constexpr (std::is_same_v<T, float>) {
    using V = Vectorized<float>;
    const V one(1.0f);
    if (act == kGelu) {
      V ez;
      const V cdf = V(0.5f) * (one + erf_exp(q * V(0.7071067811865476f), ez));
      y = q * cdf;
      if (d) *d = cdf + q * V(0.3989422804014327f) * ez;
      return;
    }
    const V e1 = one + fast_exp(at::vec::minimum(q.neg(), V(80.0f)));  // 1 + exp(-q), finite
    const V sg = fast_rcp(e1);
    y = q * sg;
    if (d) *d = sg * (one + q * (one - sg));
    return;
  }
  act_d<T>(act, q, y, d);
}

// x1 = act(a), x2 = act(b) of one phase pair (a = u - l_j, b = h_j - u) and, if d1, their
// derivatives. SiLU shares one exp between the two sigmoids: exp(-b) = c_j / exp(-a) with
// c_j = exp(-(h_j - l_j)) exactly (-b = -(h_j - l_j) + a), so with E = exp(-a) and
// R = 1 / ((1 + E)(E + c_j)): sigmoid(a) = (E + c_j) R, sigmoid(b) = E (1 + E) R -- one exp and
// one division for both (each apart: one exp and one division). Used where every lane has
// |a|, |b| < 40 and |h_j - l_j| <= 20 (cj_ok), so nothing overflows; other vectors (inputs far
// outside the grid with input_norm="none") take act_d for each. float GELU shares the exp of
// erf with phi (erf_exp); double GELU keeps ATen's 1-ulp erf. The forward and the backward
// call this same function, so the backward's recomputed f equals the forward's bit for bit
// (the min / max tie test needs that).
template <typename T>
inline void act_pair(int64_t act, const Vectorized<T>& a, const Vectorized<T>& b, T cj, bool cj_ok,
                     Vectorized<T>& x1, Vectorized<T>& x2, Vectorized<T>* d1, Vectorized<T>* d2) {
  using V = Vectorized<T>;
  const V one(T(1));
  if (act == kSilu && cj_ok) {
    const V big = at::vec::maximum(a.abs(), b.abs()) > V(T(40));
    if (big.zero_mask() == (1 << V::size()) - 1) {  // no lane is big (NaN lanes propagate)
      const V E = fast_exp(a.neg()), Ec = E + V(cj), E1 = one + E;
      const V R = fast_rcp(E1 * Ec);
      const V s1 = Ec * R, s2 = E * E1 * R;
      x1 = a * s1;
      x2 = b * s2;
      if (d1) {
        *d1 = s1 * (one + a * (one - s1));
        *d2 = s2 * (one + b * (one - s2));
      }
      return;
    }
  }
  if constexpr (std::is_same_v<T, float>) {
    if (act == kGelu) {
      const V half(0.5f), phi_c(0.3989422804014327f), r2(0.7071067811865476f);
      V ea, eb;
      const V ca = half * (one + erf_exp(a * r2, ea)), cb = half * (one + erf_exp(b * r2, eb));
      x1 = a * ca;
      x2 = b * cb;
      if (d1) {
        *d1 = ca + a * phi_c * ea;
        *d2 = cb + b * phi_c * eb;
      }
      return;
    }
  }
  act_d<T>(act, a, x1, d1);
  act_d<T>(act, b, x2, d2);
}

// c_j = exp(-(h_j - l_j)) and whether the shared-exp SiLU applies to phase j (|h_j - l_j| <= 20).
template <typename T>
void pair_consts(const T* l_p, const T* h_p, int64_t G, std::vector<T>& c, std::vector<char>& ok) {
  c.resize(G);
  ok.resize(G);
  for (int64_t j = 0; j < G; ++j) {
    const double w = static_cast<double>(h_p[j]) - static_cast<double>(l_p[j]);
    ok[j] = std::isfinite(w) && std::abs(w) <= 20.0;
    c[j] = static_cast<T>(ok[j] ? std::exp(-w) : 0.0);
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

// a merged with v into a running minimum (or maximum); NaN propagates, as in amin / amax.
template <typename T>
inline T extreme(T a, T v, bool is_min) {
  if (std::isnan(a) || std::isnan(v)) return std::isnan(a) ? a : v;
  return is_min ? std::min(a, v) : std::max(a, v);
}

// One value of f equal to lo or hi, kept aside by the backward pass: node i, row n, phase j,
// which extremes it equals (bit 0: lo, bit 1: hi) and its partials pa = f_a act'(u - l_j),
// pb = f_b act'(h_j - u).
template <typename T>
struct Tie {
  int64_t i, n, j;
  int which;
  T pa, pb;
};

// The ties' share, after af_bwd_kernel: counts #lo, #hi (over the tensor, mode 0, or per row,
// mode 1), then glo / #lo and ghi / #hi times each tie's partials into gut and the phase sums
// a (dl before its sign), b (dh), in chunk order. gut is (in, N), or (N, in) with gut_rows.
template <typename T>
void af_add_ties(const std::vector<std::vector<Tie<T>>>& tied, const T* ut, const T* glo,
                 const T* ghi, T* gut, std::vector<double>& a, std::vector<double>& b,
                 const AFArgs& A, bool gut_rows = false) {
  const int64_t rows = A.mode == 1 ? A.N : 1;
  std::vector<double> nlo(rows, 0.0), nhi(rows, 0.0);
  for (const auto& list : tied) {
    for (const auto& t : list) {
      const int64_t r = A.mode == 1 ? t.n : 0;
      nlo[r] += t.which & 1;
      nhi[r] += (t.which >> 1) & 1;
    }
  }
  for (const auto& list : tied) {
    for (const auto& t : list) {
      const int64_t r = A.mode == 1 ? t.n : 0;
      double coef = 0.0;
      if (t.which & 1) coef += static_cast<double>(glo[r]) / nlo[r];
      if (t.which & 2) coef += static_cast<double>(ghi[r]) / nhi[r];
      const double ga = coef * static_cast<double>(t.pa), gb = coef * static_cast<double>(t.pb);
      a[t.j] += ga;
      b[t.j] += gb;
      if (gut) {
        const double u = static_cast<double>(ut[t.i * A.N + t.n]);
        const double du = (ga - gb) * (A.tanh ? 1.0 - u * u : 1.0);
        T& g = gut[gut_rows ? t.n * A.nin + t.i : t.i * A.N + t.n];
        g = static_cast<T>(static_cast<double>(g) + du);
      }
    }
  }
}

// The exact backward (kan_af.cpp): (gut (if need_u), glow, ghigh, gw).
std::vector<at::Tensor> af_reduce_t_bwd(const at::Tensor& ut, const at::Tensor& lo_p,
                                        const at::Tensor& hi_p, const at::Tensor& w, int64_t act,
                                        int64_t func, int64_t mode, const at::Tensor& gs0t,
                                        const at::Tensor& gs1t, const at::Tensor& lo,
                                        const at::Tensor& hi, const std::optional<at::Tensor>& glo,
                                        const std::optional<at::Tensor>& ghi, bool tanh,
                                        bool need_u);

// ----------------------------------------------------------------------------- series path
// (kan_af_series.cpp: float32 tanh inputs, s0 and s1 from their Chebyshev series)
constexpr int64_t kSeriesMinValues = 8192;  // fewer inputs: the exact kernels (break-even)
bool af_series_applies(const at::Tensor& ut, int64_t mode, bool tanh, int64_t knots);
// A one-line error unless knots is 0 (the exact kernels) or in 16 .. 32768.
void check_knots(int64_t knots, const char* op);

// Pieces (AVX-512: 32 cells of degree 5; AVX2: 8 cells of degree 7; none in the portable
// build): s0, s1 (and their slopes) as a polynomial per cell of [-1, 1], in the local variable
// y = K u - (2 k - K + 1) in [-1, 1] of cell k (K = kPieces). A lane's coefficients come from a
// register permute of the cells' coefficients (vpermt2ps: 32 cells from two registers; vpermps:
// 8 from one), so one value of one sum costs kPieceDeg + 1 permutes and kPieceDeg multiply-adds,
// where the Chebyshev series costs ~3 D / 2 operations (D ~ 15-18). kan_af_series.cpp builds the
// tables from the series and keeps them only where they reproduce it within kPieceTol of its
// scale (else the tail evaluates the series). The slopes s0', s1' (the input gradient's, in the
// backward) have pieces of degree kSlopeDeg, kept within kSlopeTol of their scale: on AVX2 degree
// 5 (GELU at the default phases: 5.8e-7 of the scale, computed; degree 7: 9e-10), two permutes
// and two multiply-adds fewer per value and slope than the values' degree.
#if defined(CPU_CAPABILITY_AVX512)
constexpr int64_t kPieces = 32, kPieceDeg = 5, kSlopeDeg = 5;
#elif defined(CPU_CAPABILITY_AVX2)
constexpr int64_t kPieces = 8, kPieceDeg = 7, kSlopeDeg = 5;
#else
constexpr int64_t kPieces = 0, kPieceDeg = 0, kSlopeDeg = 0;
#endif

// The series of one call: s0, s1 (2, D + 1) and their derivatives (2, Dd + 1) as float
// coefficients; with the backward's, those of every phase's pa_j, pb_j, f_j (G, Dm + 1).
// pt: the pieces of s0, s1 ((2, kPieceDeg + 1, kPieces)) and with the slopes those of s0', s1'
// ((2, kSlopeDeg + 1, kPieces)) after them, each cell's coefficients highest degree first; empty
// without pieces. cd: c in double (2, D + 1), scale: their sums of |c_d| (softmax_tables; the
// backward's sums weighted by s0 come from the moments, s0_sum: Dm covers s0 to kMomTol too).
struct PhaseTable;  // kan_af_series.cpp
struct AFSeries {
  int64_t D = 0, Dd = 0, Dm = 0;
  std::vector<float> c, dc;
  std::vector<double> pa, pb, pf, cd;
  double scale[2] = {0.0, 0.0};
  std::vector<float> pt;
  bool backward = false;                    // dc, pa, pb, pf and Dm filled (the backward's)
  std::shared_ptr<const PhaseTable> nodes;  // the phases at the nodes (the extremes reuse it)
  static constexpr int64_t kTable = (kPieceDeg + 1) * kPieces;  // floats per piece table
  static constexpr int64_t kSlopeTable = (kSlopeDeg + 1) * kPieces;  // per slope table
  bool pieces() const { return !pt.empty(); }
  bool piece_slopes() const {
    return !pt.empty() && static_cast<int64_t>(pt.size()) == 2 * (kTable + kSlopeTable);
  }
  const float* slope_table(int q) const { return pt.data() + 2 * kTable + q * kSlopeTable; }
};
// nullopt when a series does not converge (the call takes the exact kernels). backward: also
// what the backward needs (the slopes and the moments' series), which may not converge where
// the forward's do.
std::optional<AFSeries> af_series(const at::Tensor& lo_p, const at::Tensor& hi_p,
                                  const at::Tensor& w, int64_t act, int64_t func, bool backward);
// func_norm "batch": the exact min / max of f over the tensor (lo, hi), the (input, phase) pairs
// that can reach them (cand: e G + j, int64; only with want_cand, else undefined) and, of
// those, the ones equal to lo or hi (the ties: tie_pairs e G + j, tie_vals (m, 3): which (bit 0:
// lo, bit 1: hi), pa, pb; their partials from the same evaluation as their values). nullopt
// when an input is NaN or the phases are too narrow for the cells (both: the exact kernels).
struct AFExtremes {
  at::Tensor cand;
  float lo, hi;
  at::Tensor tie_pairs, tie_vals;
};
// S: the call's series (its node table is reused), or nullptr.
std::optional<AFExtremes> af_series_extremes(const at::Tensor& ut, const at::Tensor& lo_p,
                                             const at::Tensor& hi_p, int64_t act, int64_t func,
                                             int64_t knots, bool want_cand = false,
                                             const AFSeries* S = nullptr);
// (glow, ghigh, gw) from the moments M0, M1 (Dm + 1 each: sum gs0 T_d(u), sum gs1 T_d(u)), with
// the ties' share of glo / ghi (func_norm "batch"; the forward's tie_pairs, tie_vals) also added
// to gut (if gut: (in, N), or (N, in) with gut_rows).
std::vector<at::Tensor> af_series_grads(const at::Tensor& ut, const at::Tensor& w, int64_t act,
                                        int64_t func, int64_t mode, const AFSeries& S,
                                        const std::vector<double>& M0,
                                        const std::vector<double>& M1,
                                        const std::optional<at::Tensor>& glo,
                                        const std::optional<at::Tensor>& ghi,
                                        const at::Tensor& tie_pairs, const at::Tensor& tie_vals,
                                        float* gut, bool gut_rows = false);

// C = sum gs0n s0n over the values from the moments M0 (sum gs0 T_d(u), gs0 = gs0n / span):
// sum_{d >= 1} c0_d M0_d (the terms of degree 0 multiply M0_0 = sum gs0n / span, which the
// softmax makes 0 but for rounding).
double s0_sum(const AFSeries& S, const std::vector<double>& M0);

// The tail's w.sum() (G terms, in order) and 1 / max(T, 1), in T: tail_args and
// af_softmax_info take them alike.
template <typename T>
inline T weight_sum(const T* w, int64_t G) {
  T cw = T(0);
  for (int64_t j = 0; j < G; ++j) cw += w[j];
  return cw;
}
template <typename T>
inline T inv_temperature(T t) {
  return T(1) / std::max(t, T(1));
}

// The tail's scale and softmax constants: s0n = (s0 - lo cw) / span, s1n = (s1 - lo G) / span
// (func_norm "none": lo 0, span 1), e = (s0n + b) it.
struct SoftmaxScale {
  double lo, span, cw, b, it;
  int64_t G;
};
// From the tail's float constants (mode: func_norm 0 "batch", 2 "none"; it = 1 / max(T, 1)):
// the span as tail_scale takes it, hi - lo in float where positive, else 1.
inline SoftmaxScale softmax_scale(int64_t mode, float lo, float hi, float cw, float b, float it,
                                  int64_t G) {
  const float raw = hi - lo;
  const bool scaled = mode == 0;
  return {scaled ? lo : 0.0, scaled && raw > 0.0f ? raw : 1.0, cw, b, it, G};
}
// The softmax's pieces of a call (its scale and constants known): E(u) - 1 = expm1(e(u) - c), c
// the middle of e's range at the pieces' points, then s1n(u), as two piece tables into out
// (2 kTable floats), so that the tail evaluates no exp, max or scale: E = 1 + (E - 1),
// a = E / sum E, z = a s1n. false where e's range is too wide for pieces accurate relative to
// each E, or a piece misses (the tail then evaluates s0, s1 and the exp); always false without
// pieces.
bool softmax_tables(const AFSeries& S, const SoftmaxScale& q, float* out);

// a_q = sum_{d <= D} c_q[d] T_d(u) for the two series c_0, c_1 of R vectors u (u2 = 2 u), with
// T_d by T_d+1 = 2 u T_d - T_d-1: one recurrence serves both sums; the R vectors interleave
// (each step waits on the one before). D >= 1.
template <int R>
inline void chebyshev2(const float* c0, const float* c1, int64_t D, const Vectorized<float>* u2,
                       const Vectorized<float>* u, Vectorized<float>* a0, Vectorized<float>* a1) {
  using V = Vectorized<float>;
  V tp[R], tc[R];
  for (int r = 0; r < R; ++r) {
    tp[r] = V(1.0f), tc[r] = u[r];  // T_0, T_1
    a0[r] = at::vec::fmadd(V(c0[1]), u[r], V(c0[0]));
    a1[r] = at::vec::fmadd(V(c1[1]), u[r], V(c1[0]));
  }
  for (int64_t d = 2; d <= D; ++d) {
    const V k0(c0[d]), k1(c1[d]);
    for (int r = 0; r < R; ++r) {
      const V tn = at::vec::fmsub(u2[r], tc[r], tp[r]);
      tp[r] = tc[r], tc[r] = tn;
      a0[r] = at::vec::fmadd(k0, tn, a0[r]);
      a1[r] = at::vec::fmadd(k1, tn, a1[r]);
    }
  }
}

#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
// One coefficient of every cell (a row of kPieces floats of AFSeries::pt) held in registers;
// pick(k) gives each lane the coefficient of its cell k (the only ISA-specific step).
struct PieceRow {
#if defined(CPU_CAPABILITY_AVX512)
  __m512 lo, hi;  // cells 0-15, 16-31
  explicit PieceRow(const float* p) : lo(_mm512_loadu_ps(p)), hi(_mm512_loadu_ps(p + 16)) {}
  Vectorized<float> pick(const Vectorized<int32_t>& k) const {
    return _mm512_permutex2var_ps(lo, k, hi);
  }
#else
  __m256 v;  // cells 0-7
  explicit PieceRow(const float* p) : v(_mm256_loadu_ps(p)) {}
  Vectorized<float> pick(const Vectorized<int32_t>& k) const {
    return _mm256_permutevar8x32_ps(v, k);
  }
#endif
};

// a_q = the pieces of tables t0, t1 (kPieceDeg + 1 rows of kPieces floats, AFSeries::pt) at the
// R vectors u in [-1, 1]. The cell k = floor((u + 1) K / 2) (clamped to K - 1) picks each lane's
// coefficients; y = K u - (2 k - K + 1) is exact but for one rounding (K u is exact), so the
// local variable does not lose u's low bits. Horner in y.
template <int R, int64_t Deg = kPieceDeg>
inline void pieces2(const float* t0, const float* t1, const Vectorized<float>* u,
                    Vectorized<float>* a0, Vectorized<float>* a1) {
  using V = Vectorized<float>;
  using VI = Vectorized<int32_t>;
  const V half(static_cast<float>(kPieces) / 2.0f), cells(static_cast<float>(kPieces));
  const VI last(static_cast<int32_t>(kPieces - 1));
  VI k[R];
  V y[R];
  for (int r = 0; r < R; ++r) {  // (u + 1) K / 2 >= 0: truncation is floor
    k[r] = at::vec::minimum(at::vec::convert_to_int_of_same_size(at::vec::fmadd(u[r], half, half)),
                            last);
    y[r] = u[r] * cells - at::vec::convert_to_fp_of_same_size<float>(k[r] + k[r] - last);
  }
  for (int64_t q = 0; q <= Deg; ++q) {
    const PieceRow c0(t0 + q * kPieces), c1(t1 + q * kPieces);
    for (int r = 0; r < R; ++r) {
      a0[r] = q == 0 ? c0.pick(k[r]) : at::vec::fmadd(a0[r], y[r], c0.pick(k[r]));
      a1[r] = q == 0 ? c1.pick(k[r]) : at::vec::fmadd(a1[r], y[r], c1.pick(k[r]));
    }
  }
}
#endif

}  // namespace actlab_kan
