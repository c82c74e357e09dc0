// actlab sparse decode kernels as torch ops: sparse_linear, gated_mlp (see sparse_gemv.h for
// the formulas, layouts, threading and prefetch notes), and the ISA the library was built for.

#include "native_isa.h"  // isa(), shared by actlab's native libraries
#include "sparse_gemv.h"

#include <torch/library.h>

namespace {

using namespace actlab_sparse;  // NOLINT

// ----------------------------------------------------------------------------- checks
void check_x(const at::Tensor& x, const char* op) {
  TORCH_CHECK(x.device().is_cpu(), op, ": expected CPU tensors, got x on ", x.device());
  TORCH_CHECK(x.scalar_type() == at::kFloat, op, ": x must be float32, got ", x.scalar_type());
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), op, ": x must be a contiguous [rows, in] tensor");
}

void check_w(const at::Tensor& w, const char* op, const char* name) {
  TORCH_CHECK(w.device().is_cpu(), op, ": ", name, " must be on the CPU");
  TORCH_CHECK(w.scalar_type() == at::kFloat || w.scalar_type() == at::kBFloat16, op, ": ", name,
              " must be float32 or bfloat16, got ", w.scalar_type());
  TORCH_CHECK(w.dim() == 2 && w.is_contiguous(), op, ": ", name, " must be contiguous 2-D");
}

const float* opt_vec(const std::optional<at::Tensor>& t, int64_t n, const char* op,
                     const char* name) {
  if (!t.has_value() || !t->defined()) return nullptr;
  TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat && t->is_contiguous() &&
                  t->numel() == n,
              op, ": ", name, " must be a contiguous float32 CPU tensor of ", n, " values, got ",
              t->numel());
  return t->data_ptr<float>();
}

void add_counts(const std::optional<at::Tensor>& counts, int64_t seen, int64_t zeroed) {
  if (!counts.has_value() || !counts->defined()) return;
  TORCH_CHECK(counts->scalar_type() == at::kLong && counts->numel() == 2 && counts->is_contiguous(),
              "counts must be a contiguous int64 tensor of 2 values");
  int64_t* c = counts->data_ptr<int64_t>();
  c[0] += seen;
  c[1] += zeroed;
}

// ----------------------------------------------------------------------------- sparse_linear
at::Tensor sparse_linear(const at::Tensor& x, const at::Tensor& wt,
                         const std::optional<at::Tensor>& bias, double threshold,
                         const std::optional<at::Tensor>& thresholds,
                         const std::optional<at::Tensor>& counts) {
  const char* op = "actlab_sparse.sparse_linear";
  check_x(x, op);
  check_w(wt, op, "wt");
  const int64_t B = x.size(0), K = x.size(1), N = wt.size(1);
  TORCH_CHECK(wt.size(0) == K, op, ": wt is [", wt.size(0), ", ", N, "], x has ", K, " inputs");
  const float* b = opt_vec(bias, N, op, "bias");
  const float* thr = opt_vec(thresholds, K, op, "thresholds");
  auto y = at::empty({B, N}, x.options());
  std::vector<int64_t> idx;
  std::vector<float> xs;
  const int64_t dropped =
      survivors(x.data_ptr<float>(), B, K, static_cast<float>(threshold), thr, idx, xs);
  if (wt.scalar_type() == at::kFloat) {
    sparse_matvec(wt.data_ptr<float>(), N, idx, xs, B, b, y.data_ptr<float>());
  } else {
    sparse_matvec(wt.data_ptr<BFloat16>(), N, idx, xs, B, b, y.data_ptr<float>());
  }
  add_counts(counts, B * K, dropped);
  return y;
}

at::Tensor gated_mlp(const at::Tensor& x, const at::Tensor& gate_t, const at::Tensor& updown,
                     const std::optional<at::Tensor>& gate_b, const std::optional<at::Tensor>& up_b,
                     const std::optional<at::Tensor>& down_b, double threshold,
                     const std::optional<at::Tensor>& thresholds, int64_t act,
                     const std::optional<at::Tensor>& counts) {
  const char* op = "actlab_sparse.gated_mlp";
  check_x(x, op);
  check_w(gate_t, op, "gate_t");
  check_w(updown, op, "updown");
  const int64_t B = x.size(0), d = x.size(1), F = gate_t.size(1);
  TORCH_CHECK(gate_t.size(0) == d, op, ": gate_t is [", gate_t.size(0), ", ", F, "], x has ", d,
              " inputs");
  TORCH_CHECK(updown.size(0) == F && updown.size(1) == 2 * d, op, ": updown must be [", F, ", ",
              2 * d, "], got [", updown.size(0), ", ", updown.size(1), "]");
  TORCH_CHECK(updown.scalar_type() == gate_t.scalar_type(), op,
              ": gate_t and updown must have one dtype");
  TORCH_CHECK(act == 0 || act == 1, op, ": act must be 0 (silu) or 1 (gelu_tanh), got ", act);
  const float* gb = opt_vec(gate_b, F, op, "gate_b");
  const float* ub = opt_vec(up_b, F, op, "up_b");
  const float* db = opt_vec(down_b, d, op, "down_b");
  const float* thr = opt_vec(thresholds, F, op, "thresholds");
  auto y = at::empty({B, d}, x.options());
  const float t = static_cast<float>(threshold);
  int64_t dropped;
  if (gate_t.scalar_type() == at::kFloat) {
    dropped = gated_impl(x.data_ptr<float>(), B, d, F, gate_t.data_ptr<float>(),
                         updown.data_ptr<float>(), gb, ub, db, t, thr, act, y.data_ptr<float>());
  } else {
    dropped = gated_impl(x.data_ptr<float>(), B, d, F, gate_t.data_ptr<BFloat16>(),
                         updown.data_ptr<BFloat16>(), gb, ub, db, t, thr, act,
                         y.data_ptr<float>());
  }
  add_counts(counts, B * F, dropped);
  return y;
}

}  // namespace

TORCH_LIBRARY(actlab_sparse, m) {
  m.def(
      "sparse_linear(Tensor x, Tensor wt, Tensor? bias, float threshold, Tensor? thresholds, "
      "Tensor? counts) -> Tensor");
  m.def(
      "gated_mlp(Tensor x, Tensor gate_t, Tensor updown, Tensor? gate_b, Tensor? up_b, "
      "Tensor? down_b, float threshold, Tensor? thresholds, int act, Tensor? counts) -> Tensor");
  m.def("isa() -> str", isa);
}

TORCH_LIBRARY_IMPL(actlab_sparse, CPU, m) {
  m.impl("sparse_linear", sparse_linear);
  m.impl("gated_mlp", gated_mlp);
}
