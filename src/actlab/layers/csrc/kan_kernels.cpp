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
// (B_j,k-1 - B_j+1,k-1) / h from its last level; the default grid 5, k 3 in closed form,
// kan_relu_s.cpp bspline_cubic), rbf exp(-((u - c_j) / w)^2), Chebyshev by
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
// AF-KAN (Ta et al. 2025, arXiv 2503.06112): kan_af.cpp; the reduction returns the two
// contractions over G and the min / max of f, never f itself, and af_kan_layer adds the tail
// (min-max scale, softmax with temperature, LayerNorm, act) and the projection. float32 tanh
// layers of at least 8,192 inputs take the contractions from per-call Chebyshev series inside
// the tail instead (kan_af_series.cpp), with the min / max still exact.
//
// Threads: at::parallel_for over nodes; a node's rows, gradients and parameter sums are
// computed by one thread in a fixed order (per-lane sums flushed into double every kFlush
// vectors), so results do not depend on the number of threads.
//
// Sources: this file (the layer plumbing shared by the ops, registration),
// kan_relu_s.cpp (ReLU-KAN, S-KAN), kan_af.cpp (AF-KAN), kan_af_series.cpp (AF-KAN's series
// path), kan_af.h (AF-KAN's phase arithmetic), kan_common.h (helpers, declarations),
// native_isa.h (isa, shared with the norm kernels).
// Built and loaded at run time by actlab/layers/_kan_native.py (actlab._ext), registered as
// torch.ops.actlab_kan.*: the basis kernels (relu_basis_t, relu_basis_t_bwd, s_basis_t,
// s_basis_t_bwd, af_reduce_t, af_series_extremes), the differentiable ops (relu_kan_layer,
// s_kan_layer, af_kan_reduce, af_kan_layer: torch::autograd::Function in C++, no Python per
// call) and isa. (The layers' finiteness check is its own small library: finite.cpp.)

#include "kan_common.h"
#include "native_isa.h"

namespace actlab_kan {

// ----------------------------------------------------------------------------- layers
// ut = (tanh of) x^T as (in, N) contiguous; x (..., in).
// A row-major (N, in) input (the usual case) is transposed in 16 x 16 tiles
// (at::vec::transpose_mxn; ATen's strided tanh / copy run element by element) with tanh on
// each tile as it is written; an input that already lies as (in, N) (the previous
// KAN layer's out_t output) is read directly.
namespace {
// dst[k] = tanh(src[k]), k < n (dst may be src): float fast_tanh, double ATen's (SLEEF) 1-ulp
// tanh.
template <typename T>
inline Vectorized<T> tanh_of(const Vectorized<T>& v) {
  if constexpr (std::is_same_v<T, float>) {
    return fast_tanh(v);
  } else {
    return v.tanh();
  }
}
template <typename T>
void tanh_into(const T* src, T* dst, int64_t n) {
  using V = Vectorized<T>;
  int64_t k = 0;
  for (; k + V::size() <= n; k += V::size()) tanh_of(V::loadu(src + k)).store(dst + k);
  if (k < n) tanh_of(V::loadu(src + k, n - k)).store(dst + k, n - k);
}
}  // namespace

at::Tensor transposed_input(const at::Tensor& x, bool tanh) {
  TORCH_CHECK(x.dim() >= 1, "kan layer: expected an input of shape (..., in)");
  auto x2 = x.dim() == 2 ? x : x.reshape({-1, x.size(-1)});  // (N, in)
  auto xt = x2.t();                       // (in, N) view
  const bool fd = x2.scalar_type() == at::kFloat || x2.scalar_type() == at::kDouble;
  if (xt.is_contiguous() || !fd) {
    if (!tanh) return xt.contiguous();  // may be x itself (in or N is 1): only ever read
    auto ut = at::empty(xt.sizes(), x.options());
    if (!fd) {
      at::tanh_out(ut, xt);  // other dtypes (half): ATen's tanh; never in place on x
      return ut;
    }
    AT_DISPATCH_FLOATING_TYPES(xt.scalar_type(), "transposed_input", [&] {
      const scalar_t* src = xt.data_ptr<scalar_t>();
      scalar_t* dst = ut.data_ptr<scalar_t>();
      at::parallel_for(0, xt.numel(), 16384, [&](int64_t k0, int64_t k1) {
        tanh_into(src + k0, dst + k0, k1 - k0);
      });
    });
    return ut;
  }
  const auto xc = x2.contiguous();
  const int64_t N = xc.size(0), nin = xc.size(1);
  auto ut = at::empty({nin, N}, x.options());
  AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "transposed_input", [&] {
    const scalar_t* src = xc.data_ptr<scalar_t>();
    scalar_t* dst = ut.data_ptr<scalar_t>();
    constexpr int64_t kRows = 64;  // rows per task: 64 x in values in, in x 64 out
    at::parallel_for(0, (N + kRows - 1) / kRows, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t n0 = b * kRows, rows = std::min(kRows, N - n0);
        for (int64_t i0 = 0; i0 < nin; i0 += 16) {  // (rows, 16) tile -> (16, rows)
          const int64_t cols = std::min<int64_t>(16, nin - i0);
          at::vec::transpose_mxn<scalar_t>(src + n0 * nin + i0, nin, dst + i0 * N + n0, N,
                                           static_cast<int>(rows), static_cast<int>(cols));
          // tanh on the tile while it is in L1 (ATen's tanh op calls MKL's, whose kernel on AMD
          // CPUs is its SSE one: ~10 % of an AF-KAN step at D 64 on a Zen 3 EPYC)
          for (int64_t i = i0; tanh && i < i0 + cols; ++i) {
            tanh_into(dst + i * N + n0, dst + i * N + n0, rows);
          }
        }
      }
    });
  });
  return ut;
}

// ----------------------------------------------------------------------------- small GEMMs
// A KAN layer's GEMMs in a function-fitting net are tiny (2 -> 109 or 109 -> 1 features over
// 100 rows: ~22,000 multiply-adds), where MKL's fixed cost per call (~3-4 us with ATen's
// checks) is most of the time: the fit slot's AF-KAN step made six such calls, ~32 us of a
// ~450 us step. Products of at most kSmallGemm multiply-adds run here instead, serially (the
// same sums in the same order at every thread count), in one of two forms, each on c as it
// lies or on the transposed problem c^T = b^T a^T, whichever costs the fewest operations:
//   rows: c[m, n..] += a[m, k] b[k, n..], vectors along n (b's rows and c's rows contiguous,
//         else packed into / written from a buffer);
//   dots: c[m, n] = sum_k a[m, k..] b[k.., n], vectors along k (a's rows and b's columns
//         contiguous, else packed): for few columns (a matrix-vector product).
namespace {

template <typename T>
struct Mat {  // a strided (rows, cols) view
  T* p;
  int64_t r, c, s0, s1;
  T& at(int64_t i, int64_t j) const { return p[i * s0 + j * s1]; }
  Mat t() const { return {p, c, r, s1, s0}; }
};

// A contiguous copy of m (rows x cols, row-major) when row_major, else (cols x rows) of its
// transpose's rows: the buffer buf holds it.
template <typename T>
Mat<T> packed(const Mat<T>& m, bool row_major, std::vector<T>& buf) {
  buf.resize(m.r * m.c);
  if (row_major) {
    for (int64_t i = 0; i < m.r; ++i) {
      for (int64_t j = 0; j < m.c; ++j) buf[i * m.c + j] = m.at(i, j);
    }
    return {buf.data(), m.r, m.c, m.c, 1};
  }
  for (int64_t j = 0; j < m.c; ++j) {
    for (int64_t i = 0; i < m.r; ++i) buf[j * m.r + i] = m.at(i, j);
  }
  return {buf.data(), m.r, m.c, 1, m.r};
}

// The operations a form costs on (c, a, b): vector multiply-adds plus the copies it needs.
template <typename T>
int64_t form_cost(bool dots, const Mat<T>& c, const Mat<T>& a, const Mat<T>& b) {
  constexpr int64_t S = Vectorized<T>::size();
  const int64_t M = c.r, N = c.c, K = a.c;
  if (dots) {
    return M * N * ((K + S - 1) / S + 4) + (a.s1 == 1 ? 0 : M * K) + (b.s0 == 1 ? 0 : K * N);
  }
  return M * K * ((N + S - 1) / S) + (b.s1 == 1 ? 0 : K * N) + (c.s1 == 1 ? 0 : 2 * M * N);
}

// c = a b + add (add: nullptr or a view broadcast to c).
template <typename T>
void gemm_rows(const Mat<T>& c, const Mat<T>& a, const Mat<T>& b, const Mat<T>* add) {
  using V = Vectorized<T>;
  constexpr int64_t S = V::size();
  std::vector<T> bbuf, cbuf;
  const Mat<T> bb = b.s1 == 1 ? b : packed(b, true, bbuf);
  cbuf.resize(c.s1 == 1 ? 0 : c.r * c.c);
  const Mat<T> cc = c.s1 == 1 ? c : Mat<T>{cbuf.data(), c.r, c.c, c.c, 1};
  const int64_t K = a.c;
  T lane[S];
  for (int64_t m = 0; m < cc.r; ++m) {
    for (int64_t n0 = 0; n0 < cc.c; n0 += S) {
      const int64_t cnt = std::min<int64_t>(S, cc.c - n0);
      V acc(T(0));
      if (add) {
        for (int64_t q = 0; q < cnt; ++q) lane[q] = add->at(m, n0 + q);
        acc = V::loadu(lane, cnt);
      }
      for (int64_t k = 0; k < K; ++k) {
        acc = at::vec::fmadd(V(a.at(m, k)), V::loadu(bb.p + k * bb.s0 + n0, cnt), acc);
      }
      acc.store(cc.p + m * cc.s0 + n0, cnt);
    }
  }
  if (c.s1 != 1) {
    for (int64_t m = 0; m < c.r; ++m) {
      for (int64_t n = 0; n < c.c; ++n) c.at(m, n) = cc.at(m, n);
    }
  }
}

template <typename T>
void gemm_dots(const Mat<T>& c, const Mat<T>& a, const Mat<T>& b, const Mat<T>* add) {
  using V = Vectorized<T>;
  constexpr int64_t S = V::size();
  std::vector<T> abuf, bbuf;
  const Mat<T> aa = a.s1 == 1 ? a : packed(a, true, abuf);
  const Mat<T> bb = b.s0 == 1 ? b : packed(b, false, bbuf);
  const int64_t K = a.c;
  for (int64_t m = 0; m < c.r; ++m) {
    for (int64_t n = 0; n < c.c; ++n) {
      V acc(T(0));
      for (int64_t k = 0; k < K; k += S) {
        const int64_t cnt = std::min<int64_t>(S, K - k);
        acc = at::vec::fmadd(V::loadu(aa.p + m * aa.s0 + k, cnt),
                             V::loadu(bb.p + n * bb.s1 + k, cnt), acc);  // tail lanes: 0 * 0
      }
      c.at(m, n) = hsum(acc) + (add ? add->at(m, n) : T(0));
    }
  }
}

template <typename T>
Mat<T> mat(const at::Tensor& t) {
  return {const_cast<T*>(t.data_ptr<T>()), t.size(0), t.size(1), t.stride(0), t.stride(1)};
}

}  // namespace

void gemm_out(const at::Tensor& c, const at::Tensor& a, const at::Tensor& b,
              const at::Tensor* add) {
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  const auto st = c.scalar_type();
  const bool small = M * N * K <= kSmallGemm && M > 0 && N > 0 && K > 0 &&
                     (st == at::kFloat || st == at::kDouble) && a.scalar_type() == st &&
                     b.scalar_type() == st && (!add || add->scalar_type() == st) &&
                     c.is_cpu() && a.is_cpu() && b.is_cpu();
  if (!small) {
    auto out = c;  // (mm_out takes a non-const reference; c is a view the caller owns)
    if (add) {
      at::addmm_out(out, *add, a, b);
    } else {
      at::mm_out(out, a, b);
    }
    return;
  }
  TORCH_CHECK(a.size(1) == b.size(0) && c.size(0) == M && c.size(1) == N,
              "kan gemm: shapes do not match");
  AT_DISPATCH_FLOATING_TYPES(st, "kan_gemm", [&] {
    const Mat<scalar_t> C = mat<scalar_t>(c), A = mat<scalar_t>(a), B = mat<scalar_t>(b);
    Mat<scalar_t> D{}, Dt{};  // the addend broadcast to c (a view of add's memory), transposed
    if (add) D = mat<scalar_t>(add->expand({M, N})), Dt = D.t();
    const Mat<scalar_t>* d = add ? &D : nullptr;
    const Mat<scalar_t>* dt = add ? &Dt : nullptr;
    // the four ways: rows / dots on c = a b or on c^T = b^T a^T
    const int64_t cost[4] = {form_cost(false, C, A, B), form_cost(false, C.t(), B.t(), A.t()),
                             form_cost(true, C, A, B), form_cost(true, C.t(), B.t(), A.t())};
    const int best = static_cast<int>(std::min_element(cost, cost + 4) - cost);
    if (best == 0) gemm_rows(C, A, B, d);
    if (best == 1) gemm_rows(C.t(), B.t(), A.t(), dt);
    if (best == 2) gemm_dots(C, A, B, d);
    if (best == 3) gemm_dots(C.t(), B.t(), A.t(), dt);
  });
}

// The op small_gemm (for tests): a b (+ add) through gemm_out, into a new (M, N) tensor laid
// out row-major, or column-major (c_t).
at::Tensor small_gemm_op(const at::Tensor& a, const at::Tensor& b,
                         const std::optional<at::Tensor>& add, bool c_t) {
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(0),
              "small_gemm: expected a (M, K) and b (K, N)");
  auto c = c_t ? at::empty({b.size(1), a.size(0)}, a.options()).t()
               : at::empty({a.size(0), b.size(1)}, a.options());
  gemm_out(c, a, b, add.has_value() && add->defined() ? &*add : nullptr);
  return c;
}

// The op kan_input (for tests): what a KAN layer's kernels read of x (..., in): (tanh of) x^T
// as (in, N), contiguous.
at::Tensor kan_input_op(const at::Tensor& x, bool tanh) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() >= 1, "kan_input: expected a CPU tensor (..., in)");
  return transposed_input(x, tanh).clone();
}

// y (..., out) = Bt^T W^T + b, computed as y^T = W Bt + b (MKL is fastest on these operands
// as they lie). y is a tensor of its own (never a view: autograd allows in-place changes of a
// custom Function's output only then). out_t: y keeps the (out, N) memory of y^T (strides 1
// along the rows, N along out; what the next KAN layer reads without a copy), else y is
// contiguous: for out >= 16 and in G <= 256 the GEMM writes it directly (Bt^T W^T, MKL's
// transposed operands), else y^T and one transposing copy (the faster pair for few outputs or
// a long in G, measured on the AVX-512 Xeon at N 100 to 4,096: e.g. out 64, in G 128, N 1,088:
// 121 vs 159 us; out 64, in G 512: 525 vs 463 us).
at::Tensor project(const at::Tensor& bt, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                   const at::Tensor& x, bool out_t) {
  TORCH_CHECK(w.dim() == 2 && w.size(1) == bt.size(0), "kan layer: weight must be (out, ",
              bt.size(0), "), got ", w.sizes());
  const int64_t out = w.size(0), N = bt.size(1);
  auto shape = x.sizes().vec();
  shape.back() = out;
  const bool has_bias = bias.has_value() && bias->defined();
  const at::Tensor col = has_bias ? bias->unsqueeze(1) : at::Tensor();  // b as (out, 1)
  const at::Tensor* add_t = has_bias ? &col : nullptr;                   // for y^T = W Bt + b
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
    gemm_out(yt, w, bt, add_t);
    return y;
  }
  auto y = at::empty(shape, bt.options());
  auto y2 = y.view({N, out});
  if (out >= 16 && bt.size(0) <= 256) {  // y = Bt^T W^T + b directly, no transposing copy
    gemm_out(y2, bt.t(), w.t(), has_bias ? &*bias : nullptr);
    return y;
  }
  if (out * N * bt.size(0) <= kSmallGemm) {  // (small: one loop of ours, no transposing copy)
    gemm_out(y2.t(), w, bt, add_t);
    return y;
  }
  at::Tensor yt = has_bias ? at::addmm(col, w, bt) : at::mm(w, bt);  // (out, N)
  y2.copy_(yt.t());
  return y;
}

// With few rows (N <= 256) the GEMM writes through the transposed view of the (out, in) result;
// with many, (bt gy)^T and a transposing copy is faster with this MKL (Xeon, N 1,088: in 512,
// out 16: 141 vs 184 us; in 126, out 64: 102 vs 118 us; N 32, in 512, out 16: 16 vs 7 us), but
// for an out that is not a multiple of 8 with an in that is: MKL's product is ~20 % slower when
// its result's rows are not whole vectors (EPYC, N 1,088: a (64, 126) result 247-263 us, a
// (126, 64) one 202-216 us; (64, 120) or (64, 128): 200), so there gy^T bt^T, no copy (AF-KAN's
// first layer at D 64, in 64, out 126: 206 vs 263 us + the copy).
at::Tensor weight_grad(const at::Tensor& bt, const at::Tensor& gy) {
  if (gy.size(0) <= 256) {
    auto gw = at::empty({gy.size(1), bt.size(0)}, bt.options());
    gemm_out(gw.t(), bt, gy);
    return gw;
  }
  if (gy.size(1) % 8 != 0 && bt.size(0) % 8 == 0) return at::mm(gy.t(), bt.t());
  return at::mm(bt, gy).t().contiguous();
}

// Per-thread scratch for an op's internal temporaries (the basis (in G, N) the forward GEMM
// reads, the backward's basis and basis gradient, AF-KAN's (in, N) tail buffers): each is dead
// when the op returns, and a fresh multi-MB allocation per call costs page faults (zeroed pages
// from the kernel: ~15% of an S-KAN step at D 64, perf). Slots are distinct buffers live at the
// same time; a buffer grows to the largest request and is kept (at most kScratchMax bytes per
// slot: larger requests are plain allocations). Never handed out of an op.
at::Tensor scratch(int slot, at::IntArrayRef shape, const at::Tensor& like) {
  TORCH_CHECK(slot >= 0 && slot < kScratchSlots, "kan scratch: slot out of range");
  int64_t n = 1;
  for (auto d : shape) n *= d;
  if (n * like.element_size() > kScratchMax) return at::empty(shape, like.options());
  thread_local std::array<at::Tensor, kScratchSlots> bufs;
  auto& b = bufs[slot];
  if (!b.defined() || b.scalar_type() != like.scalar_type() || b.numel() < n) {
    b = at::empty({std::max<int64_t>(n, 1)}, like.options());
  }
  // a view without ATen calls (narrow + view took ~0.7 us, from_blob ~0.1 us); the buffer
  // outlives it (thread-kept), and it never leaves the op
  return at::from_blob(b.data_ptr(), shape, like.options());
}

// Buffers that leave an op but stay internal to it (AF-KAN's values kept by a forward for its
// backward): recycled, since a fresh multi-MB allocation per step costs page faults (glibc
// trims the heap's free top and maps it anew: ~0.2 ms of a D 64 transformer step, more than
// half of what keeping the values saves). A buffer's storage returns its block to a small
// process-wide pool when freed; a request takes the smallest free block that fits within 2x
// its size, else a new one. Free blocks are held up to kPoolBytes in all (a deep model's
// layers each keep two buffers per step: all of them come back for the next step) and
// kPoolBlocks in number; others are freed at once.
namespace {
constexpr size_t kPoolBlocks = 256;
constexpr size_t kPoolBytes = size_t(1) << 30;
constexpr size_t kPoolHeader = 64;  // the block's size, before the 64-byte aligned data

struct KeptPool {
  std::mutex m;
  std::vector<std::pair<size_t, void*>> free;  // (bytes of data, block)
  size_t held = 0;                              // bytes of the free blocks
};
KeptPool& kept_pool() {
  static auto* p = new KeptPool();  // never destroyed: storages may be freed at exit
  return *p;
}

void kept_release(void* data) {
  void* block = static_cast<char*>(data) - kPoolHeader;
  const size_t bytes = *static_cast<size_t*>(block);
  auto& P = kept_pool();
  {
    std::lock_guard<std::mutex> g(P.m);
    if (P.free.size() < kPoolBlocks && P.held + bytes <= kPoolBytes) {
      P.free.emplace_back(bytes, block);
      P.held += bytes;
      return;
    }
  }
  std::free(block);
}
}  // namespace

// The op release_kept: frees the pool's free blocks (the ones in use come back to it later);
// returns their bytes.
int64_t release_kept() {
  auto& P = kept_pool();
  std::vector<std::pair<size_t, void*>> blocks;
  {
    std::lock_guard<std::mutex> g(P.m);
    blocks.swap(P.free);
    P.held = 0;
  }
  int64_t bytes = 0;
  for (auto& b : blocks) bytes += static_cast<int64_t>(b.first), std::free(b.second);
  return bytes;
}

at::Tensor kept_tensor(at::IntArrayRef shape, const at::Tensor& like) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  const size_t need = static_cast<size_t>(std::max<int64_t>(n, 1) * like.element_size());
  void* block = nullptr;
  auto& P = kept_pool();
  {
    std::lock_guard<std::mutex> g(P.m);
    size_t best = P.free.size();
    for (size_t k = 0; k < P.free.size(); ++k) {
      const size_t b = P.free[k].first;
      if (b >= need && b <= 2 * need && (best == P.free.size() || b < P.free[best].first)) best = k;
    }
    if (best < P.free.size()) {
      block = P.free[best].second;
      P.held -= P.free[best].first;
      P.free.erase(P.free.begin() + static_cast<std::ptrdiff_t>(best));
    }
  }
  if (!block) {
    const size_t bytes = (need + 4095) / 4096 * 4096;
    block = std::aligned_alloc(64, kPoolHeader + bytes);
    TORCH_CHECK(block, "kan: out of memory allocating ", bytes, " bytes");
    *static_cast<size_t*>(block) = bytes;
  }
  return at::from_blob(static_cast<char*>(block) + kPoolHeader, shape, kept_release,
                       like.options());
}

// The kernels have no second derivative: refuse a backward that would record one.
void no_double_backward(const char* name) {
  TORCH_CHECK(!at::GradMode::is_enabled(), name,
              ": the native kernel has no second derivative (backward with create_graph=True); "
              "build the layer with fused=False (its torch path) for that");
}

}  // namespace actlab_kan

using namespace actlab_kan;

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
      "Tensor? bias, bool tanh, bool out_t=False, float tau=0.0, Tensor? clock=None, "
      "Tensor? chosen=None, int prune_at=-1) -> Tensor");
  m.def(
      "af_reduce_t(Tensor ut, Tensor low, Tensor high, Tensor w, int act, int func, int mode) "
      "-> Tensor[]");
  m.def(
      "af_kan_reduce(Tensor x, Tensor low, Tensor high, Tensor w, int act, int func, int mode, "
      "bool tanh) -> Tensor[]");
  m.def(
      "af_kan_layer(Tensor x, Tensor low, Tensor high, Tensor w, Tensor b, Tensor temperature, "
      "Tensor weight, Tensor? norm_w, Tensor? norm_b, int act, int func, int mode, bool tanh, "
      "float eps, int knots=0, bool out_t=False) -> Tensor");
  m.def(
      "af_series_extremes(Tensor ut, Tensor low, Tensor high, int act, int func, int knots) "
      "-> Tensor[]");
  m.def(
      "af_series_info(Tensor low, Tensor high, Tensor w, int act, int func, bool backward) "
      "-> int[]");
  m.def(
      "af_softmax_info(Tensor low, Tensor high, Tensor w, int act, int func, int mode, float lo, "
      "float hi, float b, float temperature) -> bool");
  m.def("small_gemm(Tensor a, Tensor b, Tensor? add, bool c_t) -> Tensor");
  m.def("kan_input(Tensor x, bool tanh) -> Tensor");
  m.def("isa() -> str", isa);
  m.def("release_kept() -> int", release_kept);
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
  m.impl("af_kan_layer", af_kan_layer_plain);
  m.impl("af_series_extremes", af_series_extremes_op);
  m.impl("af_series_info", af_series_info_op);
  m.impl("af_softmax_info", af_softmax_info_op);
  m.impl("small_gemm", small_gemm_op);
  m.impl("kan_input", kan_input_op);
}

TORCH_LIBRARY_IMPL(actlab_kan, Autograd, m) {
  m.impl("relu_kan_layer", relu_kan_layer_autograd);
  m.impl("s_kan_layer", s_kan_layer_autograd);
  m.impl("af_kan_reduce", af_kan_reduce_autograd);
  m.impl("af_kan_layer", af_kan_layer_autograd);
}
