// AF-KAN: the basis reduction (two contractions over G, the min / max of f with their ties),
// its differentiable op and the whole layer's op. Formulas below; layout: kan_kernels.cpp;
// the shared phase arithmetic: kan_af.h; the series path: kan_af_series.cpp.

#include "kan_af.h"

namespace actlab_kan {

// ----------------------------------------------------------------------------- AF-KAN
// Per node i and function j: x1 = act(u - l_j), x2 = act(h_j - u), f = func(x1, x2); the
// kernel returns the two contractions over j, s0 = sum_j f w_j and s1 = sum_j f (in, N), and
// the min / max of f over the whole tensor (mode 0, "batch") or over each row's (in, G)
// values (mode 1, "sample"; mode 2: none) -- f itself, (N, in, G), is never written.
// Backward, given gs0, gs1, glo, ghi: gf = gs0 w_j + gs1 + glo [f = lo] / #lo + ghi [f = hi] / #hi
// (the ties share the min / max gradient evenly, as torch's amin / amax), then
//   du = sum_j gf (f_a act'(u - l_j) - f_b act'(h_j - u)),  dl_j = -sum gf f_a act'(u - l_j),
//   dh_j = sum gf f_b act'(h_j - u),  dw_j = sum gs0 f.
// The forward keeps only the running extremes. The backward pass, which recomputes f bit for bit,
// sums the terms without the ties and keeps aside the few values equal to lo or hi (their node,
// row, phase and f_a act', f_b act'); after the pass it counts them (#lo, #hi) and adds their
// share. Rows run in fixed chunks of kChunk (parallel over chunks; per-chunk parameter sums and
// tie lists taken in chunk order): results do not depend on the thread count.

// Forward: s0t, s1t (in, N); the min / max of f per row (mode 1: rmin, rmax, N values each) or
// per chunk (cmin, cmax: kChunk rows each).
template <typename T>
void af_fwd_kernel(const T* ut, const T* lo_p, const T* hi_p, const T* w, T* s0t, T* s1t, T* rmin,
                   T* rmax, std::vector<T>& cmin, std::vector<T>& cmax, const AFArgs& A) {
  using V = Vectorized<T>;
  constexpr int64_t S = V::size();
  const int64_t chunks = (A.N + kChunk - 1) / kChunk;
  const T inf = std::numeric_limits<T>::infinity();
  std::vector<T> cj;
  std::vector<char> cj_ok;
  pair_consts(lo_p, hi_p, A.G, cj, cj_ok);
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t ch = c0; ch < c1; ++ch) {
      T emn = inf, emx = -inf;
      const int64_t n1 = std::min(A.N, (ch + 1) * kChunk);
      for (int64_t n = ch * kChunk; n < n1; n += S) {
        const int64_t c = std::min<int64_t>(S, n1 - n);
        V rmn(inf), rmx(-inf);  // per row (lane)
        for (int64_t i = 0; i < A.nin; ++i) {
          const V u = V::loadu(ut + i * A.N + n, c);
          V s0(T(0)), s1(T(0));
          for (int64_t j = 0; j < A.G; ++j) {
            V x1, x2;
            act_pair<T>(A.act, u - V(lo_p[j]), V(hi_p[j]) - u, cj[j], cj_ok[j], x1, x2, nullptr,
                        nullptr);
            const V f = func_d<T>(A.func, x1, x2, nullptr, nullptr);
            s0 = s0 + f * V(w[j]);
            s1 = s1 + f;
            if (A.mode != 2) {  // NaN propagates through minimum / maximum
              rmn = at::vec::minimum(rmn, f);
              rmx = at::vec::maximum(rmx, f);
            }
          }
          s0.store(s0t + i * A.N + n, c);
          s1.store(s1t + i * A.N + n, c);
        }
        if (A.mode == 2) continue;
        T a[S], b[S];
        rmn.store(a);
        rmx.store(b);
        for (int64_t l = 0; l < c; ++l) {
          if (A.mode == 1) {
            rmin[n + l] = a[l], rmax[n + l] = b[l];
          } else {
            emn = extreme(emn, a[l], true);
            emx = extreme(emx, b[l], false);
          }
        }
      }
      cmin[ch] = emn;
      cmax[ch] = emx;
    }
  });
}

// Backward. lo / hi: 1 value (mode 0) or N (mode 1), read when ties (a min / max gradient is
// given). Outputs gut (in, N) (if gut; without the ties' share), per-chunk sums of dl, dh, dw
// (3 G per chunk; without the ties' share) and, when ties, the values equal to lo or hi per chunk.
template <typename T>
void af_bwd_kernel(const T* ut, const T* l_p, const T* h_p, const T* w, const T* gs0t,
                   const T* gs1t, const T* lo, const T* hi, bool ties, T* gut,
                   std::vector<double>& part, std::vector<std::vector<Tie<T>>>& tied,
                   const AFArgs& A) {
  using V = Vectorized<T>;
  constexpr int64_t S = V::size();
  const int64_t G = A.G, chunks = (A.N + kChunk - 1) / kChunk;
  auto lim = [&](const T* p, int64_t n, int64_t c) {
    return A.mode == 1 ? V::loadu(p + n, c) : V(p[0]);
  };
  part.assign(chunks * 3 * G, 0.0);
  tied.assign(ties ? chunks : 0, {});
  std::vector<T> cj;
  std::vector<char> cj_ok;
  pair_consts(l_p, h_p, G, cj, cj_ok);
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    std::vector<LaneSum<T>> sums(3 * G);
    T la[S], lb[S];
    for (int64_t ch = c0; ch < c1; ++ch) {
      for (auto& x : sums) x = LaneSum<T>();
      const int64_t n1 = std::min(A.N, (ch + 1) * kChunk);
      for (int64_t n = ch * kChunk; n < n1; n += S) {
        const int64_t c = std::min<int64_t>(S, n1 - n);
        const int lanes = c >= S ? -1 : (1 << c) - 1;  // the rows of this vector
        V vlo(T(0)), vhi(T(0));
        if (ties) vlo = lim(lo, n, c), vhi = lim(hi, n, c);
        for (int64_t i = 0; i < A.nin; ++i) {
          const V u = V::loadu(ut + i * A.N + n, c);
          const V g0 = V::loadu(gs0t + i * A.N + n, c), g1 = V::loadu(gs1t + i * A.N + n, c);
          V du(T(0));
          for (int64_t j = 0; j < G; ++j) {
            V x1, x2, d1, d2, fa, fb;
            act_pair<T>(A.act, u - V(l_p[j]), V(h_p[j]) - u, cj[j], cj_ok[j], x1, x2, &d1, &d2);
            const V f = func_d<T>(A.func, x1, x2, &fa, &fb);
            const V gf = g0 * V(w[j]) + g1, pa = fa * d1, pb = fb * d2;
            const V ga = gf * pa, gb = gf * pb;
            du = du + ga - gb;
            sums[j].add(head(ga, c));
            sums[G + j].add(head(gb, c));
            sums[2 * G + j].add(head(g0 * f, c));
            if (ties) {  // rare: a value equal to an extreme
              const int full = (1 << S) - 1;
              const int mlo = ~(f == vlo).zero_mask() & full & lanes;
              const int mhi = ~(f == vhi).zero_mask() & full & lanes;
              if (mlo | mhi) {
                pa.store(la);
                pb.store(lb);
                for (int64_t l = 0; l < c; ++l) {
                  const int which = ((mlo >> l) & 1) | (((mhi >> l) & 1) << 1);
                  if (which) tied[ch].push_back({i, n + l, j, which, la[l], lb[l]});
                }
              }
            }
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

// (s0t, s1t, lo, hi) of ut (in, N) with phases low, high (G) and attention weights w (G); lo and
// hi are scalars (mode 0, 2) or (N,) (mode 1).
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
  at::Tensor lo = mode == 1 ? at::empty({A.N}, ut.options()) : at::empty({}, ut.options());
  at::Tensor hi = at::empty_like(lo);
  AT_DISPATCH_FLOATING_TYPES(ut.scalar_type(), "af_reduce_t", [&] {
    const int64_t chunks = (A.N + kChunk - 1) / kChunk;
    std::vector<scalar_t> cmin(chunks), cmax(chunks);
    const bool rows = mode == 1;
    af_fwd_kernel<scalar_t>(
        ut.data_ptr<scalar_t>(), lo_p.contiguous().data_ptr<scalar_t>(),
        hi_p.contiguous().data_ptr<scalar_t>(), w.contiguous().data_ptr<scalar_t>(),
        s0t.data_ptr<scalar_t>(), s1t.data_ptr<scalar_t>(), rows ? lo.data_ptr<scalar_t>() : nullptr,
        rows ? hi.data_ptr<scalar_t>() : nullptr, cmin, cmax, A);
    if (mode == 0) {  // the chunks' extremes merged in chunk order
      scalar_t emn = std::numeric_limits<scalar_t>::infinity(), emx = -emn;
      for (int64_t ch = 0; ch < chunks; ++ch) {
        emn = extreme(emn, cmin[ch], true);
        emx = extreme(emx, cmax[ch], false);
      }
      *lo.data_ptr<scalar_t>() = emn;  // data_ptr, not fill_: no op dispatch
      *hi.data_ptr<scalar_t>() = emx;
    } else if (mode == 2) {  // no scale: 0, as before
      *lo.data_ptr<scalar_t>() = scalar_t(0);
      *hi.data_ptr<scalar_t>() = scalar_t(0);
    }
  });
  return {s0t, s1t, lo, hi};
}

// (gut, glow, ghigh, gw); gut undefined unless need_u.
std::vector<at::Tensor> af_reduce_t_bwd(const at::Tensor& ut, const at::Tensor& lo_p,
                                        const at::Tensor& hi_p, const at::Tensor& w, int64_t act,
                                        int64_t func, int64_t mode, const at::Tensor& gs0t_,
                                        const at::Tensor& gs1t_, const at::Tensor& lo,
                                        const at::Tensor& hi, const std::optional<at::Tensor>& glo_,
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
    std::vector<std::vector<Tie<scalar_t>>> tied;
    auto lc = lo.contiguous(), hc = hi.contiguous();
    scalar_t* pg = need_u ? gut.data_ptr<scalar_t>() : nullptr;
    af_bwd_kernel<scalar_t>(ut.data_ptr<scalar_t>(), lo_p.contiguous().data_ptr<scalar_t>(),
                            hi_p.contiguous().data_ptr<scalar_t>(), w.contiguous().data_ptr<scalar_t>(),
                            gs0t.data_ptr<scalar_t>(), gs1t.data_ptr<scalar_t>(),
                            lc.data_ptr<scalar_t>(), hc.data_ptr<scalar_t>(), ties, pg, part, tied,
                            A);
    const int64_t chunks = (A.N + kChunk - 1) / kChunk;
    std::vector<double> a(G, 0.0), b(G, 0.0), c(G, 0.0);
    for (int64_t j = 0; j < G; ++j) {
      for (int64_t ch = 0; ch < chunks; ++ch) {
        a[j] += part[ch * 3 * G + j];
        b[j] += part[ch * 3 * G + G + j];
        c[j] += part[ch * 3 * G + 2 * G + j];
      }
    }
    if (ties) {
      af_add_ties<scalar_t>(tied, ut.data_ptr<scalar_t>(), glo.data_ptr<scalar_t>(),
                            ghi.data_ptr<scalar_t>(), pg, a, b, A);
    }
    auto* pl = gl.data_ptr<scalar_t>();
    auto* ph = gh.data_ptr<scalar_t>();
    auto* pw = gw.data_ptr<scalar_t>();
    for (int64_t j = 0; j < G; ++j) {
      pl[j] = static_cast<scalar_t>(-a[j]);  // d(u - l)/dl = -1
      ph[j] = static_cast<scalar_t>(b[j]);
      pw[j] = static_cast<scalar_t>(c[j]);
    }
  });
  return {gut, gl, gh, gw};
}

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
    ctx->save_for_backward({ut, lo_p, hi_p, w, r[2], r[3]});
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
                             gsum(grads[1]), sv[4].reshape({-1}), sv[5].reshape({-1}), glo, ghi,
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

// ----------------------------------------------------------------------------- AF-KAN layer
// The whole layer as one differentiable op: the reduction above, then the tail in one pass
// over (in, N) (rows in vector lanes, the in axis looped), then the projection (one GEMM):
//   s0n = (s0 - lo sum_j w_j) / span,  s1n = (s1 - lo G) / span     (func_norm; span = hi - lo,
//                                                                    1 where it is not > 0)
//   e_i = (s0n_i + b) / t,  t = max(T, 1),  a = softmax_i(e),  z_i = a_i s1n_i
//   zh = (z - mean z) / sqrt(var z + eps),  q = zh gamma + beta     (LayerNorm; else q = z)
//   o = act(q),  y = o W^T
// When a backward can follow, the forward keeps o (for dW) and, per value, a, s0n, s1n and
// act'(q) (computed with o: GELU's and SiLU's share their exp), per row the LayerNorm's mean and
// 1 / std: 6 floats per input value with u, so that the backward evaluates no series, exp or act
// (it used to recompute the whole forward tail: an estimated ~40 % of its passes' operations).
// Where the series path's backward sums moments, s0n is not kept (5 floats: keeps_s0n). There
// the forward may also take the softmax's numerators from per-call pieces (Tail::et).
// Backward (one tail pass over the kept values; then the reduction's backward):
//   gq = go act'(q);  LayerNorm: dgamma_i = sum gq zh, dbeta_i = sum gq,
//   gz = (gh - mean gh - zh mean(gh zh)) / sqrt(var + eps) with gh = gq gamma
//   ga = gz s1n, gs1n = gz a;  ge = a (ga - sum_k a_k ga_k);  gs0n = ge / t;
//   db = sum ge / t,  dT = -sum ge e / t  (where T >= 1, as clamp's gradient)
//   gs0 = gs0n / span, gs1 = gs1n / span; with A = sum gs0n, B = sum gs1n, C = sum gs0n s0n,
//   D = sum gs1n s1n over a row: dlo = (C + D - A sum w - B G) / span, dhi = -(C + D) / span
//   (span replaced by 1: dlo = -(A sum w + B G), dhi = 0), and dw_j gets -lo A / span more
//   (the scale's sum w). Sums over rows run per chunk of kChunk rows, added in chunk order.
// On the series path (kan_af_series.cpp) the tail takes s0, s1 from the series where it would
// read s0t, s1t (series_rows), and its backward turns gs0, gs1 into du and the moments at once
// (series_sink) instead of writing them for the reduction's backward.
// The tail backward's per-chunk sums in part: db, dT, dw extra, dlo, dhi.
constexpr int64_t kTailSums = 5;

template <typename T>
struct Tail {
  int64_t nin, N, G, act, mode;
  bool norm;
  T eps, b, t, it, cw;  // it = 1 / t: the tail multiplies (a division per value costs ~10
                        // cycles per vector, ~0.3 ms of a D 64 step)
  const T *lo, *hi, *gam, *bet;  // lo, hi: 1 value (mode 0) or N (mode 1); gam, bet: (in)
  // the series path (float, kan_af_series.cpp): s0, s1 of u from their Chebyshev series instead of
  // s0t, s1t; in the backward (sink) du and the moments instead of gs0t, gs1t
  const T* ut = nullptr;
  const AFSeries* series = nullptr;
  bool sink = false;
  T* gut = nullptr;
  bool gut_rows = false;  // gut is (N, in) row-major (the layout of a row-major input x)
  // the softmax's pieces (softmax_tables: E, then s1n) where they fitted: the forward then
  // evaluates E and s1n instead of s0, s1, the scale, the max and the exp
  const float* et = nullptr;
  // kept: what the forward hands its backward instead of the backward recomputing it: per
  // vector of rows and node, a, s0n, s1n, act'(q) as ks = 4 whole vectors (ks = 3: no s0n, see
  // keeps_s0n), in the order the passes run (kept_size), then per vector of rows the
  // LayerNorm's mean and 1 / std
  T* kept = nullptr;
  int64_t ks = 4;
};

// Floats of a tail's kept values: rows padded to whole vectors, (in ks + 2) vectors per vector
// of rows.
template <typename T>
int64_t kept_size(int64_t nin, int64_t N, int64_t ks) {
  constexpr int64_t S = Vectorized<T>::size();
  return (N + S - 1) / S * (ks * nin + 2) * S;
}

// Whether the forward keeps s0n per value. The backward reads it only in two sums over the
// values, C = sum gs0n s0n (low / high) and sum gs0n (s0n + b) (temperature); where the backward
// sinks the series path's moments (the series fitted with the backward's: S->backward) and the
// scale is one for the tensor (func_norm "batch" or "none"), C comes from them instead:
// s0n = (s0(u) - lo sum w) / span with s0(u) = sum_d c0_d T_d(u), so with gs0 = gs0n / span,
// C = sum_d c0_d M0_d - lo sum w M0_0, of which s0_sum leaves out the terms of degree 0 (M0_0 is
// 0 but for rounding). One float fewer written and read per value.
inline bool keeps_s0n(const AFSeries* S, int64_t mode) {
  return !(S && S->backward && mode != 1);
}

template <typename T>
struct TailRows {  // one vector of rows: the tail's values per node (5 nin vectors: in L1
                   // for nin up to ~150 with AVX-512)
  std::vector<Vectorized<T>> s0n, s1n, a, zh, g;
  Vectorized<T> vlo, span, ispan, raw, mu, r;  // ispan = 1 / span
  explicit TailRows(int64_t nin) : s0n(nin), s1n(nin), a(nin), zh(nin), g(nin) {}
};

// s0n, s1n (raw: s0, s1) of every node for rows n .. n + c from the series, four nodes at a time,
// into o0, o1; with et (the softmax's pieces) E and s1n instead.
template <typename T>
void series_rows(const Tail<T>& P, int64_t n, int64_t c, Vectorized<T>* o0, Vectorized<T>* o1,
                 const float* et = nullptr) {
  if constexpr (std::is_same_v<T, float>) {
    const AFSeries& S = *P.series;
    constexpr int R = 4;
    for (int64_t i0 = 0; i0 < P.nin; i0 += R) {
      Vectorized<float> u[R], u2[R], s[R], s1[R];
      const int r1 = static_cast<int>(std::min<int64_t>(R, P.nin - i0));
      for (int r = 0; r < R; ++r) {
        // this node's rows two vectors ahead: in (in, N) every node is a stream of its own,
        // more than the hardware prefetchers track (~1 % of the block step)
        if (r < r1) __builtin_prefetch(P.ut + (i0 + r) * P.N + n + 2 * Vectorized<float>::size());
        u[r] = r < r1 ? Vectorized<float>::loadu(P.ut + (i0 + r) * P.N + n, c)
                      : Vectorized<float>(0.0f);
        u2[r] = u[r] + u[r];
      }
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
      if (et) {
        pieces2<R>(et, et + AFSeries::kTable, u, s, s1);
      } else if (S.pieces()) {
        pieces2<R>(S.pt.data(), S.pt.data() + AFSeries::kTable, u, s, s1);
      } else {
        chebyshev2<R>(S.c.data(), S.c.data() + S.D + 1, S.D, u2, u, s, s1);
      }
#else
      chebyshev2<R>(S.c.data(), S.c.data() + S.D + 1, S.D, u2, u, s, s1);
#endif
      // explicit stores of a constant count where all R nodes are there: a loop of r1 stores
      // (or assignments) was compiled as two `rep movsq` copies (~a third of the pass)
      float *p0 = reinterpret_cast<float*>(o0 + i0), *p1 = reinterpret_cast<float*>(o1 + i0);
      constexpr int64_t L = Vectorized<float>::size();
      if (r1 == R) {
        for (int r = 0; r < R; ++r) s[r].store(p0 + r * L), s1[r].store(p1 + r * L);
      } else {
        for (int r = 0; r < r1; ++r) s[r].store(p0 + r * L), s1[r].store(p1 + r * L);
      }
    }
  }
}

// The sink of the series path for rows n .. n + c: from gs0, gs1 of every node (the backward
// leaves them in W.s0n, W.s1n once it no longer needs those), du = (gs0 s0'(u) + gs1 s1'(u))
// (1 - u^2) into gut and the moments sum gs T_d(u) (d <= Dm) into mom (2 (Dm + 1) vectors:
// gs0's, then gs1's), four nodes at a time.
template <typename T>
void series_sink(const Tail<T>& P, int64_t n, int64_t c, TailRows<T>& W,
                 std::vector<Vectorized<T>>& mom) {
  if constexpr (std::is_same_v<T, float>) {
    using V = Vectorized<float>;
    const AFSeries& S = *P.series;
    const int64_t D1 = S.Dm + 1;
    constexpr int R = 4;
    for (int64_t i0 = 0; i0 < P.nin; i0 += R) {
      V u[R], u2[R], d0[R], d1[R], g0[R], g1[R], tp[R], tc[R];
      const int r1 = static_cast<int>(std::min<int64_t>(R, P.nin - i0));
      for (int r = 0; r < R; ++r) {
        const bool in = r < r1;
        u[r] = in ? V::loadu(P.ut + (i0 + r) * P.N + n, c) : V(0.0f);
        g0[r] = in ? W.s0n[i0 + r] : V(0.0f);
        g1[r] = in ? W.s1n[i0 + r] : V(0.0f);
        u2[r] = u[r] + u[r];
        tp[r] = V(1.0f), tc[r] = u[r];  // T_0, T_1
      }
      // one recurrence T_d for the moments (d <= Dm) and the slopes s0', s1' (d <= Dd; from
      // their pieces instead where there are some)
      const float *e0 = S.dc.data(), *e1 = S.dc.data() + S.Dd + 1;
      bool cheb_slopes = P.gut != nullptr;
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
      if (P.gut && S.piece_slopes()) {
        pieces2<R, kSlopeDeg>(S.slope_table(0), S.slope_table(1), u, d0, d1);
        cheb_slopes = false;
      }
#endif
      if (cheb_slopes) {
        for (int r = 0; r < R; ++r) d0[r] = V(e0[0]), d1[r] = V(e1[0]);
      }
      // degree d's terms, with t = T_d of the R nodes: the slopes' (d <= Dd) and the moments'
      // (d <= Dm)
      const auto terms = [&](int64_t d, const V* t) __attribute__((always_inline)) {
        if (cheb_slopes && d <= S.Dd) {
          const V k0(e0[d]), k1(e1[d]);
          for (int r = 0; r < R; ++r) {
            d0[r] = at::vec::fmadd(k0, t[r], d0[r]);
            d1[r] = at::vec::fmadd(k1, t[r], d1[r]);
          }
        }
        if (d <= S.Dm) {
          V a = mom[d], b = mom[D1 + d];
          for (int r = 0; r < R; ++r) {
            a = at::vec::fmadd(g0[r], t[r], a);
            b = at::vec::fmadd(g1[r], t[r], b);
          }
          mom[d] = a, mom[D1 + d] = b;
        }
      };
      V a = mom[0], b = mom[D1];
      for (int r = 0; r < R; ++r) a = a + g0[r], b = b + g1[r];
      mom[0] = a, mom[D1] = b;
      const int64_t top = cheb_slopes ? std::max(S.Dm, S.Dd) : S.Dm;
      terms(1, tc);
      // T_d+1 = 2 u T_d - T_d-1 two degrees per step, each overwriting the older of the pair
      // (no register copies: rotating tp, tc per degree cost 12 moves per step)
      int64_t d = 2;
      for (; d + 1 <= top; d += 2) {
        for (int r = 0; r < R; ++r) tp[r] = at::vec::fmsub(u2[r], tc[r], tp[r]);
        terms(d, tp);
        for (int r = 0; r < R; ++r) tc[r] = at::vec::fmsub(u2[r], tp[r], tc[r]);
        terms(d + 1, tc);
      }
      if (d <= top) {
        for (int r = 0; r < R; ++r) tp[r] = at::vec::fmsub(u2[r], tc[r], tp[r]);
        terms(d, tp);
      }
      if (P.gut) {
        alignas(64) float rows[R][V::size()];  // gut_rows: du of the R nodes, then per row
        for (int r = 0; r < r1; ++r) {
          const V du = at::vec::fmadd(g0[r], d0[r], g1[r] * d1[r]) * (V(1.0f) - u[r] * u[r]);
          if (P.gut_rows) {
            du.store(rows[r]);
          } else {
            du.store(P.gut + (i0 + r) * P.N + n, c);
          }
        }
        if (P.gut_rows) {  // (N, in): row l's r1 nodes side by side (no transposing pass later)
          float* g = P.gut + n * P.nin + i0;
#if defined(CPU_CAPABILITY_AVX2)
          if (r1 == 4 && c == 8) {  // a 4 x 8 transpose: each row's four nodes as one store
            const __m256 a0 = _mm256_load_ps(rows[0]), a1 = _mm256_load_ps(rows[1]);
            const __m256 a2 = _mm256_load_ps(rows[2]), a3 = _mm256_load_ps(rows[3]);
            const __m256 t0 = _mm256_unpacklo_ps(a0, a1), t1 = _mm256_unpackhi_ps(a0, a1);
            const __m256 t2 = _mm256_unpacklo_ps(a2, a3), t3 = _mm256_unpackhi_ps(a2, a3);
            const __m256 q[4] = {_mm256_shuffle_ps(t0, t2, 0x44), _mm256_shuffle_ps(t0, t2, 0xEE),
                                 _mm256_shuffle_ps(t1, t3, 0x44), _mm256_shuffle_ps(t1, t3, 0xEE)};
            for (int l = 0; l < 4; ++l) {  // q[l]: rows l and l + 4
              _mm_storeu_ps(g + l * P.nin, _mm256_castps256_ps128(q[l]));
              _mm_storeu_ps(g + (l + 4) * P.nin, _mm256_extractf128_ps(q[l], 1));
            }
          } else
#endif
          {
            for (int64_t l = 0; l < c; ++l) {
              for (int r = 0; r < r1; ++r) g[l * P.nin + r] = rows[r][l];
            }
          }
        }
      }
    }
  }
}

// The min-max scale of rows n .. n + c: lo, span (raw: hi - lo), 1 / span.
template <typename T>
void tail_scale(const Tail<T>& P, int64_t n, int64_t c, TailRows<T>& W) {
  using V = Vectorized<T>;
  const V one(T(1));
  W.vlo = V(T(0)), W.span = one, W.ispan = one, W.raw = one;
  if (P.mode != 2) {
    W.vlo = P.mode == 1 ? V::loadu(P.lo + n, c) : V(P.lo[0]);
    const V vhi = P.mode == 1 ? V::loadu(P.hi + n, c) : V(P.hi[0]);
    W.raw = vhi - W.vlo;
    W.span = V::blendv(one, W.raw, W.raw > V(T(0)));  // torch.where(span > 0, span, 1)
    W.ispan = one / W.span;
  }
}

// The softmax's numerators of rows n .. n + c into a and s1n (s0n with them): from the series'
// or the reduction's s0, s1 by the scale, the max and the exp; or E and s1n from their pieces
// (Tail::et; s0n then only where it is kept). Returns their sums over the nodes.
template <typename T>
Vectorized<T> tail_numerators(const Tail<T>& P, const T* s0t, const T* s1t, int64_t n, int64_t c,
                              TailRows<T>& W) {
  using V = Vectorized<T>;
  const V vcw(P.cw), vG(static_cast<T>(P.G)), vb(P.b), vit(P.it);
  V sum(T(0));
  if (P.et) {
    series_rows<T>(P, n, c, W.a.data(), W.s1n.data(), P.et);  // E - 1, s1n
    const V one(T(1));
    for (int64_t i = 0; i < P.nin; ++i) W.a[i] = W.a[i] + one, sum = sum + W.a[i];
    if (P.kept && P.ks == 4) {  // (W.zh: a scratch for s1)
      series_rows<T>(P, n, c, W.s0n.data(), W.zh.data());
      if (P.mode != 2) {
        for (int64_t i = 0; i < P.nin; ++i) W.s0n[i] = (W.s0n[i] - W.vlo * vcw) * W.ispan;
      }
    }
    return sum;
  }
  V m(-std::numeric_limits<T>::infinity());
  if (P.series) series_rows<T>(P, n, c, W.s0n.data(), W.s1n.data());
  for (int64_t i = 0; i < P.nin; ++i) {
    V s0 = P.series ? W.s0n[i] : V::loadu(s0t + i * P.N + n, c);
    V s1 = P.series ? W.s1n[i] : V::loadu(s1t + i * P.N + n, c);
    if (P.mode != 2) {
      s0 = (s0 - W.vlo * vcw) * W.ispan;
      s1 = (s1 - W.vlo * vG) * W.ispan;
    }
    W.s0n[i] = s0, W.s1n[i] = s1;
    W.a[i] = (s0 + vb) * vit;
    m = at::vec::maximum(m, W.a[i]);
  }
  for (int64_t i = 0; i < P.nin; ++i) {
    W.a[i] = fast_exp(W.a[i] - m);  // <= 0, or NaN (kept)
    sum = sum + W.a[i];
  }
  return sum;
}

// s0n, s1n, a (softmax), zh (normalised z, or z), mu, r (mean, 1 / std) for rows n .. n + c.
template <typename T>
void tail_rows(const Tail<T>& P, const T* s0t, const T* s1t, int64_t n, int64_t c,
               TailRows<T>& W) {
  using V = Vectorized<T>;
  const V one(T(1));
  tail_scale<T>(P, n, c, W);
  const V sum = tail_numerators<T>(P, s0t, s1t, n, c, W);
  const V inv = one / sum;
  V mu(T(0));
  for (int64_t i = 0; i < P.nin; ++i) {
    W.a[i] = W.a[i] * inv;
    W.zh[i] = W.a[i] * W.s1n[i];
    mu = mu + W.zh[i];
  }
  if (!P.norm) return;
  const V vn(static_cast<T>(P.nin));
  mu = mu / vn;
  V var(T(0));
  for (int64_t i = 0; i < P.nin; ++i) {
    const V d = W.zh[i] - mu;
    var = var + d * d;
  }
  W.mu = mu;
  W.r = one / (var / vn + V(P.eps)).sqrt();
  for (int64_t i = 0; i < P.nin; ++i) W.zh[i] = (W.zh[i] - mu) * W.r;
}

// The kept values of the vector of rows at n (a multiple of the vector size).
template <typename T>
T* kept_rows(const Tail<T>& P, int64_t n) {
  constexpr int64_t S = Vectorized<T>::size();
  return P.kept + n / S * (P.ks * P.nin + 2) * S;
}

// The backward's tail_rows from what the forward kept, and act'(q) into d: loads, and zh from
// a s1n with the kept mean and 1 / std (the forward's arithmetic). Lanes past c hold the
// forward's values of its zero-filled lanes (finite).
template <typename T>
void tail_rows_kept(const Tail<T>& P, int64_t n, TailRows<T>& W, std::vector<Vectorized<T>>& d) {
  using V = Vectorized<T>;
  constexpr int64_t S = V::size();
  tail_scale<T>(P, n, std::min<int64_t>(S, P.N - n), W);
  const T* k = kept_rows(P, n);
  const int64_t ks = P.ks;  // a node's vectors: a, s0n (ks = 4), s1n, act'(q)
  if (P.norm) W.mu = V::loadu(k + ks * P.nin * S), W.r = V::loadu(k + (ks * P.nin + 1) * S);
  for (int64_t i = 0; i < P.nin; ++i, k += ks * S) {
    W.a[i] = V::loadu(k), W.s1n[i] = V::loadu(k + (ks - 2) * S), d[i] = V::loadu(k + (ks - 1) * S);
    if (ks == 4) W.s0n[i] = V::loadu(k + S);
    const V z = W.a[i] * W.s1n[i];
    W.zh[i] = P.norm ? (z - W.mu) * W.r : z;
  }
}

// ot (in, N) = act(q) of every row.
template <typename T>
void tail_fwd_kernel(const Tail<T>& P, const T* s0t, const T* s1t, T* ot) {
  using V = Vectorized<T>;
  constexpr int64_t S = V::size();
  const int64_t chunks = (P.N + kChunk - 1) / kChunk;
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    TailRows<T> W(P.nin);
    for (int64_t n = c0 * kChunk; n < std::min(P.N, c1 * kChunk); n += S) {
      const int64_t c = std::min<int64_t>(S, P.N - n);
      tail_rows<T>(P, s0t, s1t, n, c, W);
      T* k = P.kept ? kept_rows(P, n) : nullptr;  // a backward follows: keep what it would
                                                   // recompute, act'(q) with act(q)
      for (int64_t i = 0; i < P.nin; ++i) {
        const V q = P.norm ? W.zh[i] * V(P.gam[i]) + V(P.bet[i]) : W.zh[i];
        V o, d;
        tail_act<T>(P.act, q, o, k ? &d : nullptr);
        o.store(ot + i * P.N + n, c);
        if (k) {
          const int64_t ks = P.ks;  // as tail_rows_kept reads them
          W.a[i].store(k), W.s1n[i].store(k + (ks - 2) * S), d.store(k + (ks - 1) * S);
          if (ks == 4) W.s0n[i].store(k + S);
          k += ks * S;
        }
      }
      if (k && P.norm) W.mu.store(k), W.r.store(k + S);
    }
  });
}

// From the forward's kept values (P.kept) and got (in, N), the output gradient through
// the projection: per chunk into part: db, dT, dw extra, dlo, dhi (mode 0), then the moments
// (series sink); into lanes (with the LayerNorm): dgamma (in), then dbeta (in), as vectors of
// per-lane sums (stored, not summed across lanes: a chunk holds only kChunk / S rows per lane).
template <typename T>
void tail_bwd_kernel(const Tail<T>& P, const T* got, T* gs0t, T* gs1t, T* glo_rows, T* ghi_rows,
                     std::vector<double>& part, std::vector<T>& lanes) {
  using V = Vectorized<T>;
  constexpr int64_t S = V::size();
  const int64_t chunks = (P.N + kChunk - 1) / kChunk, np = kTailSums;
  const int64_t nm = P.sink ? 2 * (P.series->Dm + 1) : 0;  // the moments, after np
  part.assign(chunks * (np + nm), 0.0);
  lanes.resize(P.norm ? chunks * 2 * P.nin * S : 0);
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    TailRows<T> W(P.nin);
    std::vector<V> mom(nm), dq(P.nin);  // dq: act'(q)
    std::vector<V> sg(P.norm ? P.nin : 0), sb(P.norm ? P.nin : 0);
    const V one(T(1)), vit(P.it), vb(P.b), vcw(P.cw), vG(static_cast<T>(P.G));
    const V vn(static_cast<T>(P.nin));
    for (int64_t ch = c0; ch < c1; ++ch) {
      for (auto& v : sg) v = V(T(0));
      for (auto& v : sb) v = V(T(0));
      V gbv(T(0)), gtv(T(0)), gwx(T(0)), glv(T(0)), ghv(T(0));
      for (int64_t n = ch * kChunk; n < std::min(P.N, (ch + 1) * kChunk); n += S) {
        const int64_t c = std::min<int64_t>(S, P.N - n);
        tail_rows_kept<T>(P, n, W, dq);
        V s1(T(0)), s2(T(0));
        for (int64_t i = 0; i < P.nin; ++i) {  // gq = go act'(q)
          const V gq = head(V::loadu(got + i * P.N + n, c) * dq[i], c);
          if (P.norm) {
            sg[i] = sg[i] + gq * W.zh[i];
            sb[i] = sb[i] + gq;
            W.g[i] = gq * V(P.gam[i]);
            s1 = s1 + W.g[i];
            s2 = s2 + W.g[i] * W.zh[i];
          } else {
            W.g[i] = gq;
          }
        }
        if (P.norm) {
          s1 = s1 / vn, s2 = s2 / vn;
          for (int64_t i = 0; i < P.nin; ++i) W.g[i] = W.r * (W.g[i] - s1 - W.zh[i] * s2);
        }
        V sga(T(0));
        for (int64_t i = 0; i < P.nin; ++i) {  // g: gz -> gs1n; zh: -> ga
          const V ga = W.g[i] * W.s1n[i];
          W.g[i] = W.g[i] * W.a[i];
          W.zh[i] = ga;
          sga = sga + W.a[i] * ga;
        }
        // without s0n kept (ks = 3) sC and sgee stay 0: the backward adds them from the
        // moments (s0_sum)
        V sA(T(0)), sB(T(0)), sC(T(0)), sD(T(0)), sge(T(0)), sgee(T(0));
        const bool s0n = P.ks == 4;
        for (int64_t i = 0; i < P.nin; ++i) {
          const V ge = W.a[i] * (W.zh[i] - sga);
          const V gs0n = ge * vit, gs1n = W.g[i];
          sge = sge + ge;
          if (s0n) sgee = sgee + ge * ((W.s0n[i] + vb) * vit);
          V g0 = gs0n, g1 = gs1n;
          if (P.mode != 2) {
            sA = sA + gs0n, sB = sB + gs1n;
            if (s0n) sC = sC + gs0n * W.s0n[i];
            sD = sD + gs1n * W.s1n[i];
            g0 = gs0n * W.ispan, g1 = gs1n * W.ispan;
          }
          if (P.sink) {  // s0n[i], s1n[i] are used up: they hold gs0, gs1 from here
            W.s0n[i] = head(g0, c), W.s1n[i] = head(g1, c);
          } else {
            g0.store(gs0t + i * P.N + n, c);
            g1.store(gs1t + i * P.N + n, c);
          }
        }
        if (P.sink) {
          for (auto& v : mom) v = V(T(0));
          series_sink<T>(P, n, c, W, mom);
          double* pm = part.data() + ch * (np + nm) + np;
          for (int64_t q = 0; q < nm; ++q) pm[q] += static_cast<double>(hsum(mom[q]));
        }
        gbv = gbv + head(sge * vit, c);
        gtv = gtv + head(sgee * vit, c);
        if (P.mode != 2) {
          const V pos = W.raw > V(T(0));
          const V gl = V::blendv(-(sA * vcw + sB * vG), (sC + sD - sA * vcw - sB * vG) * W.ispan, pos);
          const V gh = V::blendv(V(T(0)), -(sC + sD) * W.ispan, pos);
          gwx = gwx + head(-(W.vlo * sA) * W.ispan, c);
          if (P.mode == 1) {
            gl.store(glo_rows + n, c);
            gh.store(ghi_rows + n, c);
          } else {
            glv = glv + head(gl, c);
            ghv = ghv + head(gh, c);
          }
        }
      }
      double* pp = part.data() + ch * (np + nm);
      T* pl = lanes.data() + ch * 2 * P.nin * S;
      for (int64_t i = 0; i < static_cast<int64_t>(sg.size()); ++i) {
        sg[i].store(pl + i * S);
        sb[i].store(pl + (P.nin + i) * S);
      }
      pp[0] = hsum(gbv), pp[1] = -static_cast<double>(hsum(gtv));
      pp[2] = hsum(gwx), pp[3] = hsum(glv), pp[4] = hsum(ghv);
    }
  });
}

// The tail's constants; w (G) the attention weights, b (1,), temperature ().
template <typename T>
Tail<T> tail_args(const at::Tensor& ut, const at::Tensor& w, const at::Tensor& b,
                  const at::Tensor& temp, const at::Tensor& gam, const at::Tensor& bet,
                  const std::vector<at::Tensor>& r, int64_t act, int64_t mode, double eps) {
  Tail<T> P;
  P.nin = ut.size(0), P.N = ut.size(1), P.G = w.numel(), P.act = act, P.mode = mode;
  P.norm = gam.defined();
  P.eps = static_cast<T>(eps);
  P.b = *b.data_ptr<T>();  // data_ptr, not item(): no op dispatch per read
  P.t = std::max(*temp.data_ptr<T>(), T(1));
  P.it = inv_temperature(*temp.data_ptr<T>());
  P.cw = weight_sum(w.data_ptr<T>(), P.G);
  P.lo = r[2].data_ptr<T>(), P.hi = r[3].data_ptr<T>();
  P.gam = P.norm ? gam.data_ptr<T>() : nullptr;
  P.bet = P.norm ? bet.data_ptr<T>() : nullptr;
  return P;
}

void check_af_layer(const at::Tensor& ut, const at::Tensor& w, const at::Tensor& b,
                    const at::Tensor& temp, const at::Tensor& weight,
                    const std::optional<at::Tensor>& gam, const std::optional<at::Tensor>& bet,
                    int64_t knots) {
  check_knots(knots, "af_kan_layer");
  // w: (G,) or the attention Linear's (1, G) weight as it is (no select op and its backward)
  check_like(w, ut, w.dim() == 2 ? at::IntArrayRef({1, w.size(1)}) : at::IntArrayRef({w.numel()}),
             "af_kan_layer", "w");
  check_like(b, ut, {1}, "af_kan_layer", "the attention bias");
  check_like(temp, ut, {}, "af_kan_layer", "the temperature");
  check_like(weight, ut, {weight.size(0), ut.size(0)}, "af_kan_layer", "weight");
  TORCH_CHECK(gam.has_value() == bet.has_value(), "af_kan_layer: give both norm_w and norm_b");
  if (gam.has_value()) {
    check_like(*gam, ut, {ut.size(0)}, "af_kan_layer", "norm_w");
    check_like(*bet, ut, {ut.size(0)}, "af_kan_layer", "norm_b");
  }
}

// The forward: (ot, reduction outputs r: s0t, s1t, lo, hi and, on the series path, the min /
// max ties (tie_pairs, tie_vals; empty for func_norm "none"); there s0t, s1t are undefined:
// the tail evaluates the series itself). want_bwd: a backward follows, so the series are fitted
// with what it needs (one fit per step instead of two; the values' arithmetic is the same) and
// handed out in keep (set on the series path only).
std::pair<at::Tensor, std::vector<at::Tensor>> af_layer_fwd(
    const at::Tensor& ut, const at::Tensor& lo_p, const at::Tensor& hi_p, const at::Tensor& w,
    const at::Tensor& b, const at::Tensor& temp, const at::Tensor& gam, const at::Tensor& bet,
    int64_t act, int64_t func, int64_t mode, double eps, bool tanh, int64_t knots,
    bool want_bwd = false, std::optional<AFSeries>* keep = nullptr,
    std::vector<at::Tensor>* kept = nullptr) {
  std::vector<at::Tensor> r;
  std::optional<AFSeries> S;
  if (af_series_applies(ut, mode, tanh, knots)) {
    if (want_bwd) S = af_series(lo_p, hi_p, w, act, func, true);
    if (!S) S = af_series(lo_p, hi_p, w, act, func, false);  // (the backward's may not converge)
  }
  if (S) {
    auto opts = ut.options();
    if (mode == 0) {
      auto ex = af_series_extremes(ut, lo_p, hi_p, act, func, knots, false, &*S);
      if (ex) {
        r = {at::Tensor(), at::Tensor(), scalar_like({}, ex->lo, opts), scalar_like({}, ex->hi, opts),
             ex->tie_pairs, ex->tie_vals};
      } else {
        S.reset();  // a NaN input (it propagates as in the plain twin) or too narrow phases:
                    // the exact kernels
      }
    } else {
      r = {at::Tensor(), at::Tensor(), at::zeros({}, opts), at::zeros({}, opts),
           at::empty({0}, at::kLong), at::empty({0, 3}, at::kFloat)};
    }
  }
  if (!S) r = af_reduce_t(ut, lo_p, hi_p, w, act, func, mode);  // no r[4], r[5]: the exact path
  // ot: dead once projected, unless kept for the backward (its weight gradient) with the
  // tail's values (Tail::kept)
  at::Tensor ot = kept ? kept_tensor(ut.sizes(), ut) : scratch(0, ut.sizes(), ut);
  AT_DISPATCH_FLOATING_TYPES(ut.scalar_type(), "af_kan_layer", [&] {
    auto P = tail_args<scalar_t>(ut, w, b, temp, gam, bet, r, act, mode, eps);
    if (S) P.ut = ut.data_ptr<scalar_t>(), P.series = &*S;
    if (kept) {
      P.ks = keeps_s0n(S ? &*S : nullptr, mode) ? 4 : 3;
      *kept = {ot, kept_tensor({kept_size<scalar_t>(ut.size(0), ut.size(1), P.ks)}, ut)};
      P.kept = (*kept)[1].data_ptr<scalar_t>();
    }
    std::vector<float> et;  // the softmax's pieces, where they fit (float: the series path)
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (S) {
        const auto q = softmax_scale(mode, P.lo[0], P.hi[0], P.cw, P.b, P.it, P.G);
        et.resize(2 * AFSeries::kTable);
        if (softmax_tables(*S, q, et.data())) P.et = et.data();
      }
    }
    auto ptr = [](const at::Tensor& t) { return t.defined() ? t.data_ptr<scalar_t>() : nullptr; };
    tail_fwd_kernel<scalar_t>(P, ptr(r[0]), ptr(r[1]), ot.data_ptr<scalar_t>());
  });
  if (keep && S) *keep = std::move(S);
  return {ot, r};
}

// The forward's series, kept in the autograd context for the backward.
struct SeriesHolder : torch::CustomClassHolder {
  AFSeries S;
  explicit SeriesHolder(AFSeries s) : S(std::move(s)) {}
};

at::Tensor af_kan_layer_plain(const at::Tensor& x, const at::Tensor& lo_p, const at::Tensor& hi_p,
                              const at::Tensor& w, const at::Tensor& b, const at::Tensor& temp,
                              const at::Tensor& weight, const std::optional<at::Tensor>& gam,
                              const std::optional<at::Tensor>& bet, int64_t act, int64_t func,
                              int64_t mode, bool tanh, double eps, int64_t knots, bool out_t) {
  auto ut = transposed_input(x, tanh);
  check_af_layer(ut, w, b, temp, weight, gam, bet, knots);
  auto wc = w.reshape({-1}).contiguous();
  auto [ot, r] = af_layer_fwd(ut, lo_p, hi_p, wc, b, temp, gam.value_or(at::Tensor()),
                              bet.value_or(at::Tensor()), act, func, mode, eps, tanh, knots);
  return project(ot, weight, std::nullopt, x, out_t);  // y = ot^T W^T (no bias)
}

struct AFKANLayerFunction : public torch::autograd::Function<AFKANLayerFunction> {
  // edges: x 0, low 1, high 2, w 3, b 4, temperature 5, weight 6, norm_w 7, norm_b 8
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& lo_p,
                            const at::Tensor& hi_p, const at::Tensor& w, const at::Tensor& b,
                            const at::Tensor& temp, const at::Tensor& weight,
                            const std::optional<at::Tensor>& gam,
                            const std::optional<at::Tensor>& bet, int64_t act, int64_t func,
                            int64_t mode, bool tanh, double eps, int64_t knots, bool out_t,
                            bool need_red, bool keep_tail) {
    auto ut = transposed_input(x, tanh);
    check_af_layer(ut, w, b, temp, weight, gam, bet, knots);
    auto wc = w.reshape({-1}).contiguous();
    const at::Tensor g = gam.value_or(at::Tensor()), be = bet.value_or(at::Tensor());
    std::optional<AFSeries> S;
    std::vector<at::Tensor> kept;
    auto [ot, r] = af_layer_fwd(ut, lo_p, hi_p, wc, b, temp, g, be, act, func, mode, eps, tanh,
                                knots, need_red, &S, keep_tail ? &kept : nullptr);
    if (S) {  // kept for the backward (a capsule: the context holds IValues)
      ctx->saved_data["series"] =
          at::IValue::make_capsule(c10::make_intrusive<SeriesHolder>(std::move(*S)));
    }
    // saved: ut, the min / max (and the series path's ties with their partials), and (keep_tail,
    // whenever a backward can follow) the act's output with the tail's values (a, s0n unless
    // keeps_s0n says no, s1n, act'(q); the LayerNorm's mean and 1 / std), so that the backward
    // recomputes none of the tail; never f or the contractions
    const bool series = r.size() > 4;
    auto kt = [&](size_t k) { return keep_tail ? kept[k] : at::Tensor(); };
    ctx->save_for_backward({ut, lo_p, hi_p, wc, b, temp, weight, g, be, r[2], r[3],
                            series ? r[4] : at::Tensor(), series ? r[5] : at::Tensor(), kt(0),
                            kt(1)});
    ctx->saved_data["act"] = act;
    ctx->saved_data["func"] = func;
    ctx->saved_data["mode"] = mode;
    ctx->saved_data["tanh"] = tanh;
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["xshape"] = x.sizes().vec();
    ctx->saved_data["wshape"] = w.sizes().vec();
    // x does not lie as (in, N) (the previous KAN layer's out_t output does): the series path's
    // input gradient is written row-major, in x's own layout, not as a transposed view that the
    // next consumer (AccumulateGrad, the layer below) would copy
    const auto x2 = x.dim() == 2 ? x : x.reshape({-1, x.size(-1)});
    ctx->saved_data["x_rows"] = !x2.t().is_contiguous();
    return project(ot, weight, std::nullopt, x, out_t);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    no_double_backward("af_kan");
    auto sv = ctx->get_saved_variables();
    const auto &ut = sv[0], &lo_p = sv[1], &hi_p = sv[2], &w = sv[3], &weight = sv[6];
    const int64_t act = ctx->saved_data["act"].toInt(), mode = ctx->saved_data["mode"].toInt();
    variable_list out(18);  // one per forward argument
    if (!grads[0].defined()) return out;
    const int64_t nin = ut.size(0), N = ut.size(1);
    const int64_t func = ctx->saved_data["func"].toInt();
    auto gy2 = grads[0].reshape({N, weight.size(0)});  // (N, out)
    auto got = scratch(2, ut.sizes(), ut);              // (in, N)
    gemm_out(got, weight.t(), gy2.t());
    const bool need_red = ctx->needs_input_grad(0) || ctx->needs_input_grad(1) ||
                          ctx->needs_input_grad(2) || ctx->needs_input_grad(3);
    // the series path (the forward's ties saved): the tail evaluates s0, s1 from the
    // series and, where the backward's series converge, sinks du and the moments itself
    // (the forward's, kept in the context; with the backward's parts where it could fit them)
    const AFSeries* src = nullptr;
    if (sv[11].defined()) {
      const auto it = ctx->saved_data.find("series");
      TORCH_CHECK(it != ctx->saved_data.end(), "af_kan_layer: the forward's series are missing");
      src = &static_cast<const SeriesHolder*>(it->second.toCapsule().get())->S;
    }
    // (also without need_red where the forward kept no s0n: the moments give its sums)
    const bool s0n = keeps_s0n(src, mode);
    const bool sink = src && src->backward && (need_red || !s0n);
    TORCH_CHECK(sv[13].defined(), "af_kan_layer: the forward kept no tail values for its backward");
    const at::Tensor& ot = sv[13];  // act(q), kept
    // scratch: all are consumed before this backward returns
    at::Tensor gs0t, gs1t, gut;
    if (!sink) gs0t = scratch(3, ut.sizes(), ut), gs1t = scratch(4, ut.sizes(), ut);
    const bool gut_rows = sink && ctx->saved_data["x_rows"].toBool();
    if (sink && ctx->needs_input_grad(0)) {
      gut = gut_rows ? at::empty({N, nin}, ut.options()) : at::empty_like(ut);
    }
    std::vector<at::Tensor> r{at::Tensor(), at::Tensor(), sv[9], sv[10]};  // (s0t, s1t,) lo, hi
    at::Tensor glo_rows, ghi_rows;
    if (mode == 1) glo_rows = at::empty({N}, ut.options()), ghi_rows = at::empty({N}, ut.options());
    std::vector<double> part;
    double gb = 0, gt = 0, gwx = 0, glo = 0, ghi = 0;
    std::vector<double> gg(nin, 0.0), gbe(nin, 0.0);
    const int64_t nm = sink ? 2 * (src->Dm + 1) : 0;
    std::vector<double> M0(nm / 2, 0.0), M1(nm / 2, 0.0);
    AT_DISPATCH_FLOATING_TYPES(ut.scalar_type(), "af_kan_layer_bwd", [&] {
      auto P = tail_args<scalar_t>(ut, w, sv[4], sv[5], sv[7], sv[8], r, act, mode,
                                   ctx->saved_data["eps"].toDouble());
      auto ptr = [](const at::Tensor& t) { return t.defined() ? t.data_ptr<scalar_t>() : nullptr; };
      if (src) P.ut = ut.data_ptr<scalar_t>(), P.series = src, P.sink = sink, P.gut = ptr(gut);
      P.gut_rows = gut_rows;
      P.kept = sv[14].data_ptr<scalar_t>();
      P.ks = s0n ? 4 : 3;
      std::vector<scalar_t> lanes;
      tail_bwd_kernel<scalar_t>(P, got.data_ptr<scalar_t>(), ptr(gs0t), ptr(gs1t), ptr(glo_rows),
                                ptr(ghi_rows), part, lanes);
      const int64_t np = kTailSums, chunks = (N + kChunk - 1) / kChunk;
      for (int64_t ch = 0; ch < chunks; ++ch) {  // chunk order: independent of threads
        const double* pp = part.data() + ch * (np + nm);
        gb += pp[0], gt += pp[1], gwx += pp[2], glo += pp[3], ghi += pp[4];
        for (int64_t d = 0; d < nm / 2; ++d) M0[d] += pp[np + d], M1[d] += pp[np + nm / 2 + d];
      }
      if (!s0n) {  // the s0n-weighted sums the tail left out (keeps_s0n)
        const scalar_t span = P.hi[0] - P.lo[0];  // mode 0: one scale (mode 2: none)
        const double C = s0_sum(*src, M0);
        gt -= (C + static_cast<double>(P.b) * gb) * static_cast<double>(P.it);  // gb = sum gs0n
        if (mode == 0 && span > scalar_t(0)) {
          glo += C / static_cast<double>(span), ghi -= C / static_cast<double>(span);
        }
      }
      using VS = Vectorized<scalar_t>;
      constexpr int64_t S = VS::size();
      for (int64_t j = 0; j < (lanes.empty() ? 0 : 2 * nin); ++j) {  // dgamma, dbeta: per lane
        VS acc(scalar_t(0));                                          // in chunk order, then
        for (int64_t ch = 0; ch < chunks; ++ch) {                     // across the lanes
          acc = acc + VS::loadu(lanes.data() + (ch * 2 * nin + j) * S);
        }
        (j < nin ? gg[j] : gbe[j - nin]) = static_cast<double>(hsum(acc));
      }
    });
    if (need_red) {
      std::optional<at::Tensor> glo_t, ghi_t;
      if (mode == 1) glo_t = glo_rows, ghi_t = ghi_rows;
      if (mode == 0) glo_t = scalar_like({1}, glo, ut.options()), ghi_t = scalar_like({1}, ghi, ut.options());
      std::vector<at::Tensor> red;  // (gut, glow, ghigh, gw)
      if (sink) {
        float* pg = gut.defined() ? gut.data_ptr<float>() : nullptr;
        auto g = af_series_grads(ut, w, act, func, mode, *src, M0, M1, glo_t, ghi_t, sv[11],
                                 sv[12], pg, gut_rows);
        red = {gut, g[0], g[1], g[2]};
      } else {
        red = af_reduce_t_bwd(ut, lo_p, hi_p, w, act, func, mode, gs0t, gs1t, r[2].reshape({-1}),
                              r[3].reshape({-1}), glo_t, ghi_t, ctx->saved_data["tanh"].toBool(),
                              ctx->needs_input_grad(0));
      }
      if (ctx->needs_input_grad(0)) {
        const auto xshape = ctx->saved_data["xshape"].toIntVector();
        out[0] = gut_rows ? red[0].view(xshape) : red[0].t().reshape(xshape);
      }
      if (ctx->needs_input_grad(1)) out[1] = red[1];
      if (ctx->needs_input_grad(2)) out[2] = red[2];
      if (ctx->needs_input_grad(3)) {
        if (mode != 2) {  // the scale's share, in place on the fresh (G,) gradient: no ATen op
          AT_DISPATCH_FLOATING_TYPES(red[3].scalar_type(), "af_kan_layer_bwd", [&] {
            scalar_t* p = red[3].data_ptr<scalar_t>();
            for (int64_t j = 0; j < red[3].numel(); ++j) {
              p[j] = static_cast<scalar_t>(static_cast<double>(p[j]) + gwx);
            }
          });
        }
        out[3] = red[3].view(ctx->saved_data["wshape"].toIntVector());
      }
    }
    auto opts = ut.options();
    if (ctx->needs_input_grad(4)) out[4] = scalar_like({1}, gb, opts);
    if (ctx->needs_input_grad(5)) {
      const bool pass = scalar_value(sv[5]) >= 1.0;  // clamp(min=1)'s gradient mask
      out[5] = scalar_like({}, pass ? gt : 0.0, opts);
    }
    if (ctx->needs_input_grad(6)) out[6] = weight_grad(ot, gy2);  // (out, in)
    if (sv[7].defined()) {
      auto to_t = [&](const std::vector<double>& v) {  // one allocation, no conversion op
        auto t = at::empty({static_cast<int64_t>(v.size())}, opts);
        AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "af_kan_layer_bwd", [&] {
          scalar_t* p = t.data_ptr<scalar_t>();
          for (size_t i = 0; i < v.size(); ++i) p[i] = static_cast<scalar_t>(v[i]);
        });
        return t;
      };
      if (ctx->needs_input_grad(7)) out[7] = to_t(gg);
      if (ctx->needs_input_grad(8)) out[8] = to_t(gbe);
    }
    return out;
  }
};

at::Tensor af_kan_layer_autograd(const at::Tensor& x, const at::Tensor& lo_p,
                                 const at::Tensor& hi_p, const at::Tensor& w, const at::Tensor& b,
                                 const at::Tensor& temp, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& gam,
                                 const std::optional<at::Tensor>& bet, int64_t act, int64_t func,
                                 int64_t mode, bool tanh, double eps, int64_t knots,
                                 bool out_t) {
  // whether a backward will need the reduction's gradients (x, low, high, w): then the
  // forward fits the backward's series too
  const bool grad = at::GradMode::is_enabled();
  const bool need_red = grad && (x.requires_grad() || lo_p.requires_grad() ||
                                 hi_p.requires_grad() || w.requires_grad());
  // any backward at all runs the tail's: then the forward keeps its values for it
  const bool keep_tail =
      need_red || (grad && (b.requires_grad() || temp.requires_grad() || weight.requires_grad() ||
                            (gam && gam->requires_grad()) || (bet && bet->requires_grad())));
  return AFKANLayerFunction::apply(x, lo_p, hi_p, w, b, temp, weight, gam, bet, act, func, mode,
                                   tanh, eps, knots, out_t, need_red, keep_tail);
}

}  // namespace actlab_kan
