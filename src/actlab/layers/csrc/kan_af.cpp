// AF-KAN: the basis reduction (two contractions over G, the min / max of f with their tie
// counts) and its differentiable op. Formulas below; layout: kan_kernels.cpp.

#include "kan_common.h"

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

}  // namespace actlab_kan
