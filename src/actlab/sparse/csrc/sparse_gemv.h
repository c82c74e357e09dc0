// actlab sparse decode kernels: input-sparse matrix-vector products that read only the weight
// rows of surviving inputs, with the threshold fused into the same call.
//
//   sparse_linear   y[b, :] = bias + sum_{k : keep[b, k]} x[b, k] * Wt[k, :]
//                   keep[b, k] = !(|x[b, k]| <= t_k)            (t_k = thresholds[k] or t)
//
//   gated_mlp       g[b, :] = gate_b + sum_k x[b, k] * Gt[k, :]         (dense, input-major)
//                   a = act(g) (silu or gelu_tanh),  keep[b, c] = !(|a[b, c]| <= t_c)
//                   y[b, :] = down_b + sum_{c : keep[b, c]} a[b, c] * (up_b[c] + <U[c], x[b]>) * D[c]
//                   with U[c] = up_proj.weight[c, :] and D[c] = down_proj.weight[:, c] stored
//                   together as one row UD[c] = [U[c] | D[c]] (2 d values).
//
// Layouts. Wt = W^T, [in, out] contiguous: the weights of one input are one contiguous row, so
// a surviving input streams exactly one row and a skipped one is never read (x = 0 in ->
// weights untouched: the 1 / (1 - s) limit). Weights are float32 or bfloat16 (converted to
// float32 in registers); x, bias and accumulation are float32.
//
// "keep" is written !(|x| <= t) so that NaN inputs survive: NaN then reaches every output,
// as it does through torch's x * mask followed by a matmul (NaN * 0 = NaN). A small batch B
// reads the union of the rows its B inputs keep, each row once, with each batch row's own
// zeros applied.
//
// Threading: ATen's at::parallel_for (the process's own OpenMP pool; a private OpenMP
// runtime inside torch's process ran 2x slower than dense). sparse_linear at batch 1 (from
// kSplitRows survivors) sums the two halves of the survivor list separately, each into its
// own buffer, and adds them at the end, whatever the thread count: two threads then stream
// whole rows, one half each. Other threads split the outputs into contiguous slices (whole
// 32-value lines, so the vector / scalar split of each output depends on its index only).
// Every output sums the same products in the same order whatever the thread count, so
// results are bit-identical across thread counts.
// gated_mlp's second phase splits the surviving channels into fixed groups whose partial
// outputs are summed in group order: also independent of the thread count.
//
// Batch 1: 8 survivor rows are streamed together, with up to 8 output vectors (128 floats with
// AVX-512) held in registers across them (y loaded and stored once per 8 rows). While a group
// streams, the first kRampLines cache lines of each row of the next group are prefetched into
// L2: the jump to a new row is what the hardware prefetcher cannot guess, and once a row is
// under way it follows. bf16 rows also prefetch the whole next group at the same offsets (see
// prefetch_step for the measurements). Into L2, not non-temporal: the next group is up to 8
// rows ahead, more than L1 holds; a non-temporal prefetch was evicted before use and ran 0.36x
// of dense at s = 0 on 2048x8192.
//
// Vector code: at::vec::Vectorized<float> compiled for the ISA actlab._ext selects (AVX512,
// AVX2 or portable code, ACTLAB_NATIVE_ISA), loads of bfloat16 through at::vec's converter.
//
// This header holds the kernel cores (shared by the torch ops in sparse_gemv.cpp and the native
// decode step in decode_step.cpp); everything is inline or a template.

#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace actlab_sparse {

using at::BFloat16;
using Vec = at::vec::Vectorized<float>;

constexpr int64_t kVec = Vec::size();
constexpr int64_t kLine = 32;         // values per inner step: 128 B of float32, 64 B of bf16
constexpr int64_t kGroupRows = 8;     // survivors streamed together (batch 1): 8 beat 4 by 3-10
                                      // points of the limit on SmolLM2 shapes
constexpr int64_t kSerialWork = 1 << 16;  // below this many multiply-adds: one thread
// Output vectors held in registers across a group's rows: 8 x 16 floats with AVX-512's 32
// registers (8 accumulators + 8 broadcasts), 4 x 8 with AVX2's 16 (and the portable code).
constexpr int kBlockVecs = kVec >= 16 ? 8 : 4;
constexpr int64_t kRampLines = 4;  // cache lines prefetched at the start of each next row
constexpr int64_t kSplitRows = 64;  // batch 1 from this many survivors: two halves (sparse_matvec)

// ----------------------------------------------------------------------------- loads
template <typename W>
inline Vec load_w(const W* p);
template <>
inline Vec load_w<float>(const float* p) {
  return Vec::loadu(p);
}
template <>
inline Vec load_w<BFloat16>(const BFloat16* p) {
  Vec out;
  at::vec::load_fp32_from_bf16(p, out);
  return out;
}
inline float to_f(float v) { return v; }
inline float to_f(BFloat16 v) { return static_cast<float>(v); }

template <typename W>
inline void prefetch_line(const W* p) {
  __builtin_prefetch(static_cast<const void*>(p), 0, 1);  // into L2
}
// Prefetch the kLine values at p: bf16 weights only (one cache line). Measured side by side
// (each variant on its own weight copies, 1 thread, AVX-512 Xeon, shared machine): for bf16
// rows the prefetch gave 80-87% of the 2/(1-s) limit at s = 0 on 1536->576 where none gave
// 55-57%; for float32 rows it cost 3-10 points on SmolLM2's shapes, so float32 relies on the
// hardware prefetcher alone.
template <typename W>
inline void prefetch_step(const W* p) {
  if constexpr (sizeof(W) < 4) prefetch_line(p);
}
template <typename W>
constexpr bool kPrefetchAll = sizeof(W) < 4;  // batch-1 groups: see axpy_rows

// ----------------------------------------------------------------------------- survivors
// The inputs kept by any batch row: idx[0..S) ascending, xs[s * B + b] the value of row b at
// input idx[s] (0 where row b drops it). Returns the number of (row, input) entries dropped.
inline int64_t survivors(const float* x, int64_t B, int64_t K, float t, const float* thr,
                  std::vector<int64_t>& idx, std::vector<float>& xs) {
  idx.clear();
  xs.clear();
  idx.reserve(K);
  xs.reserve(K * B);
  int64_t dropped = 0;
  if (B == 1) {  // branch-free: every entry is written, the count advances where it survives
    idx.resize(K);
    xs.resize(K);
    int64_t n = 0;
    for (int64_t k = 0; k < K; ++k) {
      const float v = x[k];
      idx[n] = k;
      xs[n] = v;
      n += !(std::fabs(v) <= (thr ? thr[k] : t)) ? 1 : 0;
    }
    idx.resize(n);
    xs.resize(n);
    return K - n;
  }
  std::vector<float> col(B);
  for (int64_t k = 0; k < K; ++k) {
    const float tk = thr ? thr[k] : t;
    bool any = false;
    for (int64_t b = 0; b < B; ++b) {
      const float v = x[b * K + k];
      const bool keep = !(std::fabs(v) <= tk);
      col[b] = keep ? v : 0.f;
      any |= keep;
      dropped += keep ? 0 : 1;
    }
    if (any) {
      idx.push_back(k);
      xs.insert(xs.end(), col.begin(), col.end());
    }
  }
  return dropped;
}

// y[j : j + NB kVec] += sum_g xs[g] * r[g][j : ...]: NB output vectors held in registers across
// the G rows (one load and one store of y per G rows; G fmas per element, in g order).
template <typename W, int G, int NB, bool PF>
inline void group_block(const W* const* r, const W* const* p, int64_t np, const Vec* xs, float* y,
                        int64_t j) {
  if constexpr (PF) {  // the np rows p at the same offsets, one cache line at a time
    constexpr int64_t step = 64 / sizeof(W);
    for (int64_t g = 0; g < np; ++g) {
      for (int64_t q = 0; q < NB * kVec; q += step) prefetch_line(p[g] + j + q);
    }
  }
  Vec acc[NB];
  for (int v = 0; v < NB; ++v) acc[v] = Vec::loadu(y + j + v * kVec);
  for (int g = 0; g < G; ++g) {
    for (int v = 0; v < NB; ++v) {
      acc[v] = at::vec::fmadd(xs[g], load_w(r[g] + j + v * kVec), acc[v]);
    }
  }
  for (int v = 0; v < NB; ++v) acc[v].store(y + j + v * kVec);
}

// y[n0:n1] += sum_g xv[g] * r[g][n0:n1] for G rows streamed together: the vector part in blocks
// of kBlockVecs registers (then 4, 2, 1), the last n1 - nv < kVec elements one by one. The G
// products of an element are added in g order, one fma each; whether an element takes the
// vector or the scalar path depends on nv only (a property of the element's index: see
// axpy_rows), so the block widths never change a result.
// PF: prefetch the np rows p at the offsets being read (the next group's rows).
template <typename W, int G, bool PF = false>
inline void group_rows(const W* const* r, const W* const* p, int64_t np, const float* xv,
                       float* y, int64_t n0, int64_t nv, int64_t n1) {
  Vec xs[G];
  for (int g = 0; g < G; ++g) xs[g] = Vec(xv[g]);
  int64_t j = n0;
  for (; j + kBlockVecs * kVec <= nv; j += kBlockVecs * kVec) {
    group_block<W, G, kBlockVecs, PF>(r, p, np, xs, y, j);
  }
  if constexpr (kBlockVecs > 4) {
    if (j + 4 * kVec <= nv) {
      group_block<W, G, 4, PF>(r, p, np, xs, y, j);
      j += 4 * kVec;
    }
  }
  if (j + 2 * kVec <= nv) {
    group_block<W, G, 2, PF>(r, p, np, xs, y, j);
    j += 2 * kVec;
  }
  if (j + kVec <= nv) {
    group_block<W, G, 1, PF>(r, p, np, xs, y, j);
    j += kVec;
  }
  for (; j < n1; ++j) {
    float acc = y[j];
    for (int g = 0; g < G; ++g) acc = std::fma(xv[g], to_f(r[g][j]), acc);
    y[j] = acc;
  }
}

// Prefetch the first kRampLines cache lines of the slice [n0, n1) of each row in p, into L2.
template <typename W>
inline void prefetch_ramp(const W* const* p, int64_t rows, int64_t n0, int64_t n1) {
  constexpr int64_t step = 64 / sizeof(W);  // values per cache line
  const int64_t end = std::min(n1, n0 + kRampLines * step);
  for (int64_t g = 0; g < rows; ++g) {
    for (int64_t j = n0; j < end; j += step) prefetch_line(p[g] + j);
  }
}

// ----------------------------------------------------------------------------- axpy core
// y[b, n0:n1] += sum_s xs[s * B + b] * W[idx[s], n0:n1]   (W row stride ldw; y row stride ldy)
// n0 is a multiple of kLine or n1 is the row end: which elements take the vector or the scalar
// path depends on the element index only. The sum over s runs in order, one fma per term.
template <typename W>
void axpy_rows(const W* w, int64_t ldw, const int64_t* idx, const float* xs, int64_t S,
               int64_t B, float* y, int64_t ldy, int64_t n0, int64_t n1) {
  const int64_t nl = n0 + (n1 - n0) / kLine * kLine;  // end of full lines
  const int64_t nv = nl + (n1 - nl) / kVec * kVec;    // end of full vectors
  if (B == 1) {
    int64_t s = 0;
    const W* r[kGroupRows];
    const W* p[kGroupRows];
    if (S > 0) {  // the first group's row starts, before anything else is read
      for (int64_t g = 0; g < std::min(S, kGroupRows); ++g) p[g] = w + idx[g] * ldw;
      prefetch_ramp(p, std::min(S, kGroupRows), n0, n1);
    }
    for (; s + kGroupRows <= S; s += kGroupRows) {
      // the next group's row starts, prefetched while this group streams
      const int64_t next = std::min(kGroupRows, S - s - kGroupRows);
      for (int64_t g = 0; g < next; ++g) p[g] = w + idx[s + kGroupRows + g] * ldw;
      prefetch_ramp(p, next, n0, n1);
      for (int64_t g = 0; g < kGroupRows; ++g) r[g] = w + idx[s + g] * ldw;
      // bf16 also prefetches the next group's rows at this group's offsets (prefetch_step)
      group_rows<W, kGroupRows, kPrefetchAll<W>>(r, p, next, xs + s, y, n0, nv, n1);
    }
    for (; s < S; ++s) {  // the last < kGroupRows survivors
      r[0] = w + idx[s] * ldw;
      group_rows<W, 1>(r, r, 0, xs + s, y, n0, nv, n1);
    }
    return;
  }
  // small batch: each surviving row is read once and applied to every batch row
  for (int64_t s = 0; s < S; ++s) {
    const W* r0 = w + idx[s] * ldw;
    const W* p0 = w + idx[s + 1 < S ? s + 1 : s] * ldw;
    const float* xb = xs + s * B;
    for (int64_t j = n0; j < nl; j += kLine) {
      prefetch_step(p0 + j);
      for (int64_t v = 0; v < kLine; v += kVec) {
        const Vec wv = load_w(r0 + j + v);
        for (int64_t b = 0; b < B; ++b) {
          float* yb = y + b * ldy + j + v;
          at::vec::fmadd(Vec(xb[b]), wv, Vec::loadu(yb)).store(yb);
        }
      }
    }
    for (int64_t j = nl; j < nv; j += kVec) {
      const Vec wv = load_w(r0 + j);
      for (int64_t b = 0; b < B; ++b) {
        float* yb = y + b * ldy + j;
        at::vec::fmadd(Vec(xb[b]), wv, Vec::loadu(yb)).store(yb);
      }
    }
    for (int64_t j = nv; j < n1; ++j) {
      const float wv = to_f(r0[j]);
      for (int64_t b = 0; b < B; ++b) y[b * ldy + j] = std::fma(xb[b], wv, y[b * ldy + j]);
    }
  }
}

// y [B, N] = bias + the survivors' rows of W, in parallel over output slices (one per thread,
// multiples of kLine).
template <typename W>
void sparse_matvec(const W* w, int64_t N, const std::vector<int64_t>& idx,
                   const std::vector<float>& xs, int64_t B, const float* bias, float* y) {
  for (int64_t b = 0; b < B; ++b) {
    float* yb = y + b * N;
    if (bias) std::copy(bias, bias + N, yb);
    else std::fill(yb, yb + N, 0.f);
  }
  const int64_t S = static_cast<int64_t>(idx.size());
  if (S == 0) return;
  // Batch 1 with >= kSplitRows survivors: the survivors in two halves (whole groups), the
  // second accumulated into its own buffer and added at the end, whatever the thread count;
  // two threads then each stream whole rows of one half. Threads beyond the halves split the
  // outputs into slices (multiples of kLine, so which path an element takes depends on its
  // index only). Every output is summed in the same order for any thread count.
  const bool halves = B == 1 && S >= kSplitRows;
  const int64_t lines = (N + kLine - 1) / kLine;
  const int64_t parts = halves ? 2 : 1;
  const int64_t threads = S * N * B < kSerialWork ? 1 : at::get_num_threads();
  const int64_t slices = std::max<int64_t>(1, std::min(lines, (threads + parts - 1) / parts));
  const int64_t h = halves ? (S / 2 + kGroupRows - 1) / kGroupRows * kGroupRows : S;
  std::vector<float> second(halves ? N : 0, 0.f);
  auto task = [&](int64_t i) {
    const int64_t part = i / slices, sl = i % slices;
    const int64_t n0 = std::min(N, lines * sl / slices * kLine);
    const int64_t n1 = std::min(N, lines * (sl + 1) / slices * kLine);
    if (n1 <= n0) return;
    if (part == 0) axpy_rows(w, N, idx.data(), xs.data(), h, B, y, N, n0, n1);
    else axpy_rows(w, N, idx.data() + h, xs.data() + h, S - h, B, second.data(), N, n0, n1);
  };
  if (threads <= 1 || parts * slices == 1) {
    for (int64_t i = 0; i < parts * slices; ++i) task(i);
  } else {
    at::parallel_for(0, parts * slices, 1, [&](int64_t a, int64_t e) {
      for (int64_t i = a; i < e; ++i) task(i);
    });
  }
  if (halves) {  // y += second: one IEEE add per element on either path
    const float* sec = second.data();
    int64_t j = 0;
    for (; j + kVec <= N; j += kVec) (Vec::loadu(y + j) + Vec::loadu(sec + j)).store(y + j);
    for (; j < N; ++j) y[j] += sec[j];
  }
}

// ----------------------------------------------------------------------------- gated_mlp
inline float silu(float g) { return g / (1.f + std::exp(-g)); }
inline float gelu_tanh(float g) {
  constexpr float kAlpha = 0.7978845608028654f;  // sqrt(2 / pi)
  return 0.5f * g * (1.f + std::tanh(kAlpha * (g + 0.044715f * g * g * g)));
}

// dot(u, x) over d values, float32 accumulation in kLine-wide steps (fixed order).
template <typename W>
inline float dot_row(const W* u, const float* x, int64_t d, const W* prefetch) {
  const int64_t dl = d / kLine * kLine;
  const int64_t dv = dl + (d - dl) / kVec * kVec;
  Vec acc[kLine / kVec];
  for (auto& a : acc) a = Vec(0.f);
  for (int64_t j = 0; j < dl; j += kLine) {
    prefetch_step(prefetch + j);
    for (int64_t v = 0; v < kLine / kVec; ++v) {
      acc[v] = at::vec::fmadd(load_w(u + j + v * kVec), Vec::loadu(x + j + v * kVec), acc[v]);
    }
  }
  for (int64_t j = dl; j < dv; j += kVec) {
    acc[0] = at::vec::fmadd(load_w(u + j), Vec::loadu(x + j), acc[0]);
  }
  Vec sum = acc[0];
  for (int64_t v = 1; v < kLine / kVec; ++v) sum = sum + acc[v];
  float out = at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return a + b; }, sum);
  for (int64_t j = dv; j < d; ++j) out = std::fma(to_f(u[j]), x[j], out);
  return out;
}

// acc[0:d] += h * D[0:d], prefetching the next row's D at the same offsets.
template <typename W>
inline void axpy_row(const W* dcol, float h, float* acc, int64_t d, const W* prefetch) {
  const int64_t dl = d / kLine * kLine;
  const int64_t dv = dl + (d - dl) / kVec * kVec;
  const Vec hv(h);
  for (int64_t j = 0; j < dl; j += kLine) {
    prefetch_step(prefetch + j);
    for (int64_t v = 0; v < kLine; v += kVec) {
      at::vec::fmadd(hv, load_w(dcol + j + v), Vec::loadu(acc + j + v)).store(acc + j + v);
    }
  }
  for (int64_t j = dl; j < dv; j += kVec) {
    at::vec::fmadd(hv, load_w(dcol + j), Vec::loadu(acc + j)).store(acc + j);
  }
  for (int64_t j = dv; j < d; ++j) acc[j] = std::fma(h, to_f(dcol[j]), acc[j]);
}

constexpr int64_t kChannelGroup = 64;  // channels per partial output (phase 2)

template <typename W>
int64_t gated_impl(const float* x, int64_t B, int64_t d, int64_t F, const W* gt, const W* ud,
                   const float* gate_b, const float* up_b, const float* down_b, float t,
                   const float* thr, int64_t act, float* y) {
  // phase 1: gate, dense (every input row), input-major like sparse_linear
  std::vector<int64_t> all(d);
  for (int64_t k = 0; k < d; ++k) all[k] = k;
  std::vector<float> xs(d * B);
  for (int64_t k = 0; k < d; ++k)
    for (int64_t b = 0; b < B; ++b) xs[k * B + b] = x[b * d + k];
  std::vector<float> g(B * F);
  sparse_matvec(gt, F, all, xs, B, gate_b, g.data());
  // activation, channel survivors (any batch row), a = 0 where dropped
  std::vector<int64_t> idx;
  idx.reserve(F);
  int64_t dropped = 0;
  for (int64_t c = 0; c < F; ++c) {
    const float tc = thr ? thr[c] : t;
    bool any = false;
    for (int64_t b = 0; b < B; ++b) {
      float& v = g[b * F + c];
      v = act == 0 ? silu(v) : gelu_tanh(v);
      const bool keep = !(std::fabs(v) <= tc);
      if (!keep) v = 0.f;
      any |= keep;
      dropped += keep ? 0 : 1;
    }
    if (any) idx.push_back(c);
  }
  // phase 2: per surviving channel, up = <U[c], x>, h = a * up, partial += h * D[c]; partials
  // of fixed channel groups summed in group order (independent of the thread count)
  const int64_t S = static_cast<int64_t>(idx.size());
  const int64_t groups = (S + kChannelGroup - 1) / kChannelGroup;
  std::vector<float> part(std::max<int64_t>(groups, 1) * B * d, 0.f);
  const int64_t ld = 2 * d;
  auto run_group = [&](int64_t grp) {
    float* acc = part.data() + grp * B * d;
    const int64_t s1 = std::min(S, (grp + 1) * kChannelGroup);
    for (int64_t s = grp * kChannelGroup; s < s1; ++s) {
      const int64_t c = idx[s];
      const W* u = ud + c * ld;
      const W* next = ud + idx[s + 1 < S ? s + 1 : s] * ld;
      for (int64_t b = 0; b < B; ++b) {
        const float a = g[b * F + c];
        if (a == 0.f) continue;  // this row dropped the channel
        const float up = dot_row(u, x + b * d, d, next) + (up_b ? up_b[c] : 0.f);
        axpy_row(u + d, a * up, acc + b * d, d, next + d);  // D[c] = u + d
      }
    }
  };
  const int64_t threads = S * d * 2 * B < kSerialWork ? 1 : at::get_num_threads();
  if (threads == 1 || groups <= 1) {
    for (int64_t grp = 0; grp < groups; ++grp) run_group(grp);
  } else {
    at::parallel_for(0, groups, 1, [&](int64_t a, int64_t e) {
      for (int64_t grp = a; grp < e; ++grp) run_group(grp);
    });
  }
  for (int64_t b = 0; b < B; ++b) {
    float* yb = y + b * d;
    if (down_b) std::copy(down_b, down_b + d, yb);
    else std::fill(yb, yb + d, 0.f);
    for (int64_t grp = 0; grp < groups; ++grp) {
      const float* pb = part.data() + (grp * B + b) * d;
      int64_t j = 0;
      for (; j + kVec <= d; j += kVec) (Vec::loadu(yb + j) + Vec::loadu(pb + j)).store(yb + j);
      for (; j < d; ++j) yb[j] += pb[j];
    }
  }
  return dropped;
}

}  // namespace actlab_sparse
