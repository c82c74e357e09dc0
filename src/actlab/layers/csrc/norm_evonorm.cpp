// actlab layer kernels: EvoNorm-B0 / S0, fused forward and backward on the CPU.
//
// EvoNorm-B0 (Liu et al. 2020, arXiv 2004.02967) on x (B, C, n), n = H W:
//   mu, sigma^2 per (b, c) over n; V_c = mean_b sigma^2 + var_b mu (the batch variance, law of
//   total variance; the running variance in eval), L = sqrt(V + eps), s = sqrt(sigma^2 + eps),
//   R = v x + s, D = max(R, L), y = x / D gamma + beta.
//   Backward with a = g gamma / D, dD = -a x / D, m = [R > L]:
//   dx = a + v m dD + (2/n) dsigma2 (x - mu) + (2/(B n)) dV (x - mu_c)
//   dsigma2 = sum_n m dD / (2 s),  dV = sum_{b,n} (1 - m) dD / (2 L)  (0 in eval)
//   dv = sum m dD x,  dgamma = sum g x / D,  dbeta = sum g
//   One task per channel (its B rows): moments, then y; backward: one pass for the sums of
//   each row, one for dx.
//
// EvoNorm-S0 on x (B, C, n), G groups of C/G channels (M = n C/G values per (b, group)):
//   inv = (var_group(x) + eps)^(-1/2), s = sigmoid(v x), f = x s, y = f inv gamma + beta
//   dx = g gamma inv (s + v x s (1 - s)) - dinv inv^3 (x - mu) / M,  dinv = sum g gamma f
//   dv = sum g gamma inv x^2 s (1 - s),  dgamma = sum g f inv,  dbeta = sum g
//   One task per (b, group): mean, variance (two passes over the group, in cache), y;
//   backward: one pass for the sums, one for dx.
//
// NaN and inf: max(R, L) propagates NaN and the B0 mask m multiplies (as in the torch path),
// so a non-finite row spoils what it spoils there. Helpers, numerics, build: norm_common.h.

#include "norm_common.h"

namespace {

using namespace actlab_norm;

// ------------------------------------------------------------------ EvoNorm-B0
// x (B, C, n); running_var given: eval (its variance replaces the batch one).
// Returns y, the variance used per channel (C), and for backward mu (B, C), s (B, C), L (C).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> evonorm_b0_fwd(
    const at::Tensor& x_, const at::Tensor& v_, const at::Tensor& w_, const at::Tensor& b_,
    const c10::optional<at::Tensor>& running_var, double eps) {
  check_input(x_, "evonorm_b0_fwd", 3);
  auto x = x_.contiguous();
  const int64_t B = x.size(0), C = x.size(1), n = x.size(2);
  TORCH_CHECK(B > 0 && n > 0, "evonorm_b0_fwd: needs a non-empty batch and spatial size");
  auto v = param(v_, x, C, "evonorm_b0_fwd", "v");
  auto w = param(w_, x, C, "evonorm_b0_fwd", "weight");
  auto b = param(b_, x, C, "evonorm_b0_fwd", "bias");
  const bool batch = !running_var.has_value() || !running_var->defined();
  at::Tensor rv;
  if (!batch) rv = param(*running_var, x, C, "evonorm_b0_fwd", "running_var");
  auto y = at::empty_like(x, at::MemoryFormat::Contiguous);
  auto var = at::empty({C}, x.options());
  auto mean = at::empty({B, C}, x.options());
  auto std_ = at::empty({B, C}, x.options());
  auto left = at::empty({C}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "evonorm_b0_fwd", [&] {
    using T = scalar_t;
    using V = Vectorized<T>;
    const T* px = x.data_ptr<T>();
    T* py = y.data_ptr<T>();
    const T *pv = v.data_ptr<T>(), *pw = w.data_ptr<T>(), *pb = b.data_ptr<T>();
    const T* prv = batch ? nullptr : rv.data_ptr<T>();
    T *pmean = mean.data_ptr<T>(), *pstd = std_.data_ptr<T>();
    T *pvar = var.data_ptr<T>(), *pleft = left.data_ptr<T>();
    at::parallel_for(0, C, std::max<int64_t>(1, kGrain / (B * n)), [&](int64_t c0, int64_t c1) {
      std::vector<double> mu(B), s2(B);
      for (int64_t c = c0; c < c1; ++c) {
        for (int64_t bi = 0; bi < B; ++bi) {  // moments of each row: mean, then centred
          const T* xr = px + (bi * C + c) * n;
          V acc(static_cast<T>(0));
          for_vec<T>(n, [&](int64_t i, int64_t k) { acc = acc + load(xr + i, k); });
          mu[bi] = hsum(acc) / n;
          const V m(static_cast<T>(mu[bi]));
          V sq(static_cast<T>(0));
          for_vec<T>(n, [&](int64_t i, int64_t k) { sq = add_sq_dev(sq, xr + i, k, m); });
          s2[bi] = hsum(sq) / n;
        }
        double vc;
        if (batch) {  // law of total variance: mean of the row variances + variance of the means
          double mc = 0.0, within = 0.0, between = 0.0;
          for (int64_t bi = 0; bi < B; ++bi) mc += mu[bi];
          mc /= B;
          for (int64_t bi = 0; bi < B; ++bi) {
            within += s2[bi];
            between += (mu[bi] - mc) * (mu[bi] - mc);
          }
          vc = (within + between) / B;
        } else {
          vc = prv[c];
        }
        const T L = T(std::sqrt(vc + eps));
        pvar[c] = T(vc), pleft[c] = L;
        const V vL(L), vv(pv[c]), vw(pw[c]), vb(pb[c]);
        for (int64_t bi = 0; bi < B; ++bi) {
          const T s = T(std::sqrt(s2[bi] + eps));
          pmean[bi * C + c] = T(mu[bi]), pstd[bi * C + c] = s;
          const V vs(s);
          const T* xr = px + (bi * C + c) * n;
          T* yr = py + (bi * C + c) * n;
          for_vec<T>(n, [&](int64_t i, int64_t k) {
            const V xv = V::loadu(xr + i, k);
            const V den = at::vec::maximum(at::vec::fmadd(vv, xv, vs), vL);
            at::vec::fmadd(xv * recip(den), vw, vb).store(yr + i, k);
          });
        }
      }
    });
  });
  return {y, var, mean, std_, left};
}

// gx, gv, gw, gb; batch: the variance was the batch one (its gradient flows)
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> evonorm_b0_bwd(
    const at::Tensor& x_, const at::Tensor& g_, const at::Tensor& v_, const at::Tensor& w_,
    const at::Tensor& mean_, const at::Tensor& std_, const at::Tensor& left_, bool batch) {
  check_input(x_, "evonorm_b0_bwd", 3);
  auto x = x_.contiguous();
  auto g = grad_of(g_, x);
  const int64_t B = x.size(0), C = x.size(1), n = x.size(2);
  auto v = param(v_, x, C, "evonorm_b0_bwd", "v");
  auto w = param(w_, x, C, "evonorm_b0_bwd", "weight");
  auto mean = param(mean_, x, B * C, "evonorm_b0_bwd", "mean");
  auto sd = param(std_, x, B * C, "evonorm_b0_bwd", "std");
  auto left = param(left_, x, C, "evonorm_b0_bwd", "left");
  auto gx = at::empty_like(x, at::MemoryFormat::Contiguous);
  auto gv = at::empty({C}, x.options());
  auto gw = at::empty({C}, x.options());
  auto gb = at::empty({C}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "evonorm_b0_bwd", [&] {
    using T = scalar_t;
    using V = Vectorized<T>;
    const T *px = x.data_ptr<T>(), *pg = g.data_ptr<T>();
    const T *pv = v.data_ptr<T>(), *pw = w.data_ptr<T>();
    const T *pmean = mean.data_ptr<T>(), *psd = sd.data_ptr<T>(), *pleft = left.data_ptr<T>();
    T* pgx = gx.data_ptr<T>();
    T *pgv = gv.data_ptr<T>(), *pgw = gw.data_ptr<T>(), *pgb = gb.data_ptr<T>();
    const V one(static_cast<T>(1));
    at::parallel_for(0, C, std::max<int64_t>(1, kGrain / (B * n)), [&](int64_t c0, int64_t c1) {
      std::vector<double> ds(B);
      for (int64_t c = c0; c < c1; ++c) {
        const V vL(pleft[c]), vv(pv[c]), vw(pw[c]);
        double sgq = 0.0, sg = 0.0, sv = 0.0, sleft = 0.0;
        for (int64_t bi = 0; bi < B; ++bi) {  // pass 1: the sums of each row
          const T* xr = px + (bi * C + c) * n;
          const T* gr = pg + (bi * C + c) * n;
          const V vs(psd[bi * C + c]);
          V aq(static_cast<T>(0)), ag(static_cast<T>(0)), av(static_cast<T>(0)), ar(static_cast<T>(0)), al(static_cast<T>(0));
          for_vec<T>(n, [&](int64_t i, int64_t k) {
            const V xv = load(xr + i, k);
            const V gv_ = load(gr + i, k);
            const V right = at::vec::fmadd(vv, xv, vs);
            const V inv = recip(at::vec::maximum(right, vL));
            const V q = xv * inv;
            const V na = gv_ * vw * inv * q;       // -dD
            const V nr = na * (right > vL & one);  // -m dD (multiplied: NaN stays NaN)
            aq = at::vec::fmadd(gv_, q, aq);
            ag = ag + gv_;
            av = at::vec::fmadd(nr, xv, av);
            ar = ar + nr;
            al = al + (na - nr);  // -(1 - m) dD
          });
          sgq += hsum(aq), sg += hsum(ag), sv -= hsum(av), sleft -= hsum(al);
          ds[bi] = -hsum(ar);
        }
        pgw[c] = T(sgq), pgb[c] = T(sg), pgv[c] = T(sv);
        const double L = pleft[c];
        const double cv = batch ? sleft / (L * B * n) : 0.0;  // (2/(B n)) dV, dV = dL / (2 L)
        double mc = 0.0;  // the channel mean (batch mode only: in eval 0 * NaN would leak)
        if (batch) {
          for (int64_t bi = 0; bi < B; ++bi) mc += pmean[bi * C + c];
          mc /= B;
        }
        for (int64_t bi = 0; bi < B; ++bi) {  // pass 2: dx
          const double cs = ds[bi] / (double(psd[bi * C + c]) * n);  // (2/n) dsigma2
          const V coef(static_cast<T>(cs + cv)), shift(static_cast<T>(cs * pmean[bi * C + c] + cv * mc));
          const T* xr = px + (bi * C + c) * n;
          const T* gr = pg + (bi * C + c) * n;
          T* gxr = pgx + (bi * C + c) * n;
          const V vs(psd[bi * C + c]);
          for_vec<T>(n, [&](int64_t i, int64_t k) {
            const V xv = V::loadu(xr + i, k);
            const V gv_ = V::loadu(gr + i, k);
            const V right = at::vec::fmadd(vv, xv, vs);
            const V inv = recip(at::vec::maximum(right, vL));
            const V a = gv_ * vw * inv;
            const V dr = (a * xv * inv) * (right > vL & one);  // -m dD
            const V out = at::vec::fmadd(xv, coef, a - vv * dr) - shift;
            out.store(gxr + i, k);
          });
        }
      }
    });
  });
  return {gx, gv, gw, gb};
}

// ------------------------------------------------------------------ EvoNorm-S0
// x (B, C, n), groups dividing C. Returns y, mu (B, G), inv (B, G).
std::tuple<at::Tensor, at::Tensor, at::Tensor> evonorm_s0_fwd(
    const at::Tensor& x_, const at::Tensor& v_, const at::Tensor& w_, const at::Tensor& b_,
    int64_t groups, double eps) {
  check_input(x_, "evonorm_s0_fwd", 3);
  auto x = x_.contiguous();
  const int64_t B = x.size(0), C = x.size(1), n = x.size(2);
  TORCH_CHECK(groups >= 1 && C % groups == 0, "evonorm_s0_fwd: ", groups,
              " groups do not divide ", C, " channels");
  TORCH_CHECK(n > 0, "evonorm_s0_fwd: needs a non-empty spatial size");
  const int64_t G = groups, per = C / G, M = per * n;
  auto v = param(v_, x, C, "evonorm_s0_fwd", "v");
  auto w = param(w_, x, C, "evonorm_s0_fwd", "weight");
  auto b = param(b_, x, C, "evonorm_s0_fwd", "bias");
  auto y = at::empty_like(x, at::MemoryFormat::Contiguous);
  auto mean = at::empty({B, G}, x.options());
  auto inv = at::empty({B, G}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "evonorm_s0_fwd", [&] {
    using T = scalar_t;
    using V = Vectorized<T>;
    const T* px = x.data_ptr<T>();
    T* py = y.data_ptr<T>();
    const T *pv = v.data_ptr<T>(), *pw = w.data_ptr<T>(), *pb = b.data_ptr<T>();
    T *pmean = mean.data_ptr<T>(), *pinv = inv.data_ptr<T>();
    at::parallel_for(0, B * G, std::max<int64_t>(1, kGrain / M), [&](int64_t j0, int64_t j1) {
      for (int64_t j = j0; j < j1; ++j) {  // j = b G + group: M contiguous values
        const T* xg = px + j * M;
        V acc(static_cast<T>(0));
        for_vec<T>(M, [&](int64_t i, int64_t k) { acc = acc + load(xg + i, k); });
        const T mu = T(hsum(acc) / M);
        const V m(mu);
        V sq(static_cast<T>(0));
        for_vec<T>(M, [&](int64_t i, int64_t k) { sq = add_sq_dev(sq, xg + i, k, m); });
        const double var = hsum(sq) / M;
        const T r = T(1.0 / std::sqrt(var + eps));
        pmean[j] = mu, pinv[j] = r;
        const int64_t c_first = (j % G) * per;
        for (int64_t cc = 0; cc < per; ++cc) {
          const int64_t c = c_first + cc;
          const V vv(pv[c]), wr(pw[c] * r), vb(pb[c]);
          const T* xr = xg + cc * n;
          T* yr = py + j * M + cc * n;
          for_vec<T>(n, [&](int64_t i, int64_t k) {
            const V xv = V::loadu(xr + i, k);
            at::vec::fmadd(xv * sigmoid(xv * vv), wr, vb).store(yr + i, k);
          });
        }
      }
    });
  });
  return {y, mean, inv};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> evonorm_s0_bwd(
    const at::Tensor& x_, const at::Tensor& g_, const at::Tensor& v_, const at::Tensor& w_,
    const at::Tensor& mean_, const at::Tensor& inv_, int64_t groups) {
  check_input(x_, "evonorm_s0_bwd", 3);
  auto x = x_.contiguous();
  auto g = grad_of(g_, x);
  const int64_t B = x.size(0), C = x.size(1), n = x.size(2);
  TORCH_CHECK(groups >= 1 && C % groups == 0, "evonorm_s0_bwd: ", groups,
              " groups do not divide ", C, " channels");
  const int64_t G = groups, per = C / G, M = per * n;
  auto v = param(v_, x, C, "evonorm_s0_bwd", "v");
  auto w = param(w_, x, C, "evonorm_s0_bwd", "weight");
  auto mean = param(mean_, x, B * G, "evonorm_s0_bwd", "mean");
  auto inv = param(inv_, x, B * G, "evonorm_s0_bwd", "inv");
  auto gx = at::empty_like(x, at::MemoryFormat::Contiguous);
  std::vector<double> part(3 * B * C);  // per (b, c): sum g, sum g f, sum g x^2 s (1 - s)
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "evonorm_s0_bwd", [&] {
    using T = scalar_t;
    using V = Vectorized<T>;
    const T *px = x.data_ptr<T>(), *pg = g.data_ptr<T>();
    const T *pv = v.data_ptr<T>(), *pw = w.data_ptr<T>();
    const T *pmean = mean.data_ptr<T>(), *pinv = inv.data_ptr<T>();
    T* pgx = gx.data_ptr<T>();
    at::parallel_for(0, B * G, std::max<int64_t>(1, kGrain / M), [&](int64_t j0, int64_t j1) {
      for (int64_t j = j0; j < j1; ++j) {
        const int64_t c_first = (j % G) * per;
        const double r = pinv[j];
        double dinv = 0.0;
        for (int64_t cc = 0; cc < per; ++cc) {  // pass 1: per-channel sums
          const int64_t c = c_first + cc;
          const V vv(pv[c]);
          const T* xr = px + j * M + cc * n;
          const T* gr = pg + j * M + cc * n;
          V ag(static_cast<T>(0)), af(static_cast<T>(0)), as(static_cast<T>(0));
          for_vec<T>(n, [&](int64_t i, int64_t k) {
            const V xv = load(xr + i, k);
            const V gv_ = load(gr + i, k);
            const V s = sigmoid(xv * vv);
            const V gxv = gv_ * xv;
            ag = ag + gv_;
            af = at::vec::fmadd(gxv, s, af);                // g f
            as = at::vec::fmadd(gxv * xv, s - s * s, as);  // g x^2 s (1 - s)
          });
          double* pp = part.data() + 3 * (j / G * C + c);
          pp[0] = hsum(ag), pp[1] = hsum(af), pp[2] = hsum(as);
          dinv += double(pw[c]) * pp[1];
        }
        const V k_(static_cast<T>(-dinv * r * r * r / M)), mu(pmean[j]);
        for (int64_t cc = 0; cc < per; ++cc) {  // pass 2: dx
          const int64_t c = c_first + cc;
          const V vv(pv[c]), wr(static_cast<T>(pw[c] * r));
          const T* xr = px + j * M + cc * n;
          const T* gr = pg + j * M + cc * n;
          T* gxr = pgx + j * M + cc * n;
          for_vec<T>(n, [&](int64_t i, int64_t k) {
            const V xv = V::loadu(xr + i, k);
            const V gv_ = V::loadu(gr + i, k);
            const V vx = xv * vv;
            const V s = sigmoid(vx);
            const V df = at::vec::fmadd(vx, s - s * s, s);  // d(x s)/dx
            at::vec::fmadd(gv_ * wr, df, k_ * (xv - mu)).store(gxr + i, k);
          });
        }
      }
    });
  });
  // parameter gradients: per channel, summed over b in order
  auto opts = x.options().dtype(at::kDouble);
  auto gv = at::zeros({C}, opts), gw = at::zeros({C}, opts), gb = at::zeros({C}, opts);
  double *pgv = gv.data_ptr<double>(), *pgw = gw.data_ptr<double>(), *pgb = gb.data_ptr<double>();
  auto wd = w.to(at::kDouble);
  auto invd = inv.to(at::kDouble);
  const double* pw = wd.data_ptr<double>();
  const double* pinv = invd.data_ptr<double>();
  for (int64_t bi = 0; bi < B; ++bi) {
    for (int64_t c = 0; c < C; ++c) {
      const double* pp = part.data() + 3 * (bi * C + c);
      const double r = pinv[bi * G + c / per];
      pgb[c] += pp[0], pgw[c] += pp[1] * r, pgv[c] += pp[2] * r * pw[c];
    }
  }
  const auto dt = x.scalar_type();
  return {gx, gv.to(dt), gw.to(dt), gb.to(dt)};
}

// ------------------------------------------------------------------ autograd
struct B0Function : public torch::autograd::Function<B0Function> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& v,
                               const at::Tensor& w, const at::Tensor& b,
                               const c10::optional<at::Tensor>& running_var, double eps) {
    auto [y, var, mean, sd, left] = evonorm_b0_fwd(x, v, w, b, running_var, eps);
    ctx->save_for_backward({x, v, w, b, mean, sd, left});
    ctx->saved_data["batch"] = !running_var.has_value() || !running_var->defined();
    ctx->mark_non_differentiable({var});
    return {y, var};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    no_double_backward("evonorm_b0");
    auto s = ctx->get_saved_variables();
    auto [gx, gv, gw, gb] =
        evonorm_b0_bwd(s[0], grads[0], s[1], s[2], s[4], s[5], s[6], ctx->saved_data["batch"].toBool());
    return {ctx->needs_input_grad(0) ? gx : at::Tensor(), grad_as(gv, s[1], ctx->needs_input_grad(1)),
            grad_as(gw, s[2], ctx->needs_input_grad(2)), grad_as(gb, s[3], ctx->needs_input_grad(3)),
            at::Tensor(), at::Tensor()};
  }
};

struct S0Function : public torch::autograd::Function<S0Function> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& v,
                            const at::Tensor& w, const at::Tensor& b, int64_t groups, double eps) {
    auto [y, mean, inv] = evonorm_s0_fwd(x, v, w, b, groups, eps);
    ctx->save_for_backward({x, v, w, b, mean, inv});
    ctx->saved_data["groups"] = groups;
    return y;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    no_double_backward("evonorm_s0");
    auto s = ctx->get_saved_variables();
    auto [gx, gv, gw, gb] =
        evonorm_s0_bwd(s[0], grads[0], s[1], s[2], s[4], s[5], ctx->saved_data["groups"].toInt());
    return {ctx->needs_input_grad(0) ? gx : at::Tensor(), grad_as(gv, s[1], ctx->needs_input_grad(1)),
            grad_as(gw, s[2], ctx->needs_input_grad(2)), grad_as(gb, s[3], ctx->needs_input_grad(3)),
            at::Tensor(), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> evonorm_b0_autograd(const at::Tensor& x, const at::Tensor& v,
                                                       const at::Tensor& w, const at::Tensor& b,
                                                       const c10::optional<at::Tensor>& running_var,
                                                       double eps) {
  auto out = B0Function::apply(x, v, w, b, running_var, eps);
  return {out[0], out[1]};
}

at::Tensor evonorm_s0_autograd(const at::Tensor& x, const at::Tensor& v, const at::Tensor& w,
                               const at::Tensor& b, int64_t groups, double eps) {
  return S0Function::apply(x, v, w, b, groups, eps);
}

std::tuple<at::Tensor, at::Tensor> evonorm_b0_plain(const at::Tensor& x, const at::Tensor& v,
                                                    const at::Tensor& w, const at::Tensor& b,
                                                    const c10::optional<at::Tensor>& running_var,
                                                    double eps) {
  auto out = evonorm_b0_fwd(x, v, w, b, running_var, eps);
  return {std::get<0>(out), std::get<1>(out)};
}

at::Tensor evonorm_s0_plain(const at::Tensor& x, const at::Tensor& v, const at::Tensor& w,
                            const at::Tensor& b, int64_t groups, double eps) {
  return std::get<0>(evonorm_s0_fwd(x, v, w, b, groups, eps));
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(actlab_norm, m) {  // the library itself: norm_polynorm.cpp
  m.def(
      "evonorm_b0_fwd(Tensor x, Tensor v, Tensor weight, Tensor bias, Tensor? running_var, "
      "float eps) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "evonorm_b0_bwd(Tensor x, Tensor g, Tensor v, Tensor weight, Tensor mean, Tensor std, "
      "Tensor left, bool batch) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "evonorm_b0(Tensor x, Tensor v, Tensor weight, Tensor bias, Tensor? running_var, "
      "float eps) -> (Tensor, Tensor)");
  m.def(
      "evonorm_s0_fwd(Tensor x, Tensor v, Tensor weight, Tensor bias, int groups, float eps) "
      "-> (Tensor, Tensor, Tensor)");
  m.def(
      "evonorm_s0_bwd(Tensor x, Tensor g, Tensor v, Tensor weight, Tensor mean, Tensor inv, "
      "int groups) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "evonorm_s0(Tensor x, Tensor v, Tensor weight, Tensor bias, int groups, float eps) "
      "-> Tensor");
}

TORCH_LIBRARY_IMPL(actlab_norm, CPU, m) {
  m.impl("evonorm_b0_fwd", evonorm_b0_fwd);
  m.impl("evonorm_b0_bwd", evonorm_b0_bwd);
  m.impl("evonorm_b0", evonorm_b0_plain);
  m.impl("evonorm_s0_fwd", evonorm_s0_fwd);
  m.impl("evonorm_s0_bwd", evonorm_s0_bwd);
  m.impl("evonorm_s0", evonorm_s0_plain);
}

TORCH_LIBRARY_IMPL(actlab_norm, Autograd, m) {
  m.impl("evonorm_b0", evonorm_b0_autograd);
  m.impl("evonorm_s0", evonorm_s0_autograd);
}
