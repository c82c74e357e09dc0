// actlab layer kernels: PolyNorm, fused forward and backward on the CPU.
//
// PolyNorm (Zhuo et al. 2024, arXiv 2411.03884), per row of d features (the last axis):
//   r_k = (mean(x^2k) + eps)^(-1/2),  A_k = a_k r_k             k = 1, 2, 3
//   y   = a0 + x (A1 + x (A2 + x A3))                            (Horner)
//   with S_k = sum_i g_i x_i^k and B_k = A_k r_k^2 S_k / d:
//   dx  = g (A1 + x (2 A2 + 3 A3 x)) - x (B1 + x^2 (2 B2 + 3 B3 x^2))
//   da_k = sum_rows r_k S_k,  da0 = sum g
//   Forward: one pass over a row for (sum x^2, x^4, x^6), one for y; saves x and r (rows, 3).
//   Backward: one pass for (S1, S2, S3, sum g), one for dx.
//
// Helpers, numerics and build: norm_common.h.

#include "native_isa.h"
#include "norm_common.h"

namespace {

using namespace actlab_norm;

// ------------------------------------------------------------------ PolyNorm
std::tuple<at::Tensor, at::Tensor> polynorm_fwd(const at::Tensor& x_, const at::Tensor& weight,
                                                const at::Tensor& bias, double eps) {
  check_input(x_, "polynorm_fwd", 0);
  auto x = x_.contiguous();
  const int64_t d = x.size(-1);
  const int64_t rows = x.numel() / d;
  auto w = param(weight, x, 3, "polynorm_fwd", "weight");
  auto b = param(bias, x, 1, "polynorm_fwd", "bias");
  auto y = at::empty_like(x, at::MemoryFormat::Contiguous);
  auto r = at::empty({rows, 3}, x.options());  // r1, r2, r3 per row
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "polynorm_fwd", [&] {
    using T = scalar_t;
    using V = Vectorized<T>;
    const T* px = x.data_ptr<T>();
    T* py = y.data_ptr<T>();
    T* pr = r.data_ptr<T>();
    const double a3 = w.data_ptr<T>()[0], a2 = w.data_ptr<T>()[1], a1 = w.data_ptr<T>()[2];
    const V a0(b.data_ptr<T>()[0]);
    at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / d), [&](int64_t r0, int64_t r1) {
      for (int64_t row = r0; row < r1; ++row) {
        const T* xr = px + row * d;
        V s1(static_cast<T>(0)), s2(static_cast<T>(0)), s3(static_cast<T>(0));
        for_vec<T>(d, [&](int64_t i, int64_t c) {
          const V v = load(xr + i, c);
          const V v2 = v * v;
          const V v4 = v2 * v2;
          s1 = s1 + v2;
          s2 = s2 + v4;
          s3 = at::vec::fmadd(v4, v2, s3);
        });
        const double r_1 = 1.0 / std::sqrt(hsum(s1) / d + eps);
        const double r_2 = 1.0 / std::sqrt(hsum(s2) / d + eps);
        const double r_3 = 1.0 / std::sqrt(hsum(s3) / d + eps);
        pr[3 * row] = T(r_1), pr[3 * row + 1] = T(r_2), pr[3 * row + 2] = T(r_3);
        const V A1(static_cast<T>(a1 * T(r_1))), A2(static_cast<T>(a2 * T(r_2))), A3(static_cast<T>(a3 * T(r_3)));
        T* yr = py + row * d;
        for_vec<T>(d, [&](int64_t i, int64_t c) {
          const V v = V::loadu(xr + i, c);
          const V h = at::vec::fmadd(v, at::vec::fmadd(v, A3, A2), A1);
          at::vec::fmadd(v, h, a0).store(yr + i, c);
        });
      }
    });
  });
  return {y, r};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> polynorm_bwd(const at::Tensor& x_,
                                                            const at::Tensor& g_,
                                                            const at::Tensor& weight,
                                                            const at::Tensor& r_) {
  check_input(x_, "polynorm_bwd", 0);
  auto x = x_.contiguous();
  auto g = grad_of(g_, x);
  const int64_t d = x.size(-1);
  const int64_t rows = x.numel() / d;
  auto w = param(weight, x, 3, "polynorm_bwd", "weight");
  auto r = r_.to(x.scalar_type()).contiguous();
  TORCH_CHECK(r.numel() == 3 * rows, "polynorm_bwd: r must hold 3 values per row");
  auto gx = at::empty_like(x, at::MemoryFormat::Contiguous);
  const int64_t per = std::max<int64_t>(1, kBlock / d);  // rows per reduction block
  const int64_t blocks = (rows + per - 1) / per;
  std::vector<double> part(4 * blocks, 0.0);  // per block: da1, da2, da3, da0
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "polynorm_bwd", [&] {
    using T = scalar_t;
    using V = Vectorized<T>;
    const T* px = x.data_ptr<T>();
    const T* pg = g.data_ptr<T>();
    const T* pr = r.data_ptr<T>();
    T* pgx = gx.data_ptr<T>();
    const double a3 = w.data_ptr<T>()[0], a2 = w.data_ptr<T>()[1], a1 = w.data_ptr<T>()[2];
    const int64_t grain = std::max<int64_t>(1, kGrain / (per * d));
    at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
      for (int64_t blk = b0; blk < b1; ++blk) {
        double acc[4] = {0.0, 0.0, 0.0, 0.0};
        for (int64_t row = blk * per; row < std::min(rows, (blk + 1) * per); ++row) {
          const T* xr = px + row * d;
          const T* gr = pg + row * d;
          V t1(static_cast<T>(0)), t2(static_cast<T>(0)), t3(static_cast<T>(0)), tg(static_cast<T>(0));
          for_vec<T>(d, [&](int64_t i, int64_t c) {
            const V v = load(xr + i, c);
            const V gv = load(gr + i, c);
            const V p1 = gv * v;
            const V p2 = p1 * v;
            t1 = t1 + p1;
            t2 = t2 + p2;
            t3 = at::vec::fmadd(p2, v, t3);
            tg = tg + gv;
          });
          const double S1 = hsum(t1), S2 = hsum(t2), S3 = hsum(t3);
          const double r_1 = pr[3 * row], r_2 = pr[3 * row + 1], r_3 = pr[3 * row + 2];
          acc[0] += r_1 * S1, acc[1] += r_2 * S2, acc[2] += r_3 * S3, acc[3] += hsum(tg);
          const double A1 = a1 * r_1, A2 = a2 * r_2, A3 = a3 * r_3;
          const double B1 = A1 * r_1 * r_1 * S1 / d, B2 = A2 * r_2 * r_2 * S2 / d,
                       B3 = A3 * r_3 * r_3 * S3 / d;
          const V c1(static_cast<T>(A1)), c2(static_cast<T>(2 * A2)), c3(static_cast<T>(3 * A3));
          const V e1(static_cast<T>(B1)), e2(static_cast<T>(2 * B2)), e3(static_cast<T>(3 * B3));
          T* gxr = pgx + row * d;
          for_vec<T>(d, [&](int64_t i, int64_t c) {
            const V v = V::loadu(xr + i, c);
            const V gv = V::loadu(gr + i, c);
            const V v2 = v * v;
            const V direct = gv * at::vec::fmadd(v, at::vec::fmadd(c3, v, c2), c1);
            const V norm = v * at::vec::fmadd(v2, at::vec::fmadd(e3, v2, e2), e1);
            (direct - norm).store(gxr + i, c);
          });
        }
        std::copy(acc, acc + 4, part.begin() + 4 * blk);
      }
    });
  });
  double tot[4] = {0.0, 0.0, 0.0, 0.0};
  for (int64_t blk = 0; blk < blocks; ++blk) {
    for (int k = 0; k < 4; ++k) tot[k] += part[4 * blk + k];
  }
  auto opts = weight.options().device(at::kCPU).dtype(at::kDouble);
  auto gw = at::tensor({tot[2], tot[1], tot[0]}, opts).to(weight.scalar_type());  // [a3, a2, a1]
  auto gb = at::tensor({tot[3]}, opts).to(weight.scalar_type());
  return {gx, gw, gb};
}

// ------------------------------------------------------------------ autograd
struct PolyNormFunction : public torch::autograd::Function<PolyNormFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            const at::Tensor& b, double eps) {
    auto [y, r] = polynorm_fwd(x, w, b, eps);
    ctx->save_for_backward({x, w, b, r});
    return y.view(x.sizes());
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    no_double_backward("polynorm");
    auto s = ctx->get_saved_variables();
    auto [gx, gw, gb] = polynorm_bwd(s[0], grads[0], s[1], s[3]);
    return {ctx->needs_input_grad(0) ? gx.view(s[0].sizes()).to(s[0].scalar_type()) : at::Tensor(),
            grad_as(gw, s[1], ctx->needs_input_grad(1)), grad_as(gb, s[2], ctx->needs_input_grad(2)),
            at::Tensor()};
  }
};

at::Tensor polynorm_autograd(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                             double eps) {
  return PolyNormFunction::apply(x, w, b, eps);
}

// the differentiable ops without autograd (inference): the forward kernels' outputs
at::Tensor polynorm_plain(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                          double eps) {
  return std::get<0>(polynorm_fwd(x, w, b, eps)).view(x.sizes());
}

}  // namespace

TORCH_LIBRARY(actlab_norm, m) {
  m.def("polynorm_fwd(Tensor x, Tensor weight, Tensor bias, float eps) -> (Tensor, Tensor)");
  m.def("polynorm_bwd(Tensor x, Tensor g, Tensor weight, Tensor r) -> (Tensor, Tensor, Tensor)");
  m.def("polynorm(Tensor x, Tensor weight, Tensor bias, float eps) -> Tensor");
  m.def("isa() -> str", isa);
}

TORCH_LIBRARY_IMPL(actlab_norm, CPU, m) {
  m.impl("polynorm_fwd", polynorm_fwd);
  m.impl("polynorm_bwd", polynorm_bwd);
  m.impl("polynorm", polynorm_plain);
}

TORCH_LIBRARY_IMPL(actlab_norm, Autograd, m) {
  m.impl("polynorm", polynorm_autograd);
}
