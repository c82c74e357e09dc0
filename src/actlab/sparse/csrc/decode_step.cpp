// actlab native decode step: one greedy decode position through every block of a Llama-family
// (or Gemma 3) decoder in one call, the projections through the kernels of sparse_gemv.h.
//
// Per block l (h: the residual stream, float32 [d]; p: the position; x_h: head h of x):
//   h <- R_l^T h                       only rotated models (TEAL rotation="pca"): the change of
//                                      basis between blocks, h <- h Q_{l-1}^T Q_l
//   x  = g1 * rms(h)                   rms(v) = v / sqrt(mean(v^2) + eps); Gemma: g = 1 + w
//   q|k|v = W_qkv s_t(x) (+ b)         s_t(v)_i = v_i if |v_i| > t_i else 0 (t = -inf: dense)
//   Gemma: q_h <- gq * rms(q_h), k_h <- gk * rms(k_h)
//   q_h, k_h <- v cos_p + rotate_half(v) sin_p      (rotate_half(v) = [-v2, v1])
//   K[l, g, p] = k_g, V[l, g, p] = v_g (the static cache [layers, kv_heads, max_len, hd])
//   a_h = sum_j softmax_j(scale <q_h, K[l, g(h), j]>) V[l, g(h), j],  j in [lo, p],
//         lo = max(0, p - window + 1) on sliding layers, else 0;  g(h) = h / (heads / kv)  (GQA)
//   o  = W_o s_t(a)
//   Llama:  h += o;             x = g2 * rms(h);    h += mlp(x)
//   Gemma:  h += g_pa * rms(o); x = g2 * rms(h);    h += g_ff * rms(mlp(x))   (sandwich norms)
//   mlp(x) = W_down s_t(act(W_gate s_t(x)) * W_up s_t(x))       (TEAL; act silu or gelu_tanh)
//          or the fused gated kernel (CATS / CHESS: the threshold on act(gate), up/down skipped)
//
// A projection site (q|k|v, o, gate|up, down) is a list of members, each writing its slice of
// the site's output: a packed member (W^T input-major, float32 or bfloat16, threshold fused:
// sparse_matvec, which is thread-count invariant) or a dense member (the module's own float32
// weight [out, in], no copy: torch's mv, i.e. the same BLAS call as the module path). Every
// member counts the entries it saw and dropped (read back by counts()).
//
// The whole step is one call from Python: no per-projection dispatch, no temporary tensors
// (all buffers are allocated once), one parallel region per product (at::parallel_for over
// output slices, the attention over heads).

#include <ATen/core/grad_mode.h>
#include <c10/core/InferenceMode.h>
#include <torch/custom_class.h>
#include <torch/library.h>

#include <array>
#include <chrono>
#include <limits>

#include "sparse_gemv.h"

namespace actlab_sparse {
namespace {

constexpr float kNoThreshold = -std::numeric_limits<float>::infinity();

struct Proj {
  at::Tensor w;  // packed: W^T [in, out] float32 / bfloat16; dense: W [out, in] float32
  bool packed = false;
  at::Tensor bias;  // [out] float32 or undefined
  float t = kNoThreshold;
  at::Tensor thr;  // [in] float32 per-input thresholds or undefined
  int64_t in = 0, off = 0, out = 0, counter = 0;
  at::Tensor x_view, y_view;  // dense member: the site's input, its slice of the output
};

struct Gated {
  at::Tensor gate_t, updown, gb, ub, db, thr;
  float t = kNoThreshold;
  int64_t act = 0, counter = -1;
};

struct Layer {
  at::Tensor g1, g2, gq, gk, g_pa, g_ff, rot_t;  // rot_t = R^T [d, d] (rotated models only)
  at::Tensor cos, sin;                           // [max_len, hd] float32
  int64_t window = 0;
  std::array<std::vector<Proj>, 4> sites;  // q|k|v, o, gate|up, down
  Gated gated;                             // used instead of sites 2, 3 when counter >= 0
};

enum Site : int64_t { kQKV = 0, kO = 1, kGateUp = 2, kDown = 3 };

inline const float* fptr(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<float>() : nullptr;
}

inline float act_fn(float g, int64_t act) { return act == 0 ? silu(g) : gelu_tanh(g); }

// y[0:n] = g * x / sqrt(mean(x^2) + eps)  (g may be null: weightless)
inline void rms_norm(const float* x, const float* g, float* y, int64_t n, float eps) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float r = 1.f / std::sqrt(static_cast<float>(ss / n) + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = g ? g[i] * (x[i] * r) : x[i] * r;
}

inline void rope(float* v, const float* c, const float* s, int64_t hd) {
  const int64_t half = hd / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float a = v[i], b = v[i + half];
    v[i] = a * c[i] - b * s[i];
    v[i + half] = b * c[i + half] + a * s[i + half];
  }
}

inline float dot(const float* a, const float* b, int64_t n) {
  Vec acc(0.f);
  int64_t i = 0;
  for (; i + kVec <= n; i += kVec) acc = at::vec::fmadd(Vec::loadu(a + i), Vec::loadu(b + i), acc);
  float out = at::vec::vec_reduce_all<float>([](Vec& x, Vec& y) { return x + y; }, acc);
  for (; i < n; ++i) out += a[i] * b[i];
  return out;
}

class DecodeStack : public torch::CustomClassHolder {
 public:
  DecodeStack(int64_t d, int64_t heads, int64_t kv, int64_t hd, int64_t ff, double eps,
              double scale, int64_t act, bool gemma, at::Tensor kcache, at::Tensor vcache)
      : d_(d), heads_(heads), kv_(kv), hd_(hd), ff_(ff), eps_(static_cast<float>(eps)),
        scale_(static_cast<float>(scale)), act_(act), gemma_(gemma) {
    TORCH_CHECK(d > 0 && heads > 0 && kv > 0 && hd > 0 && hd % 2 == 0 && ff > 0,
                "DecodeStack: bad sizes");
    TORCH_CHECK(heads % kv == 0, "DecodeStack: heads must be a multiple of kv heads");
    TORCH_CHECK(act == 0 || act == 1, "DecodeStack: act must be 0 (silu) or 1 (gelu_tanh)");
    for (const auto* c : {&kcache, &vcache}) {
      TORCH_CHECK(c->is_cpu() && c->scalar_type() == at::kFloat && c->is_contiguous() &&
                      c->dim() == 4 && c->size(1) == kv && c->size(3) == hd,
                  "DecodeStack: the KV cache must be contiguous float32 [layers, kv, max_len, hd]");
    }
    kc_ = kcache;
    vc_ = vcache;
    max_len_ = kcache.size(2);
  }

  int64_t add_layer(at::Tensor g1, at::Tensor g2, std::optional<at::Tensor> gq,
                    std::optional<at::Tensor> gk, std::optional<at::Tensor> g_pa,
                    std::optional<at::Tensor> g_ff, std::optional<at::Tensor> rot_t,
                    at::Tensor cos, at::Tensor sin, int64_t window) {
    TORCH_CHECK(static_cast<int64_t>(layers_.size()) < kc_.size(0),
                "DecodeStack: more layers than the KV cache holds");
    Layer l;
    l.g1 = vec_of(g1, d_, "g1");
    l.g2 = vec_of(g2, d_, "g2");
    l.gq = opt_of(gq, hd_, "gq");
    l.gk = opt_of(gk, hd_, "gk");
    l.g_pa = opt_of(g_pa, d_, "g_pa");
    l.g_ff = opt_of(g_ff, d_, "g_ff");
    TORCH_CHECK(!gemma_ || (l.gq.defined() && l.gk.defined() && l.g_pa.defined() &&
                            l.g_ff.defined()),
                "DecodeStack: Gemma layers need q/k norms and sandwich norms");
    if (rot_t.has_value() && rot_t->defined()) {
      TORCH_CHECK(rot_t->scalar_type() == at::kFloat && rot_t->is_contiguous() &&
                      rot_t->size(0) == d_ && rot_t->size(1) == d_,
                  "DecodeStack: rotation must be contiguous float32 [d, d]");
      l.rot_t = *rot_t;
    }
    for (const auto* t : {&cos, &sin}) {
      TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous() && t->dim() == 2 &&
                      t->size(0) >= max_len_ && t->size(1) == hd_,
                  "DecodeStack: rotary tables must be contiguous float32 [max_len, head_dim]");
    }
    l.cos = cos;
    l.sin = sin;
    TORCH_CHECK(window >= 0, "DecodeStack: window must be >= 0 (0: full attention)");
    l.window = window;
    layers_.push_back(std::move(l));
    return static_cast<int64_t>(layers_.size()) - 1;
  }

  // One member of a site; returns its counter index.
  int64_t add_proj(int64_t layer, int64_t site, at::Tensor w, bool packed,
                   std::optional<at::Tensor> bias, double t, std::optional<at::Tensor> thr,
                   int64_t off) {
    Layer& l = layer_at(layer);
    TORCH_CHECK(site >= 0 && site < 4, "DecodeStack: site must be 0..3");
    Proj p;
    p.in = site_in(site);
    TORCH_CHECK(w.is_cpu() && w.dim() == 2 && w.is_contiguous(),
                "DecodeStack: weights must be contiguous 2-D CPU tensors");
    if (packed) {
      TORCH_CHECK(w.scalar_type() == at::kFloat || w.scalar_type() == at::kBFloat16,
                  "DecodeStack: packed weights must be float32 or bfloat16");
      TORCH_CHECK(w.size(0) == p.in, "DecodeStack: packed weight has ", w.size(0),
                  " input rows, the site reads ", p.in);
      p.out = w.size(1);
    } else {
      TORCH_CHECK(w.scalar_type() == at::kFloat, "DecodeStack: dense weights must be float32");
      TORCH_CHECK(w.size(1) == p.in, "DecodeStack: dense weight has ", w.size(1),
                  " inputs, the site reads ", p.in);
      p.out = w.size(0);
    }
    TORCH_CHECK(off >= 0 && off + p.out <= site_out(site), "DecodeStack: member [", off, ", ",
                off + p.out, ") outside the site's ", site_out(site), " outputs");
    p.w = w;
    p.packed = packed;
    p.bias = opt_of(bias, p.out, "bias");
    p.t = static_cast<float>(t);
    p.thr = opt_of(thr, p.in, "thresholds");
    TORCH_CHECK(packed || (!p.thr.defined() && !(p.t > kNoThreshold)),
                "DecodeStack: a dense member cannot have thresholds");
    p.off = off;
    p.counter = new_counter();
    l.sites[site].push_back(p);
    return p.counter;
  }

  int64_t set_gated(int64_t layer, at::Tensor gate_t, at::Tensor updown,
                    std::optional<at::Tensor> gb, std::optional<at::Tensor> ub,
                    std::optional<at::Tensor> db, double t, std::optional<at::Tensor> thr,
                    int64_t act) {
    Layer& l = layer_at(layer);
    TORCH_CHECK(gate_t.dim() == 2 && gate_t.size(0) == d_ && gate_t.size(1) == ff_ &&
                    gate_t.is_contiguous(),
                "DecodeStack: gate_t must be contiguous [d, ff]");
    TORCH_CHECK(updown.dim() == 2 && updown.size(0) == ff_ && updown.size(1) == 2 * d_ &&
                    updown.is_contiguous() && updown.scalar_type() == gate_t.scalar_type(),
                "DecodeStack: updown must be contiguous [ff, 2 d] of gate_t's dtype");
    TORCH_CHECK(gate_t.scalar_type() == at::kFloat || gate_t.scalar_type() == at::kBFloat16,
                "DecodeStack: gated weights must be float32 or bfloat16");
    TORCH_CHECK(act == 0 || act == 1, "DecodeStack: act must be 0 or 1");
    Gated& g = l.gated;
    g.gate_t = gate_t;
    g.updown = updown;
    g.gb = opt_of(gb, ff_, "gate bias");
    g.ub = opt_of(ub, ff_, "up bias");
    g.db = opt_of(db, d_, "down bias");
    g.thr = opt_of(thr, ff_, "thresholds");
    g.t = static_cast<float>(t);
    g.act = act;
    g.counter = new_counter();
    return g.counter;
  }

  // Check that every site's members tile its output; allocate the buffers.
  void finish() {
    c10::InferenceMode guard;
    auto f = at::TensorOptions().dtype(at::kFloat);
    h_ = at::empty({d_}, f);
    x_ = at::empty({d_}, f);
    qkv_ = at::empty({site_out(kQKV)}, f);
    att_ = at::empty({heads_ * hd_}, f);
    o_ = at::empty({d_}, f);
    gu_ = at::empty({2 * ff_}, f);
    a_ = at::empty({ff_}, f);
    m_ = at::empty({d_}, f);
    tmp_ = at::empty({d_}, f);
    scores_.assign(heads_ * max_len_, 0.f);
    const at::Tensor* ins[4] = {&x_, &att_, &x_, &a_};
    const at::Tensor* outs[4] = {&qkv_, &o_, &gu_, &m_};
    for (size_t li = 0; li < layers_.size(); ++li) {
      Layer& l = layers_[li];
      for (int64_t s = 0; s < 4; ++s) {
        auto& ms = l.sites[s];
        const bool gated = l.gated.counter >= 0 && s >= kGateUp;
        TORCH_CHECK(!gated || ms.empty(), "DecodeStack: layer ", li,
                    " has both a gated MLP and gate/up/down members");
        if (gated) continue;
        std::vector<std::pair<int64_t, int64_t>> spans;
        for (auto& p : ms) {
          spans.emplace_back(p.off, p.off + p.out);
          if (!p.packed) {
            p.x_view = *ins[s];
            p.y_view = outs[s]->narrow(0, p.off, p.out);
          }
        }
        std::sort(spans.begin(), spans.end());
        int64_t at = 0;
        for (auto& sp : spans) {
          TORCH_CHECK(sp.first == at, "DecodeStack: layer ", li, " site ", s,
                      " members do not tile its outputs");
          at = sp.second;
        }
        TORCH_CHECK(at == site_out(s), "DecodeStack: layer ", li, " site ", s, " covers ", at,
                    " of ", site_out(s), " outputs");
      }
    }
    ready_ = true;
  }

  // h [d] (float32, the embedding of the token at position pos) -> h after every block.
  at::Tensor step(at::Tensor h, int64_t pos) {
    TORCH_CHECK(ready_, "DecodeStack: call finish() first");
    TORCH_CHECK(h.is_cpu() && h.scalar_type() == at::kFloat && h.numel() == d_,
                "DecodeStack.step: h must be float32 with ", d_, " values");
    TORCH_CHECK(pos >= 0 && pos < max_len_, "DecodeStack.step: position ", pos,
                " outside the cache of ", max_len_);
    c10::InferenceMode guard;
    const at::Tensor hc = h.contiguous();
    std::copy(hc.data_ptr<float>(), hc.data_ptr<float>() + d_, h_.data_ptr<float>());
    for (size_t li = 0; li < layers_.size(); ++li) block(static_cast<int64_t>(li), pos);
    return h_.clone();
  }

  // [counters, 2]: entries seen and dropped per member (in add_proj / set_gated order).
  at::Tensor counts() const {
    auto out = at::empty({static_cast<int64_t>(counts_.size()), 2}, at::kLong);
    auto* p = out.data_ptr<int64_t>();
    for (size_t i = 0; i < counts_.size(); ++i) {
      p[2 * i] = counts_[i][0];
      p[2 * i + 1] = counts_[i][1];
    }
    return out;
  }
  void reset_counts() {
    for (auto& c : counts_) c = {0, 0};
  }

  // Seconds spent per phase since the last reset (only while timing is on): rotation, norms
  // and residual adds, q|k|v, attention (q/k norms, RoPE, cache, softmax), o, MLP.
  void set_timing(bool on) { timing_ = on; }
  at::Tensor timings() const {
    auto out = at::empty({kPhases}, at::kDouble);
    std::copy(seconds_.begin(), seconds_.end(), out.data_ptr<double>());
    return out;
  }
  void reset_timings() { seconds_.fill(0.0); }

 private:
  using Clock = std::chrono::steady_clock;
  // Adds the time since the last mark to phase `phase` (when timing is on).
  void mark(int phase) {
    if (!timing_) return;
    const auto now = Clock::now();
    seconds_[phase] += std::chrono::duration<double>(now - last_).count();
    last_ = now;
  }

  void block(int64_t li, int64_t pos) {
    Layer& l = layers_[li];
    float* h = h_.data_ptr<float>();
    float* x = x_.data_ptr<float>();
    if (timing_) last_ = Clock::now();
    if (l.rot_t.defined()) {  // h <- R^T h  (= h R as a row)
      at::mv_out(tmp_, l.rot_t, h_);
      std::copy(tmp_.data_ptr<float>(), tmp_.data_ptr<float>() + d_, h);
      mark(kRotation);
    }
    rms_norm(h, fptr(l.g1), x, d_, eps_);
    mark(kNorms);
    run_site(l.sites[kQKV], x, qkv_.data_ptr<float>());
    mark(kQKVTime);
    attention(l, li, pos);
    mark(kAttention);
    run_site(l.sites[kO], att_.data_ptr<float>(), o_.data_ptr<float>());
    mark(kOTime);
    float* o = o_.data_ptr<float>();
    if (gemma_) rms_norm(o, fptr(l.g_pa), o, d_, eps_);
    for (int64_t i = 0; i < d_; ++i) h[i] += o[i];
    rms_norm(h, fptr(l.g2), x, d_, eps_);
    mark(kNorms);
    float* m = m_.data_ptr<float>();
    if (l.gated.counter >= 0) {
      const Gated& g = l.gated;
      int64_t dropped;
      if (g.gate_t.scalar_type() == at::kFloat) {
        dropped = gated_impl(x, 1, d_, ff_, g.gate_t.data_ptr<float>(),
                             g.updown.data_ptr<float>(), fptr(g.gb), fptr(g.ub), fptr(g.db), g.t,
                             fptr(g.thr), g.act, m);
      } else {
        dropped = gated_impl(x, 1, d_, ff_, g.gate_t.data_ptr<BFloat16>(),
                             g.updown.data_ptr<BFloat16>(), fptr(g.gb), fptr(g.ub), fptr(g.db),
                             g.t, fptr(g.thr), g.act, m);
      }
      counts_[g.counter][0] += ff_;
      counts_[g.counter][1] += dropped;
    } else {
      float* gu = gu_.data_ptr<float>();
      float* a = a_.data_ptr<float>();
      run_site(l.sites[kGateUp], x, gu);
      for (int64_t c = 0; c < ff_; ++c) a[c] = act_fn(gu[c], act_) * gu[ff_ + c];
      run_site(l.sites[kDown], a, m);
    }
    mark(kMLP);
    if (gemma_) rms_norm(m, fptr(l.g_ff), m, d_, eps_);
    for (int64_t i = 0; i < d_; ++i) h[i] += m[i];
    mark(kNorms);
  }

  void run_site(std::vector<Proj>& ms, const float* in, float* out) {
    for (auto& p : ms) {
      if (!p.packed) {
        if (p.bias.defined()) {
          at::addmv_out(p.y_view, p.bias, p.w, p.x_view);
        } else {
          at::mv_out(p.y_view, p.w, p.x_view);
        }
        counts_[p.counter][0] += p.in;
        continue;
      }
      const int64_t dropped = survivors(in, 1, p.in, p.t, fptr(p.thr), idx_, xs_);
      if (p.w.scalar_type() == at::kFloat) {
        sparse_matvec(p.w.data_ptr<float>(), p.out, idx_, xs_, 1, fptr(p.bias), out + p.off);
      } else {
        sparse_matvec(p.w.data_ptr<BFloat16>(), p.out, idx_, xs_, 1, fptr(p.bias), out + p.off);
      }
      counts_[p.counter][0] += p.in;
      counts_[p.counter][1] += dropped;
    }
  }

  void attention(Layer& l, int64_t li, int64_t pos) {
    float* q = qkv_.data_ptr<float>();
    float* k = q + heads_ * hd_;
    float* v = k + kv_ * hd_;
    if (gemma_) {
      for (int64_t hh = 0; hh < heads_; ++hh) rms_norm(q + hh * hd_, fptr(l.gq), q + hh * hd_, hd_, eps_);
      for (int64_t g = 0; g < kv_; ++g) rms_norm(k + g * hd_, fptr(l.gk), k + g * hd_, hd_, eps_);
    }
    const float* c = l.cos.data_ptr<float>() + pos * hd_;
    const float* s = l.sin.data_ptr<float>() + pos * hd_;
    for (int64_t hh = 0; hh < heads_; ++hh) rope(q + hh * hd_, c, s, hd_);
    float* kc = kc_.data_ptr<float>() + li * kv_ * max_len_ * hd_;
    float* vc = vc_.data_ptr<float>() + li * kv_ * max_len_ * hd_;
    for (int64_t g = 0; g < kv_; ++g) {
      rope(k + g * hd_, c, s, hd_);
      std::copy(k + g * hd_, k + (g + 1) * hd_, kc + (g * max_len_ + pos) * hd_);
      std::copy(v + g * hd_, v + (g + 1) * hd_, vc + (g * max_len_ + pos) * hd_);
    }
    const int64_t lo = l.window > 0 ? std::max<int64_t>(0, pos - l.window + 1) : 0;
    const int64_t n = pos + 1 - lo;
    const int64_t group = heads_ / kv_;
    float* att = att_.data_ptr<float>();
    auto head = [&](int64_t hh) {
      const int64_t g = hh / group;
      const float* qh = q + hh * hd_;
      const float* kg = kc + (g * max_len_ + lo) * hd_;
      const float* vg = vc + (g * max_len_ + lo) * hd_;
      float* sc = scores_.data() + hh * max_len_;
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < n; ++j) {
        sc[j] = dot(qh, kg + j * hd_, hd_) * scale_;
        mx = std::max(mx, sc[j]);
      }
      float sum = 0.f;
      for (int64_t j = 0; j < n; ++j) {
        sc[j] = std::exp(sc[j] - mx);
        sum += sc[j];
      }
      float* out = att + hh * hd_;
      std::fill(out, out + hd_, 0.f);
      const float inv = 1.f / sum;
      for (int64_t j = 0; j < n; ++j) {
        const Vec pj(sc[j] * inv);
        const float* vj = vg + j * hd_;
        int64_t i = 0;
        for (; i + kVec <= hd_; i += kVec) {
          at::vec::fmadd(pj, Vec::loadu(vj + i), Vec::loadu(out + i)).store(out + i);
        }
        for (; i < hd_; ++i) out[i] += sc[j] * inv * vj[i];
      }
    };
    if (heads_ * n * hd_ * 2 < kSerialWork || at::get_num_threads() == 1) {
      for (int64_t hh = 0; hh < heads_; ++hh) head(hh);
    } else {
      at::parallel_for(0, heads_, 1, [&](int64_t a, int64_t e) {
        for (int64_t hh = a; hh < e; ++hh) head(hh);
      });
    }
  }

  Layer& layer_at(int64_t i) {
    TORCH_CHECK(i >= 0 && i < static_cast<int64_t>(layers_.size()), "DecodeStack: no layer ", i);
    TORCH_CHECK(!ready_, "DecodeStack: finished; build a new one to change it");
    return layers_[i];
  }
  int64_t site_in(int64_t s) const { return s == kO ? heads_ * hd_ : s == kDown ? ff_ : d_; }
  int64_t site_out(int64_t s) const {
    return s == kQKV ? (heads_ + 2 * kv_) * hd_ : s == kGateUp ? 2 * ff_ : d_;
  }
  int64_t new_counter() {
    counts_.push_back({0, 0});
    return static_cast<int64_t>(counts_.size()) - 1;
  }
  static at::Tensor vec_of(const at::Tensor& t, int64_t n, const char* what) {
    TORCH_CHECK(t.is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous() &&
                    t.numel() == n,
                "DecodeStack: ", what, " must be a contiguous float32 CPU tensor of ", n,
                " values");
    return t;
  }
  static at::Tensor opt_of(const std::optional<at::Tensor>& t, int64_t n, const char* what) {
    if (!t.has_value() || !t->defined()) return at::Tensor();
    return vec_of(*t, n, what);
  }

  enum Phase : int { kRotation = 0, kNorms, kQKVTime, kAttention, kOTime, kMLP, kPhases };
  bool timing_ = false;
  std::array<double, kPhases> seconds_{};
  Clock::time_point last_;
  int64_t d_, heads_, kv_, hd_, ff_;
  float eps_, scale_;
  int64_t act_;
  bool gemma_;
  int64_t max_len_ = 0;
  bool ready_ = false;
  at::Tensor kc_, vc_, h_, x_, qkv_, att_, o_, gu_, a_, m_, tmp_;
  std::vector<Layer> layers_;
  std::vector<std::array<int64_t, 2>> counts_;
  std::vector<float> scores_;
  std::vector<int64_t> idx_;
  std::vector<float> xs_;
};

}  // namespace
}  // namespace actlab_sparse

TORCH_LIBRARY_FRAGMENT(actlab_sparse, m) {
  using actlab_sparse::DecodeStack;
  m.class_<DecodeStack>("DecodeStack")
      .def(torch::init<int64_t, int64_t, int64_t, int64_t, int64_t, double, double, int64_t, bool,
                       at::Tensor, at::Tensor>())
      .def("add_layer", &DecodeStack::add_layer)
      .def("add_proj", &DecodeStack::add_proj)
      .def("set_gated", &DecodeStack::set_gated)
      .def("finish", &DecodeStack::finish)
      .def("step", &DecodeStack::step)
      .def("counts", &DecodeStack::counts)
      .def("reset_counts", &DecodeStack::reset_counts)
      .def("set_timing", &DecodeStack::set_timing)
      .def("timings", &DecodeStack::timings)
      .def("reset_timings", &DecodeStack::reset_timings);
}
