// Whether every value of a list of tensors is finite, in one call: the layers' per-forward
// finiteness checks (actlab/layers/_finite.py: the parameters of MoE, EvoNorm and PolyNorm, the
// output of a KAN block).
//
// For a CPU float32 / float64 tensor: the sum over its values of v * 0, in vector lanes. Every
// finite v gives +-0, so the sum is 0; an inf or NaN gives NaN (inf * 0 and NaN * 0 are NaN),
// and NaN survives every later add, so the sum is NaN. It cannot overflow, and one pass reads
// each value once (a module's parameters: no concatenated copy). Non-contiguous tensors are
// read through a contiguous copy; other dtypes take ATen's isfinite. The first tensor with a
// non-finite value ends the call.
//
// Built and loaded at run time by actlab/layers/_finite.py (actlab._ext), registered as
// torch.ops.actlab_finite.all_finite and isa.

#include <ATen/ATen.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include "native_isa.h"

namespace actlab_finite {

using at::vec::Vectorized;

template <typename T>
bool values_finite(const T* p, int64_t n) {
  using V = Vectorized<T>;
  constexpr int64_t S = V::size();
  const V zero(T(0));
  V acc(T(0));
  int64_t i = 0;
  for (; i + S <= n; i += S) acc = acc + V::loadu(p + i) * zero;
  if (i < n) acc = acc + V::loadu(p + i, n - i) * zero;  // lanes past n - i load as 0
  T lanes[S];
  acc.store(lanes);
  T sum = T(0);
  for (int64_t l = 0; l < S; ++l) sum += lanes[l];
  return sum == T(0);
}

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
      ok = values_finite(t.data_ptr<scalar_t>(), t.numel());
    });
    if (!ok) return false;
  }
  return true;
}

}  // namespace actlab_finite

TORCH_LIBRARY(actlab_finite, m) {
  m.def("all_finite(Tensor[] tensors) -> bool");
  m.def("isa() -> str", isa);
}

TORCH_LIBRARY_IMPL(actlab_finite, CPU, m) { m.impl("all_finite", actlab_finite::all_finite); }
